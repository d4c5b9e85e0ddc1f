// The `cellink` subcommands. Each returns the process exit status.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "cellink/hypervisor/config.hpp"

namespace cellink::cli {

struct DaemonArgs {
  std::optional<std::filesystem::path> config;
  std::filesystem::path runtime_dir;
  int reattach_grace_ms = 3000;
  std::string log_level = "info";
};

int run_daemon(const DaemonArgs& args);
int run_check(const std::filesystem::path& config);
int run_status(const std::filesystem::path& runtime_dir, bool json);
// With `inmate`, the words start with the machine an inmate runs on
// (inmate_machine_words()).
int run_qemu_args(const std::string& cell, const std::optional<std::filesystem::path>& config,
                  const std::filesystem::path& runtime_dir, const std::string& link,
                  const std::optional<std::filesystem::path>& inmate = {});
// The QEMU words of the machine a bare-metal inmate runs on: TCG, q35, 32 MiB,
// the serial console on stdio, no reboot, isa-debug-exit, and the ELF as a
// PVH kernel. The ivshmem devices come after them.
std::string inmate_machine_words(const std::filesystem::path& inmate);

// The options of `cellink demo`.
struct DemoArgs {
  std::optional<std::filesystem::path> runtime_dir;  // default: a private one
  bool guest = true;                                 // false: --no-guest, skip act 4
  bool inmate = true;                                // false: --no-inmate, skip act 5
  std::optional<std::filesystem::path> guest_image;  // default: CELLINK_GUEST_IMAGE_DIR
};

int run_demo(const DemoArgs& args);
// Replaces this process with cellink_bench and `arguments`; returns only on
// failure.
int run_bench(const std::vector<std::string>& arguments);

// `cellink console CELL`: attach to a cell's console (console_attach.cpp).
struct ConsoleAttachArgs {
  std::string cell;
  std::filesystem::path runtime_dir;
  bool read_only = false;
  std::string escape = "^]";   // detach key: "^X" or one character; "none" disables
  bool escape_given = false;   // --escape on the command line: honoured on a pipe too
  double timeout_seconds = 0;  // 0: none
  int drain_ms = 500;          // after stdin's EOF: quiet time before exiting
};
int run_console_attach(const ConsoleAttachArgs& args);

// `cellink console serve`: the console service (console_command.cpp).
struct ConsoleServeArgs {
  std::optional<std::filesystem::path> config;
  std::filesystem::path runtime_dir;
  std::optional<std::filesystem::path> log_dir;
  std::vector<std::string> cells;  // --cell, for consoles not in a config
  std::string log_size = "1MiB";   // for --cell consoles
  std::uint32_t log_files = 3;
  std::string scrollback = "64KiB";
  std::string viewer_queue = "1MiB";
  bool loopback = false;  // TEST MODE: echo input as output, no guest
  std::string log_level = "info";
};
int run_console_serve(const ConsoleServeArgs& args);

// Loads --config FILE, or the embedded default; prints every error to
// stderr and returns nullopt when the configuration is invalid.
std::optional<hypervisor::Config> load_config_or_report(
    const std::optional<std::filesystem::path>& path);

// Asks the daemon on `runtime_dir` for its status JSON. Returns nullopt and
// fills `error` when no daemon answers.
std::optional<std::string> query_status(const std::filesystem::path& runtime_dir,
                                        std::string& error);

}  // namespace cellink::cli
