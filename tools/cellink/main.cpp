// cellink: the command line. One subcommand per job; see `cellink --help`.
#include <iostream>

#include <CLI/CLI.hpp>

#include "cellink/hypervisor/daemon.hpp"
#include "commands.hpp"

namespace {

int run_cli(int argc, char** argv) {
  using cellink::hypervisor::default_runtime_dir;
  CLI::App app{"cellink: inter-cell communication over ivshmem shared memory"};
  app.require_subcommand(1);
  std::filesystem::path runtime_dir = default_runtime_dir();
  const std::string runtime_help =
      "Runtime directory of the daemon (default: " + runtime_dir.string() + ")";

  cellink::cli::DaemonArgs daemon_args;
  daemon_args.runtime_dir = runtime_dir;
  CLI::App* daemon = app.add_subcommand(
      "daemon",
      "Play the hypervisor: own each link's memory and serve QEMU's ivshmem-server "
      "protocol to cells");
  std::string daemon_config;
  daemon->add_option("--config", daemon_config, "Configuration file (default: embedded)")
      ->check(CLI::ExistingFile);
  daemon->add_option("--runtime-dir", daemon_args.runtime_dir, runtime_help);
  daemon
      ->add_option("--reattach-grace", daemon_args.reattach_grace_ms,
                   "Milliseconds surviving peers get to re-attach after a restart")
      ->check(CLI::Range(0, 600000));
  daemon->add_option("--log-level", daemon_args.log_level, "trace, debug, info, warn or error")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error"}));

  CLI::App* check = app.add_subcommand(
      "check", "Validate a configuration and print each link's layout (exit 1 on errors)");
  std::filesystem::path check_file;
  check->add_option("FILE", check_file, "Configuration file")->required();
  check->add_option("--runtime-dir", runtime_dir, runtime_help);

  CLI::App* status =
      app.add_subcommand("status", "Show links, peers, states and doorbells, and the consoles");
  bool status_json = false;
  status->add_flag("--json", status_json, "Print the daemon's JSON document");
  status->add_option("--runtime-dir", runtime_dir, runtime_help);

  CLI::App* qemu_args =
      app.add_subcommand("qemu-args", "Print the QEMU options that make a VM this cell");
  std::string qemu_cell;
  std::string qemu_config;
  std::string qemu_link;
  qemu_args->add_option("CELL", qemu_cell, "Cell name")->required();
  qemu_args->add_option("--config", qemu_config, "Configuration file (default: embedded)")
      ->check(CLI::ExistingFile);
  qemu_args->add_option("--link", qemu_link, "Only this link (default: every link of the cell)");
  qemu_args->add_option("--runtime-dir", runtime_dir, runtime_help);
  std::string qemu_inmate;
  qemu_args
      ->add_option("--inmate", qemu_inmate,
                   "A bare-metal inmate ELF (PVH): print the whole machine for it, not only the "
                   "ivshmem devices (docs/inmates.md)")
      ->check(CLI::ExistingFile);

  CLI::App* demo = app.add_subcommand(
      "demo",
      "Start a private daemon and show doorbells, states, channels, the example programs, "
      "a Linux guest and a bare-metal inmate under QEMU");
  std::string demo_dir;
  std::string demo_guest_image;
  bool demo_no_guest = false;
  bool demo_no_inmate = false;
  demo->add_option("--runtime-dir", demo_dir, "Runtime directory (default: a private one)");
  demo->add_flag("--no-guest", demo_no_guest, "Skip the Linux guest (QEMU) act");
  demo->add_flag("--no-inmate", demo_no_inmate, "Skip the bare-metal inmate (QEMU) act");
  demo->add_option("--guest-image", demo_guest_image,
                   "Directory with vmlinuz and initramfs.cpio.gz (default: " CELLINK_GUEST_IMAGE_DIR
                   ")")
      ->check(CLI::ExistingDirectory);

  CLI::App* bench = app.add_subcommand(
      "bench",
      "Latency and throughput of every cellink transport against the physical limit and "
      "the usual alternatives (runs cellink_bench with the same arguments)");
  bench->prefix_command();  // everything after `bench` goes to cellink_bench
  bench->footer(
      "Options (passed to cellink_bench):\n"
      "  --quick        under a minute, coarse figures (default run: a few minutes)\n"
      "  --smoke        tiny counts: proves every row runs\n"
      "  --json         JSON on stdout (docs/bench-json.md); table and progress on stderr\n"
      "  --report DIR   Markdown and HTML report with gnuplot plots in DIR\n"
      "  --cpus A,B     the two CPUs to pin to\n"
      "  --only ID,...  only these transports (e.g. cellink-channel,pipe)");

  cellink::cli::ConsoleAttachArgs console_args;
  console_args.runtime_dir = runtime_dir;
  CLI::App* console = app.add_subcommand(
      "console",
      "Attach to a cell's console (scrollback, then live output; one viewer may type); "
      "the escape key, Ctrl-] by default, detaches");
  console->add_option("CELL", console_args.cell, "The cell whose console to attach to");
  console->add_option("--runtime-dir", console_args.runtime_dir, runtime_help);
  console->add_flag("--read-only", console_args.read_only,
                    "Watch only; never type (another viewer may hold write access)");
  console
      ->add_option("--escape", console_args.escape,
                   "Detach key: \"^]\" (Ctrl-], the default), \"^A\"..., one character, or "
                   "\"none\"; on a pipe only when given")
      ->each([&console_args](const std::string&) { console_args.escape_given = true; });
  console->add_option("--timeout", console_args.timeout_seconds,
                      "Detach after this many seconds (default: never)");
  console->add_option("--drain", console_args.drain_ms,
                      "With a piped stdin: after its end, exit once output was quiet this many "
                      "milliseconds (default 500)");

  cellink::cli::ConsoleServeArgs serve_args;
  serve_args.runtime_dir = runtime_dir;
  CLI::App* serve = console->add_subcommand(
      "serve",
      "Run the console service: per console cell a PTY, a log with rotation, a scrollback "
      "and the viewer socket (the virtio back end is not connected yet)");
  std::string serve_config;
  std::string serve_log_dir;
  serve->add_option("--config", serve_config, "Configuration file with [[console]] tables")
      ->check(CLI::ExistingFile);
  serve->add_option("--runtime-dir", serve_args.runtime_dir, runtime_help);
  serve->add_option("--log-dir", serve_log_dir,
                    "Directory of the console logs (default: RUNTIME_DIR/console)");
  serve->add_option("--cell", serve_args.cells,
                    "Serve a console for this cell too (repeatable; for tests and for cells "
                    "not in the config)");
  serve->add_option("--log-size", serve_args.log_size,
                    "--cell consoles: rotate the log at this size (default 1MiB)");
  serve
      ->add_option("--log-files", serve_args.log_files,
                   "--cell consoles: the log plus rotated files kept (default 3)")
      ->check(CLI::Range(1, 100));
  serve->add_option("--scrollback", serve_args.scrollback,
                    "--cell consoles: output replayed to a new viewer (default 64KiB)");
  serve->add_option("--viewer-queue", serve_args.viewer_queue,
                    "A viewer further behind than this is disconnected (default 1MiB)");
  serve->add_flag("--loopback", serve_args.loopback,
                  "TEST MODE: no guest; every input byte is echoed back as output");
  serve->add_option("--log-level", serve_args.log_level, "trace, debug, info, warn or error")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error"}));

  CLI11_PARSE(app, argc, argv);

  auto optional_path = [](const std::string& text) -> std::optional<std::filesystem::path> {
    if (text.empty()) return std::nullopt;
    return std::filesystem::path(text);
  };
  try {
    if (*daemon) {
      daemon_args.config = optional_path(daemon_config);
      return cellink::cli::run_daemon(daemon_args);
    }
    if (*check) return cellink::cli::run_check(check_file);
    if (*status) return cellink::cli::run_status(runtime_dir, status_json);
    if (*qemu_args) {
      return cellink::cli::run_qemu_args(qemu_cell, optional_path(qemu_config), runtime_dir,
                                         qemu_link, optional_path(qemu_inmate));
    }
    if (*demo) {
      cellink::cli::DemoArgs demo_args;
      demo_args.runtime_dir = optional_path(demo_dir);
      demo_args.guest = !demo_no_guest;
      demo_args.inmate = !demo_no_inmate;
      demo_args.guest_image = optional_path(demo_guest_image);
      return cellink::cli::run_demo(demo_args);
    }
    if (*bench) return cellink::cli::run_bench(bench->remaining());
    if (*serve) {
      serve_args.config = optional_path(serve_config);
      serve_args.log_dir = optional_path(serve_log_dir);
      return cellink::cli::run_console_serve(serve_args);
    }
    if (*console) {
      if (console_args.cell.empty()) {
        std::cerr << "cellink console: name a CELL, or use `cellink console serve`\n";
        return 2;
      }
      return cellink::cli::run_console_attach(console_args);
    }
  } catch (const std::exception& error) {
    std::cerr << "cellink: " << error.what() << "\n";
    return 1;
  }
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run_cli(argc, argv);
  } catch (const std::exception& error) {
    std::cerr << "cellink: " << error.what() << "\n";
  } catch (...) {
    std::cerr << "cellink: unexpected error\n";
  }
  return 1;
}
