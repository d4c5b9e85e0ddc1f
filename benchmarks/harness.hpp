// The benchmark harness: two pinned threads, a tick clock and a latency
// histogram. Nothing here allocates once a measurement has started.
//
// Threading: TickClock and Histogram belong to one thread each; run_pinned()
// starts the two measured threads and joins them. StartGate is the only
// object both threads touch.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#if defined(__x86_64__) || defined(__i386__)
#include <x86intrin.h>
#endif

namespace cellink::bench {

// The two CPUs the measured threads run on: `first` runs the initiator (or
// producer), `second` the echoer (or consumer).
struct CpuPair {
  int first = -1;
  int second = -1;
  bool pinned = false;  // false only when fewer than two CPUs are allowed
};

// Picks two distinct CPUs: the ones named in `request` ("A,B") or else the
// first two in this process's affinity mask. Empty optional plus `error`
// when the request is malformed or names a CPU we may not use.
[[nodiscard]] std::optional<CpuPair> choose_cpus(std::string_view request, std::string& error);

// Runs `first` and `second` on two threads pinned to `cpus` and joins them.
// Aborts with a message when pinning fails.
void run_pinned(const CpuPair& cpus, const std::function<void()>& first,
                const std::function<void()>& second);

// Prints "ring_bench: " (or the name given to set_program_name()) and the
// message to stderr, then aborts: for a queue that lost or reordered a
// record, which must never yield a figure.
[[noreturn]] void fail(const char* format, ...) __attribute__((format(printf, 1, 2)));
// The name fail() prefixes its messages with; `name` must outlive the program.
void set_program_name(const char* name) noexcept;

// Zeroed heap memory, aligned to `alignment` bytes (a power of two) and
// touched once so that page faults happen before any measurement.
class AlignedBuffer {
 public:
  explicit AlignedBuffer(std::size_t size, std::size_t alignment = 4096);
  [[nodiscard]] std::byte* data() const noexcept { return bytes_.get(); }
  [[nodiscard]] std::size_t size() const noexcept { return size_; }

 private:
  struct Free {
    void operator()(std::byte* bytes) const noexcept;
  };
  std::unique_ptr<std::byte[], Free> bytes_;
  std::size_t size_ = 0;
};

// Releases two threads at the same moment, so neither measures the other's
// start-up.
class StartGate {
 public:
  void arrive_and_wait() noexcept {
    // Relaxed is enough: the gate orders nothing, it only aligns start times.
    arrived_.fetch_add(1, std::memory_order_relaxed);
    while (arrived_.load(std::memory_order_relaxed) < 2) {
    }
  }

 private:
  alignas(64) std::atomic<int> arrived_{0};
};

// Time stamps in ticks: rdtsc on x86 (the TSC here is invariant, see
// `constant_tsc nonstop_tsc` in /proc/cpuinfo), steady_clock nanoseconds
// elsewhere. calibrate() converts ticks to nanoseconds against steady_clock.
class TickClock {
 public:
  // The lfences keep the read from moving above earlier loads (the echo we
  // wait for) or below later ones.
  [[nodiscard]] static std::uint64_t now() noexcept {
#if defined(__x86_64__) || defined(__i386__)
    _mm_lfence();
    const std::uint64_t ticks = __rdtsc();
    _mm_lfence();
    return ticks;
#else
    return steady_nanoseconds();
#endif
  }

  // Measures ticks per nanosecond over `milliseconds` of busy waiting.
  void calibrate(unsigned milliseconds);
  [[nodiscard]] double ns(std::uint64_t ticks) const noexcept {
    return ticks * ns_per_tick_;
  }
  [[nodiscard]] double seconds(std::uint64_t ticks) const noexcept {
    return ns(ticks) * 1e-9;
  }
  [[nodiscard]] double ghz() const noexcept {
    return 1.0 / ns_per_tick_;
  }
  [[nodiscard]] const char* source() const noexcept;

 private:
  [[nodiscard]] static std::uint64_t steady_nanoseconds() noexcept;
  double ns_per_tick_ = 1.0;
};

// Latency distribution in ticks with fixed storage: exact below 512 ticks,
// then 256 sub-buckets per power of two (under 0.4 % error). record() is a
// few instructions and never allocates; allocate the Histogram itself before
// measuring (it is about 114 KiB).
class Histogram {
 public:
  void record(std::uint64_t ticks) noexcept {
    ++counts_[bucket(ticks)];
    ++count_;
    sum_ += ticks;
    if (ticks > max_) max_ = ticks;
  }

  [[nodiscard]] std::uint64_t count() const noexcept { return count_; }
  [[nodiscard]] std::uint64_t max() const noexcept { return max_; }
  [[nodiscard]] double mean() const noexcept {
    return count_ == 0 ? 0.0 : static_cast<double>(sum_) / static_cast<double>(count_);
  }
  // The smallest recorded value that at least `percent` % of samples do
  // not exceed (to the bucket's precision); 0 when empty.
  [[nodiscard]] std::uint64_t percentile(double percent) const noexcept;
  // Calls visit(ticks, count) for every non-empty bucket in ascending order,
  // `ticks` being the bucket's middle (capped at max()): the distribution,
  // e.g. for a CDF plot.
  template <typename Visit>
  void for_each_bucket(Visit visit) const {
    for (std::size_t index = 0; index < kBuckets; ++index) {
      if (counts_[index] == 0) continue;
      const std::uint64_t middle = value(index);
      visit(middle < max_ ? middle : max_, counts_[index]);
    }
  }

 private:
  static constexpr unsigned kSubBits = 8;
  static constexpr std::uint64_t kExact = std::uint64_t{2} << kSubBits;  // 512
  static constexpr std::size_t kBuckets = kExact + (64 - kSubBits - 1) * (kExact / 2);

  [[nodiscard]] static std::size_t bucket(std::uint64_t ticks) noexcept {
    if (ticks < kExact) return static_cast<std::size_t>(ticks);
    const unsigned shift = 63U - static_cast<unsigned>(__builtin_clzll(ticks)) - kSubBits;
    const std::uint64_t mantissa = ticks >> shift;  // in [256, 512)
    return static_cast<std::size_t>(kExact + (shift - 1) * (kExact / 2) + (mantissa - kExact / 2));
  }
  // The middle of bucket `index`'s value range.
  [[nodiscard]] static std::uint64_t value(std::size_t index) noexcept;

  std::uint64_t counts_[kBuckets] = {};
  std::uint64_t count_ = 0;
  std::uint64_t sum_ = 0;
  std::uint64_t max_ = 0;
};

// Involuntary context switches of this process so far, all threads (exited
// ones included): a measurement during which this grows was disturbed by
// another task on one of our CPUs.
[[nodiscard]] std::uint64_t involuntary_switches() noexcept;

// The first three fields of /proc/loadavg, or "?" when unreadable.
[[nodiscard]] std::string load_average();

// Keeps the compiler from discarding a computed value or a memory write.
template <typename T>
inline void keep(const T& value) noexcept {
  asm volatile("" : : "g"(value) : "memory");
}

}  // namespace cellink::bench
