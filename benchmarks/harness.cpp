#include "harness.hpp"

#include <pthread.h>
#include <sched.h>
#include <sys/resource.h>

#include <chrono>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <thread>

namespace cellink::bench {
namespace {

[[nodiscard]] std::optional<int> parse_cpu(std::string_view text) {
  if (text.empty() || text.size() > 4) return std::nullopt;
  int cpu = 0;
  for (const char digit : text) {
    if (digit < '0' || digit > '9') return std::nullopt;
    cpu = cpu * 10 + (digit - '0');
  }
  return cpu;
}

const char* g_program_name = "ring_bench";

void pin_or_abort(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  const int error = pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
  if (error != 0) fail("pthread_setaffinity_np(CPU %d): %s", cpu, std::strerror(error));
}

}  // namespace

void set_program_name(const char* name) noexcept {
  g_program_name = name;
}

void fail(const char* format, ...) {
  std::va_list arguments;
  va_start(arguments, format);
  std::fprintf(stderr, "%s: ", g_program_name);
  std::vfprintf(stderr, format, arguments);
  std::fputc('\n', stderr);
  va_end(arguments);
  std::abort();
}

AlignedBuffer::AlignedBuffer(std::size_t size, std::size_t alignment) : size_(size) {
  const std::size_t rounded = (size + alignment - 1) / alignment * alignment;
  bytes_.reset(static_cast<std::byte*>(std::aligned_alloc(alignment, rounded)));
  if (!bytes_) fail("cannot allocate %zu bytes aligned to %zu", rounded, alignment);
  std::memset(bytes_.get(), 0, rounded);
}

void AlignedBuffer::Free::operator()(std::byte* bytes) const noexcept {
  std::free(bytes);
}

std::optional<CpuPair> choose_cpus(std::string_view request, std::string& error) {
  cpu_set_t allowed;
  CPU_ZERO(&allowed);
  if (sched_getaffinity(0, sizeof(allowed), &allowed) != 0) {
    error = "sched_getaffinity failed";
    return std::nullopt;
  }
  if (!request.empty()) {
    const std::size_t comma = request.find(',');
    const auto first = parse_cpu(request.substr(0, comma));
    const auto second =
        comma == std::string_view::npos ? std::nullopt : parse_cpu(request.substr(comma + 1));
    if (!first || !second || *first == *second) {
      error = "--cpus '" + std::string(request) + "': expected two distinct CPU numbers, e.g. 0,1";
      return std::nullopt;
    }
    for (const int cpu : {*first, *second}) {
      if (cpu >= CPU_SETSIZE || !CPU_ISSET(cpu, &allowed)) {
        error = "--cpus '" + std::string(request) + "': CPU " + std::to_string(cpu) +
                " is not in this process's affinity mask (see taskset -p $$)";
        return std::nullopt;
      }
    }
    return CpuPair{*first, *second, true};
  }
  CpuPair pair;
  for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
    if (!CPU_ISSET(cpu, &allowed)) continue;
    if (pair.first < 0) {
      pair.first = cpu;
    } else {
      pair.second = cpu;
      pair.pinned = true;
      return pair;
    }
  }
  // One CPU only: run unpinned so that a smoke test still completes; the
  // caller prints a warning that the figures mean nothing.
  return pair;
}

void run_pinned(const CpuPair& cpus, const std::function<void()>& first,
                const std::function<void()>& second) {
  std::thread second_thread([&] {
    if (cpus.pinned) pin_or_abort(cpus.second);
    second();
  });
  std::thread first_thread([&] {
    if (cpus.pinned) pin_or_abort(cpus.first);
    first();
  });
  first_thread.join();
  second_thread.join();
}

std::uint64_t involuntary_switches() noexcept {
  rusage usage{};
  if (getrusage(RUSAGE_SELF, &usage) != 0) return 0;
  return static_cast<std::uint64_t>(usage.ru_nivcsw);
}

std::string load_average() {
  std::ifstream file("/proc/loadavg");
  std::string one, five, fifteen;
  if (!(file >> one >> five >> fifteen)) return "?";
  return one + " " + five + " " + fifteen;
}

std::uint64_t TickClock::steady_nanoseconds() noexcept {
  return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                        std::chrono::steady_clock::now().time_since_epoch())
                                        .count());
}

void TickClock::calibrate(unsigned milliseconds) {
  const std::uint64_t steady_begin = steady_nanoseconds();
  const std::uint64_t ticks_begin = now();
  const std::uint64_t duration = std::uint64_t{milliseconds} * 1000000;
  std::uint64_t steady_end = steady_begin;
  while (steady_end - steady_begin < duration) steady_end = steady_nanoseconds();
  const std::uint64_t ticks_end = now();
  ns_per_tick_ =
      static_cast<double>(steady_end - steady_begin) / static_cast<double>(ticks_end - ticks_begin);
}

const char* TickClock::source() const noexcept {
#if defined(__x86_64__) || defined(__i386__)
  return "rdtsc (lfence-fenced)";
#else
  return "steady_clock";
#endif
}

std::uint64_t Histogram::percentile(double percent) const noexcept {
  if (count_ == 0) return 0;
  auto rank = static_cast<std::uint64_t>(percent / 100.0 * static_cast<double>(count_) + 0.5);
  if (rank == 0) rank = 1;
  if (rank > count_) rank = count_;
  std::uint64_t seen = 0;
  for (std::size_t index = 0; index < kBuckets; ++index) {
    seen += counts_[index];
    if (seen >= rank) {
      const std::uint64_t middle = value(index);
      return middle < max_ ? middle : max_;
    }
  }
  return max_;
}

std::uint64_t Histogram::value(std::size_t index) noexcept {
  if (index < kExact) return index;
  const std::size_t above = index - kExact;
  const unsigned shift = static_cast<unsigned>(above / (kExact / 2)) + 1;
  const std::uint64_t mantissa = kExact / 2 + above % (kExact / 2);
  return (mantissa << shift) + ((std::uint64_t{1} << shift) >> 1);
}

}  // namespace cellink::bench
