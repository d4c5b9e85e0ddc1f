// The header every benchmark prints before its rows: what ran, on which
// machine and CPUs, with which build and clock (docs/benchmarks.md).
#include <sys/utsname.h>

#include <cstdio>
#include <fstream>
#include <string>

#include "ring_bench.hpp"

#ifndef CELLINK_BENCH_BUILD_TYPE
#define CELLINK_BENCH_BUILD_TYPE "unknown"
#endif

namespace cellink::bench {

std::string cpu_model() {
  std::ifstream cpuinfo("/proc/cpuinfo");
  std::string line;
  while (std::getline(cpuinfo, line)) {
    if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
  }
  return "unknown CPU";
}

void print_run_header(const RunHeader& header, const Settings& settings, const Latency& timer) {
  utsname system{};
  uname(&system);
  std::printf("cellink %s: %s run\n", header.program, header.mode);
  std::printf("machine: %s, %s %s, load average %s\n", cpu_model().c_str(), system.sysname,
              system.release, load_average().c_str());
  if (settings.cpus.pinned) {
    std::printf("threads: %s pinned to CPU %d, %s pinned to CPU %d\n", header.first_role,
                settings.cpus.first, header.second_role, settings.cpus.second);
  } else {
    std::printf(
        "threads: WARNING: fewer than two CPUs allowed, threads NOT pinned: "
        "the figures mean nothing\n");
  }
#ifdef NDEBUG
  const char* optimised = "";
#else
  const char* optimised = " (WARNING: assertions on, not the release preset)";
#endif
  std::printf("build: compiler %s, CMAKE_BUILD_TYPE=%s%s\n", __VERSION__, CELLINK_BENCH_BUILD_TYPE,
              optimised);
  std::printf(
      "clock: %s at %.3f GHz, calibrated against steady_clock; timer overhead p50 %.1f ns\n",
      settings.clock.source(), settings.clock.ghz(), timer.p50);
  std::fputs(header.ctxsw_note, stdout);
}

}  // namespace cellink::bench
