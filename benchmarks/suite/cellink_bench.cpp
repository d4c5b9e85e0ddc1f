// cellink_bench: every cellink transport against the physical limits and
// the usual alternatives, in one run on the same two pinned CPUs, with a
// table, JSON (docs/bench-json.md) and a Markdown/HTML report with plots.
// `cellink bench` runs it with the same arguments. docs/benchmarks.md,
// section "cellink bench", explains the rows.
//
//   cellink_bench [--quick | --smoke] [--json] [--report DIR] [--cpus A,B] [--only ID,...]
//
// Every ratio is computed from rows of this run.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "peer_process.hpp"
#include "suite.hpp"

#ifndef CELLINK_CLI_PATH
#define CELLINK_CLI_PATH "cellink"
#endif

namespace cellink::bench::suite {
namespace {

struct Options {
  std::string preset = "full";
  bool json = false;
  std::string report_dir;
  std::string cpus;
  std::string only;  // comma-separated transport ids; empty: all
  std::string command;
};

void print_usage(std::FILE* stream) {
  std::fputs(
      "usage: cellink_bench [--quick | --smoke] [--json] [--report DIR] [--cpus A,B] "
      "[--only ID,...]\n"
      "  (default)     every payload from 8 B to 1 MiB; a few minutes\n"
      "  --quick       fewer sizes and samples; under a minute, coarse figures\n"
      "  --smoke       tiny counts: proves every row runs; the figures mean nothing\n"
      "  --json        print the JSON document (docs/bench-json.md) on stdout; the table\n"
      "                and the progress go to stderr\n"
      "  --report DIR  also write DIR/report.md, DIR/report.html, DIR/bench.json and\n"
      "                gnuplot plots\n"
      "  --cpus A,B    the two CPUs to pin to (default: the first two allowed)\n"
      "  --only ID,... only these transports (ids as in the JSON, e.g. cellink-channel,pipe);\n"
      "                cellink-inmate (a bare-metal inmate under QEMU TCG) runs only when named\n",
      stream);
}

[[nodiscard]] bool parse(int argc, char** argv, Options& options) {
  options.command = "cellink_bench";
  for (int i = 1; i < argc; ++i) {
    const std::string_view argument = argv[i];
    options.command += " " + std::string(argument);
    const bool has_value = i + 1 < argc;
    if (argument == "--quick") {
      options.preset = "quick";
    } else if (argument == "--smoke") {
      options.preset = "smoke";
    } else if (argument == "--json") {
      options.json = true;
    } else if (argument == "--report" && has_value) {
      options.report_dir = argv[++i];
      options.command += " " + options.report_dir;
    } else if (argument == "--cpus" && has_value) {
      options.cpus = argv[++i];
      options.command += " " + options.cpus;
    } else if (argument == "--only" && has_value) {
      options.only = argv[++i];
      options.command += " " + options.only;
    } else {
      std::fprintf(stderr, "cellink_bench: unknown argument '%s'\n", argv[i]);
      return false;
    }
  }
  return true;
}

// A runner on request (the inmate's) runs only when --only names it.
[[nodiscard]] bool selected(const Options& options, const Runner& runner) {
  if (options.only.empty()) return !runner.on_request;
  return ("," + options.only + ",").find("," + runner.transport.id + ",") != std::string::npos;
}

// The preset's sizes `runner` runs.
[[nodiscard]] std::vector<std::uint64_t> sizes_of(const Runner& runner, const Preset& preset) {
  if (runner.sizes.empty()) return preset.sizes;
  std::vector<std::uint64_t> sizes;
  for (const std::uint64_t size : preset.sizes) {
    if (std::find(runner.sizes.begin(), runner.sizes.end(), size) != runner.sizes.end()) {
      sizes.push_back(size);
    }
  }
  return sizes;
}

[[nodiscard]] std::string utc_now() {
  const std::time_t now = std::time(nullptr);
  std::tm parts{};
  ::gmtime_r(&now, &parts);
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", &parts);
  return text;
}

[[nodiscard]] std::vector<Runner> all_runners() {
  std::vector<Runner> runners = limit_runners();
  for (Runner& runner : cellink_runners()) runners.push_back(std::move(runner));
  runners.push_back(daemon_runner());
  runners.push_back(inmate_runner());
  for (Runner& runner : ipc_runners()) runners.push_back(std::move(runner));
  runners.push_back(shm_spsc_runner());
  runners.push_back(rte_ring_runner());
  runners.push_back(iceoryx_runner());
  return runners;
}

// "p50 612 ns" or "4.12 Mmsg/s" or the reason it is not there.
[[nodiscard]] std::string summary(const Result& row) {
  char text[96];
  if (!row.measured()) {
    std::snprintf(text, sizeof text, "%s", name(row.status));
  } else if (row.measure == Measure::rtt) {
    std::snprintf(text, sizeof text, "RTT p50 %.0f ns", row.latency.p50);
  } else {
    std::snprintf(text, sizeof text, "%.3f Mmsg/s", row.messages_per_second * 1e-6);
  }
  return text;
}

// Runs one runner for one mode and size; an exception (a setup the kernel
// refused) becomes an n/a row that says so.
[[nodiscard]] std::vector<Result> run_one(const Runner& runner, const Context& context, Mode mode,
                                          std::uint64_t payload) {
  try {
    return runner.run(context, mode, payload);
  } catch (const std::exception& error) {
    const std::string why = std::string("failed: ") + error.what();
    std::fprintf(stderr, "cellink_bench: %s %s %s: %s\n", runner.transport.label.c_str(),
                 name(mode), size_label(payload).c_str(), why.c_str());
    return {
        unavailable(runner.transport.id, mode, Measure::rtt, payload, Status::not_applicable, why),
        unavailable(runner.transport.id, mode, Measure::throughput, payload, Status::not_applicable,
                    why)};
  }
}

int run(const Options& options) {
  using Clock = std::chrono::steady_clock;
  const Clock::time_point started = Clock::now();
  Context context;
  context.preset = &preset_named(options.preset);
  std::string error;
  const auto cpus = choose_cpus(options.cpus, error);
  if (!cpus) {
    std::fprintf(stderr, "cellink_bench: %s\n", error.c_str());
    return 2;
  }
  context.settings.cpus = *cpus;
  context.settings.clock.calibrate(context.preset->calibrate_ms);
  context.self_path = std::filesystem::read_symlink("/proc/self/exe").string();
  const char* cli = std::getenv("CELLINK_CLI");
  context.cellink_cli = cli != nullptr && *cli != '\0' ? cli : CELLINK_CLI_PATH;
  std::string work_dir = (std::filesystem::temp_directory_path() / "cellink-bench-XXXXXX").string();
  if (::mkdtemp(work_dir.data()) == nullptr) {
    std::fprintf(stderr, "cellink_bench: mkdtemp %s: %s\n", work_dir.c_str(), std::strerror(errno));
    return 1;
  }
  context.work_dir = work_dir;
  install_cleanup_handlers(work_dir);

  Run run;
  run.preset = context.preset->name;
  run.command = options.command;
  run.started_utc = utc_now();
  run.ns_per_tick = context.settings.clock.ns(1);
  const Latency timer = timer_overhead(context.rtt_settings(Mode::poll, 8));

  std::vector<Runner> runners;
  for (Runner& runner : all_runners()) {
    if (selected(options, runner)) runners.push_back(std::move(runner));
  }
  std::size_t steps = 0;
  for (const Runner& runner : runners) {
    steps += runner.transport.modes.size() * sizes_of(runner, *context.preset).size();
  }
  std::fprintf(stderr, "cellink_bench: %s run, %zu transports, %zu steps; pinned to CPUs %d,%d\n",
               run.preset.c_str(), runners.size(), steps, context.settings.cpus.first,
               context.settings.cpus.second);
  std::size_t step = 0;
  for (const Runner& runner : runners) {
    run.transports.push_back(runner.transport);
    for (const Mode mode : runner.transport.modes) {
      for (const std::uint64_t payload : sizes_of(runner, *context.preset)) {
        const Clock::time_point begin = Clock::now();
        std::vector<Result> rows = run_one(runner, context, mode, payload);
        const double seconds = std::chrono::duration<double>(Clock::now() - begin).count();
        std::string line;
        for (const Result& row : rows) line += (line.empty() ? "" : ", ") + summary(row);
        std::fprintf(stderr, "[%3zu/%zu %5.1f s] %-28s %-8s %-7s %s (%.2f s)\n", ++step, steps,
                     std::chrono::duration<double>(Clock::now() - started).count(),
                     runner.transport.label.c_str(), name(mode), size_label(payload).c_str(),
                     line.c_str(), seconds);
        for (Result& row : rows) run.results.push_back(std::move(row));
      }
    }
  }
  stop_daemon();
  stop_iceoryx();
  std::error_code ignored;
  std::filesystem::remove_all(work_dir, ignored);

  run.machine = machine_info(context, timer);
  run.ratios = compute_ratios(run);
  run.wall_seconds = std::chrono::duration<double>(Clock::now() - started).count();
  if (options.json) {
    std::fputs(to_json(run).c_str(), stdout);
    std::fflush(stdout);
    print_table(run, stderr);
  } else {
    print_table(run, stdout);
  }
  if (!options.report_dir.empty() && !write_report(run, options.report_dir)) return 1;
  return 0;
}

}  // namespace
}  // namespace cellink::bench::suite

int main(int argc, char** argv) {
  using namespace cellink::bench::suite;
  if (argc > 1 && std::strcmp(argv[1], "--peer") == 0) {
    cellink::bench::set_program_name("cellink_bench peer");
    PeerArgs args;
    std::string error;
    if (!args.parse(argc, argv, error)) {
      std::fprintf(stderr, "cellink_bench: %s\n", error.c_str());
      return 2;
    }
    if (args.kind == "daemon-echo") return daemon_peer_main(args);
    if (args.kind == "iceoryx-ping" || args.kind == "iceoryx-pong") return iceoryx_peer_main(args);
    std::fprintf(stderr, "cellink_bench: unknown peer kind '%s'\n", args.kind.c_str());
    return 2;
  }
  cellink::bench::set_program_name("cellink_bench");
  if (argc > 1 && (std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0)) {
    print_usage(stdout);
    return 0;
  }
  Options options;
  if (!parse(argc, argv, options)) {
    print_usage(stderr);
    return 2;
  }
  return run(options);
}
