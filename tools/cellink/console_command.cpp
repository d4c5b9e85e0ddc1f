// `cellink console serve`: run the console service in the foreground until
// SIGTERM/SIGINT. The attach side (`cellink console CELL`) is in
// console_attach.cpp.
//
// With --config, each [[console]] gets its virtio-console back end
// (VirtioConsoleBackend), attached to the console's link as the link's other
// cell. Consoles named only with --cell have no link, so they have no back
// end. --loopback is a TEST MODE that replaces every back end with an echo of
// the input, so the host side can be exercised without a guest.
#include <algorithm>
#include <iostream>
#include <memory>
#include <vector>

#include <fmt/format.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "cellink/hypervisor/console_service.hpp"
#include "cellink/hypervisor/virtio_console_backend.hpp"
#include "commands.hpp"

namespace cellink::cli {
namespace {

std::optional<std::uint64_t> size_option(const std::string& name, const std::string& text) {
  std::uint64_t bytes = 0;
  if (!hypervisor::parse_size(text, bytes) || bytes == 0) {
    std::cerr << fmt::format(
        "cellink console serve: {} '{}' is not a size; use e.g. \"64KiB\" or \"1MiB\"\n", name,
        text);
    return std::nullopt;
  }
  return bytes;
}

// TEST MODE back end: every byte typed comes straight back as output.
void attach_loopback(hypervisor::Console& console) {
  console.on_input([&console] {
    std::byte bytes[4096];
    while (const std::size_t taken = console.take_input(bytes)) {
      console.guest_output(std::span(bytes, taken));
    }
  });
  console.set_state("loopback (test mode): no guest; input is echoed as output");
}

}  // namespace

int run_console_serve(const ConsoleServeArgs& args) {
  spdlog::set_default_logger(spdlog::stderr_color_mt("cellink-console"));
  spdlog::set_level(spdlog::level::from_str(args.log_level));
  spdlog::set_pattern("%Y-%m-%d %H:%M:%S.%e cellink-console[%P] %l: %v");

  hypervisor::ConsoleServiceOptions options;
  options.runtime_dir = args.runtime_dir;
  if (args.log_dir) options.log_dir = *args.log_dir;
  std::vector<hypervisor::ConsoleConfig> linked;  // the consoles that get a virtio back end
  if (args.config) {
    std::optional<hypervisor::Config> config = load_config_or_report(args.config);
    if (!config) return 1;
    for (const hypervisor::ConsoleConfig& console : config->consoles) {
      options.consoles.push_back(hypervisor::ConsoleSettings{
          console.cell, console.log_size, console.log_files, console.scrollback});
    }
    linked = config->consoles;
  }
  const auto log_size = size_option("--log-size", args.log_size);
  const auto scrollback = size_option("--scrollback", args.scrollback);
  const auto viewer_queue = size_option("--viewer-queue", args.viewer_queue);
  if (!log_size || !scrollback || !viewer_queue) return 1;
  for (const std::string& cell : args.cells) {
    options.consoles.push_back(
        hypervisor::ConsoleSettings{cell, *log_size, args.log_files, *scrollback});
  }
  options.viewer_queue_limit = *viewer_queue;
  if (options.consoles.empty()) {
    std::cerr << "cellink console serve: no console to serve; add a [[console]] table to the "
                 "configuration (docs/config.md) and pass --config FILE, or name cells with "
                 "--cell NAME\n";
    return 1;
  }
  try {
    hypervisor::ConsoleService service(std::move(options));
    std::vector<std::unique_ptr<hypervisor::VirtioConsoleBackend>> backends;
    for (const std::string& cell : service.cells()) {
      hypervisor::Console& console = service.console(cell);
      const auto found = std::find_if(linked.begin(), linked.end(),
                                      [&cell](const auto& entry) { return entry.cell == cell; });
      if (args.loopback) {
        attach_loopback(console);
      } else if (found != linked.end()) {
        backends.push_back(std::make_unique<hypervisor::VirtioConsoleBackend>(
            service.loop(), console,
            hypervisor::VirtioConsoleBackendOptions{args.runtime_dir, found->link,
                                                    found->backend_cell}));
        spdlog::info("console of cell '{}': virtio back end on link '{}' as cell '{}'", cell,
                     found->link, found->backend_cell);
      } else {
        console.set_state("no back end: the cell has no [[console]] link in the configuration");
      }
    }
    service.run();
    // The back ends say goodbye (state 0) while the loop still exists.
    backends.clear();
  } catch (const std::exception& error) {
    spdlog::error("{}", error.what());
    return 1;
  }
  return 0;
}

}  // namespace cellink::cli
