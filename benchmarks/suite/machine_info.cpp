// What the run says about the machine: CPU model and count, the CPUs the
// rows were pinned to, kernel, virtualisation (the /proc/cpuinfo
// "hypervisor" flag and systemd-detect-virt when present), build and clock.
#include <sys/utsname.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <string>

#include "suite.hpp"

#ifndef CELLINK_BENCH_BUILD_TYPE
#define CELLINK_BENCH_BUILD_TYPE "unknown"
#endif

namespace cellink::bench::suite {
namespace {

[[nodiscard]] bool has_hypervisor_flag() {
  std::ifstream cpuinfo("/proc/cpuinfo");
  std::string line;
  while (std::getline(cpuinfo, line)) {
    if (line.rfind("flags", 0) == 0) return (line + " ").find(" hypervisor ") != std::string::npos;
  }
  return false;
}

// systemd-detect-virt's answer ("kvm", "none", ...), or "unknown" when it is
// not installed.
[[nodiscard]] std::string detect_virt() {
  for (const char* path : {"/usr/bin/systemd-detect-virt", "/bin/systemd-detect-virt"}) {
    if (::access(path, X_OK) != 0) continue;
    const std::string command = std::string(path) + " 2>/dev/null";
    std::FILE* pipe = ::popen(command.c_str(), "r");
    if (pipe == nullptr) break;
    char answer[64] = {};
    const bool got = std::fgets(answer, sizeof answer, pipe) != nullptr;
    ::pclose(pipe);
    if (!got) break;
    std::string text = answer;
    while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
    return text;
  }
  return "unknown";
}

}  // namespace

Machine machine_info(const Context& context, const Latency& timer) {
  Machine machine;
  machine.cpu_model = cpu_model();
  machine.online_cpus = static_cast<unsigned>(::sysconf(_SC_NPROCESSORS_ONLN));
  if (context.settings.cpus.pinned) {
    machine.cpus_used = {context.settings.cpus.first, context.settings.cpus.second};
  }
  utsname system{};
  ::uname(&system);
  machine.kernel = std::string(system.sysname) + " " + system.release;
  machine.hypervisor_flag = has_hypervisor_flag();
  machine.virtualisation = detect_virt();
  machine.load_average = load_average();
  machine.compiler = std::string("GCC ") + __VERSION__;
#ifdef NDEBUG
  machine.build_type = CELLINK_BENCH_BUILD_TYPE;
#else
  machine.build_type = std::string(CELLINK_BENCH_BUILD_TYPE) + " (assertions on)";
#endif
  char clock[96];
  std::snprintf(clock, sizeof clock, "%s at %.3f GHz", context.settings.clock.source(),
                context.settings.clock.ghz());
  machine.clock = clock;
  machine.timer_overhead_ns = timer.p50;
  return machine;
}

}  // namespace cellink::bench::suite
