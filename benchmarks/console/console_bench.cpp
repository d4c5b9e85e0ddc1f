// console_bench: guest -> host throughput of the virtual console against
// QEMU's emulated 16550, in one run (docs/benchmarks.md, "Console
// throughput"; the rows are in console_rows.hpp):
//   cmake --build --preset release --target console_bench cellink guest_image inmate-console
//   build/release/benchmarks/console_bench [--bytes 16MiB] [--only ROW,ROW]
// Every row moves the same number of bytes and checks each of them; a byte
// lost, duplicated, reordered or altered fails the run (exit 1) and says
// where. A row whose QEMU or image is missing is skipped, saying why.
// Under TCG every figure is the emulator's, not the hardware's.
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "bench_child.hpp"
#include "console_rows.hpp"

#ifndef CELLINK_CLI_PATH
#define CELLINK_CLI_PATH "cellink"
#endif
#ifndef CELLINK_GUEST_IMAGE_DIR
#define CELLINK_GUEST_IMAGE_DIR "guest"
#endif
#ifndef CELLINK_INMATE_DIR
#define CELLINK_INMATE_DIR "inmates"
#endif

namespace cellink::bench::console {
namespace {

constexpr std::uint64_t kDefaultBytes = std::uint64_t{16} << 20;

// The environment variable `name` when set, else `fallback`.
std::string setting(const char* name, const char* fallback) {
  const char* value = std::getenv(name);
  return value != nullptr && *value != '\0' ? value : fallback;
}

// "16MiB", "1MiB", "512KiB", "2MB", "1000000".
std::optional<std::uint64_t> parse_size(const std::string& text) {
  std::size_t used = 0;
  std::uint64_t value = 0;
  try {
    value = std::stoull(text, &used);
  } catch (const std::exception&) {
    return std::nullopt;
  }
  static const std::map<std::string, std::uint64_t> kUnits = {
      {"", 1},      {"B", 1},        {"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30},
      {"KB", 1000}, {"MB", 1000000}, {"k", 1000},      {"K", 1 << 10},   {"M", 1 << 20}};
  const auto unit = kUnits.find(text.substr(used));
  if (unit == kUnits.end() || value == 0) return std::nullopt;
  return value * unit->second;
}

std::string cpu_model() {
  std::ifstream cpuinfo("/proc/cpuinfo");
  for (std::string line; std::getline(cpuinfo, line);) {
    if (line.starts_with("model name")) {
      const std::size_t colon = line.find(':');
      return colon == std::string::npos ? line : line.substr(colon + 2);
    }
  }
  return "unknown CPU";
}

std::string qemu_version(const std::string& qemu) {
  if (qemu.empty()) return "not installed";
  try {
    const std::string text = run_to_end({qemu, "--version"});
    return text.substr(0, text.find('\n'));
  } catch (const std::exception& failure) {
    return failure.what();
  }
}

int usage(const char* program) {
  std::fprintf(stderr,
               "usage: %s [--bytes SIZE] [--via viewer|pty] [--only ROW[,ROW...]]\n"
               "  --bytes SIZE  payload bytes per row (default 16MiB; suffixes KiB MiB GiB KB MB)\n"
               "  --via         where the virtio rows read the console: the viewer socket\n"
               "                (default; lossless or disconnected) or the PTY (drops when\n"
               "                the reader falls behind)\n"
               "  --only ROWS   linux-virtio, linux-16550, inmate-virtio, inmate-16550\n",
               program);
  return 2;
}

void print_ratio(const std::vector<RowResult>& results, const char* label, const char* virtio,
                 const char* uart, std::uint64_t bytes) {
  const RowResult* fast = nullptr;
  const RowResult* slow = nullptr;
  for (const RowResult& result : results) {
    if (result.outcome != Outcome::measured) continue;
    if (result.row == virtio) fast = &result;
    if (result.row == uart) slow = &result;
  }
  if (fast == nullptr || slow == nullptr) {
    std::printf("ratio %s virtio/16550: not measured (a row did not run)\n", label);
    return;
  }
  std::printf("ratio %s virtio/16550: %.1fx (%.3f MB/s against %.3f MB/s)\n", label,
              fast->mb_per_s(bytes) / slow->mb_per_s(bytes), fast->mb_per_s(bytes),
              slow->mb_per_s(bytes));
}

int run(int argc, char** argv) {
  Context context;
  context.bytes = kDefaultBytes;
  std::vector<std::string> only;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--bytes" && i + 1 < argc) {
      const std::optional<std::uint64_t> bytes = parse_size(argv[++i]);
      if (!bytes) return usage(argv[0]);
      context.bytes = *bytes;
    } else if (arg == "--via" && i + 1 < argc) {
      const std::string via = argv[++i];
      if (via != "pty" && via != "viewer") return usage(argv[0]);
      context.via_pty = via == "pty";
    } else if (arg == "--only" && i + 1 < argc) {
      std::string list = argv[++i];
      for (std::size_t at = 0; at <= list.size();) {
        const std::size_t comma = std::min(list.find(',', at), list.size());
        only.push_back(list.substr(at, comma - at));
        at = comma + 1;
      }
    } else {
      return usage(argv[0]);
    }
  }
  context.cellink_cli = setting("CELLINK_CLI", CELLINK_CLI_PATH);
  context.qemu = find_program("qemu-system-x86_64");
  context.guest_dir = setting("CELLINK_GUEST_IMAGE_DIR", CELLINK_GUEST_IMAGE_DIR);
  context.inmate_dir = setting("CELLINK_INMATE_DIR", CELLINK_INMATE_DIR);
  char work_dir[] = "/tmp/cellink-console-bench-XXXXXX";
  if (::mkdtemp(work_dir) == nullptr) {
    std::perror("mkdtemp");
    return 1;
  }
  context.work_dir = work_dir;

  std::printf("console_bench: guest -> host over the console, %llu bytes per row, one run\n",
              static_cast<unsigned long long>(context.bytes));
  std::printf("machine: %s, %ld CPUs; %s, TCG (software emulation: not hardware figures)\n",
              cpu_model().c_str(), ::sysconf(_SC_NPROCESSORS_ONLN),
              qemu_version(context.qemu).c_str());
  std::fflush(stdout);

  // -10: see raise_reader_priority(). Said, since it shapes the figures.
  const bool raised = raise_reader_priority(-10);
  std::printf("reader priority: %s\n",
              raised ? "nice -10 (QEMU and the console service keep the bench's own)"
                     : "not raised (no permission): a starved PTY reader makes the PTY drop bytes");

  std::vector<RowResult> results;
  for (const Row& row : console_rows()) {
    if (!only.empty() && std::find(only.begin(), only.end(), row.name) == only.end()) continue;
    std::printf("%s: %s ...\n", row.name.c_str(), row.what.c_str());
    std::fflush(stdout);
    results.push_back(row.run(context, row.name));
    const RowResult& result = results.back();
    if (result.outcome == Outcome::measured) {
      std::printf("%s: %.3f s, %.3f MB/s; %s\n", row.name.c_str(), result.seconds,
                  result.mb_per_s(context.bytes), result.note.c_str());
    } else {
      std::printf("%s: %s: %s\n", row.name.c_str(),
                  result.outcome == Outcome::skipped ? "skipped" : "FAILED", result.note.c_str());
    }
    std::fflush(stdout);
  }

  std::printf("\n%-14s %12s %10s %10s\n", "row", "bytes", "seconds", "MB/s");
  bool failed = false;
  for (const RowResult& result : results) {
    if (result.outcome == Outcome::measured) {
      std::printf("%-14s %12llu %10.3f %10.3f\n", result.row.c_str(),
                  static_cast<unsigned long long>(context.bytes), result.seconds,
                  result.mb_per_s(context.bytes));
    } else {
      failed = failed || result.outcome == Outcome::failed;
      std::printf("%-14s %s: %s\n", result.row.c_str(),
                  result.outcome == Outcome::skipped ? "skipped" : "FAILED", result.note.c_str());
    }
  }
  print_ratio(results, "linux", "linux-virtio", "linux-16550", context.bytes);
  print_ratio(results, "inmate", "inmate-virtio", "inmate-16550", context.bytes);
  std::printf(
      "MB/s is 10^6 bytes per second, timed on the host from the BEGIN marker's arrival "
      "to the END marker's.\n");
  if (failed) {
    std::printf("console_bench: FAILED; the logs stay in %s\n", work_dir);
    return 1;
  }
  std::filesystem::remove_all(work_dir);
  return 0;
}

}  // namespace
}  // namespace cellink::bench::console

int main(int argc, char** argv) {
  return cellink::bench::console::run(argc, argv);
}
