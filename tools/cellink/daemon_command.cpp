// `cellink daemon`: run the daemon in the foreground until SIGTERM/SIGINT.
#include <iostream>

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "cellink/hypervisor/daemon.hpp"
#include "commands.hpp"

namespace cellink::cli {

int run_daemon(const DaemonArgs& args) {
  // Logs go to stderr (coloured only on a terminal); stdout stays clean.
  spdlog::set_default_logger(spdlog::stderr_color_mt("cellink-daemon"));
  spdlog::set_level(spdlog::level::from_str(args.log_level));
  spdlog::set_pattern("%Y-%m-%d %H:%M:%S.%e cellink-daemon[%P] %l: %v");
  std::optional<hypervisor::Config> config = load_config_or_report(args.config);
  if (!config) return 1;
  hypervisor::DaemonOptions options;
  options.config = std::move(*config);
  options.runtime_dir = args.runtime_dir;
  options.reattach_grace = std::chrono::milliseconds(args.reattach_grace_ms);
  try {
    hypervisor::Daemon daemon(std::move(options));
    daemon.run();
  } catch (const std::exception& error) {
    spdlog::error("{}", error.what());
    return 1;
  }
  return 0;
}

}  // namespace cellink::cli
