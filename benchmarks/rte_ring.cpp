// The DPDK row: rte_ring used the way DPDK moves packets. rte_ring carries
// pointers, so the records live in a pool of `capacity / record_size`
// buffers (the same bytes as the other queues) and travel by pointer, zero
// copy: the producer takes a free buffer, fills it in place and enqueues its
// pointer; the consumer reads it in place and returns the pointer on a
// second ring, as rte_mempool would. Both sides move bursts of up to
// kPublishBatch pointers. The rings are initialised in plain memory with
// rte_ring_init(), so no EAL is needed.
//
// Built with DPDK only when CMake finds pkg-config's libdpdk; without it,
// rte_ring_available() is false and the row says how to install it.
#include "ring_bench.hpp"
#include "round_trips.hpp"

#if CELLINK_BENCH_HAVE_DPDK && !defined(__SANITIZE_THREAD__)
#define CELLINK_BENCH_RTE_RING 1
#include <rte_ring.h>
#include <rte_version.h>
#else
#define CELLINK_BENCH_RTE_RING 0
#endif

namespace cellink::bench {

#if CELLINK_BENCH_RTE_RING

namespace {

// An SP/SC rte_ring of at least `slots` usable entries, in its own memory.
class PointerRing {
 public:
  PointerRing(const char* name, std::size_t slots)
      : memory_(static_cast<std::size_t>(rte_ring_get_memsize(power_of_two_above(slots)))) {
    ring_ = reinterpret_cast<rte_ring*>(memory_.data());
    if (rte_ring_init(ring_, name, power_of_two_above(slots), RING_F_SP_ENQ | RING_F_SC_DEQ) != 0) {
      fail("rte_ring_init(%s, %zu slots) failed", name, slots);
    }
  }
  [[nodiscard]] rte_ring* get() const noexcept { return ring_; }

 private:
  // rte_ring keeps one entry empty, so `slots` usable entries need more.
  [[nodiscard]] static unsigned power_of_two_above(std::size_t slots) noexcept {
    unsigned count = 2;
    while (count <= slots) count *= 2;
    return count;
  }
  AlignedBuffer memory_;
  rte_ring* ring_ = nullptr;
};

}  // namespace

bool rte_ring_available() noexcept {
  return true;
}
const char* rte_ring_version() noexcept {
  return rte_version();
}

double rte_ring_rate(const Settings& settings, const StreamCase& stream) {
  const std::size_t size = stream.record_size;
  const std::size_t buffers = stream.capacity / size;
  AlignedBuffer pool(buffers * size, 64);
  PointerRing data_ring("cl_bench_data", buffers);
  PointerRing free_ring("cl_bench_free", buffers);
  for (std::size_t i = 0; i < buffers; ++i) {
    void* buffer = pool.data() + i * size;
    if (rte_ring_sp_enqueue_bulk(free_ring.get(), &buffer, 1, nullptr) != 1) {
      fail("rte_ring: free ring too small for %zu buffers", buffers);
    }
  }
  std::uint64_t begin = 0;
  std::uint64_t begin_index = 0;
  std::uint64_t end = 0;
  std::uint64_t sink = 0;
  StartGate gate;
  run_pinned(
      settings.cpus,
      [&] {
        gate.arrive_and_wait();
        void* burst[kPublishBatch];
        for (std::uint64_t i = 0; i < stream.records;) {
          const std::uint64_t left = stream.records - i;
          const auto wanted = static_cast<unsigned>(left < kPublishBatch ? left : kPublishBatch);
          const unsigned got = rte_ring_sc_dequeue_burst(free_ring.get(), burst, wanted, nullptr);
          for (unsigned k = 0; k < got; ++k) {
            write_payload(static_cast<std::byte*>(burst[k]), size, i + k, stream.workload);
          }
          if (got != 0 && rte_ring_sp_enqueue_bulk(data_ring.get(), burst, got, nullptr) != got) {
            fail("rte_ring: data ring refused %u buffers", got);
          }
          i += got;
        }
      },
      [&] {
        gate.arrive_and_wait();
        void* burst[kPublishBatch];
        for (std::uint64_t i = 0; i < stream.records;) {
          const unsigned got =
              rte_ring_sc_dequeue_burst(data_ring.get(), burst, kPublishBatch, nullptr);
          for (unsigned k = 0; k < got; ++k) {
            const std::uint64_t first =
                read_payload(static_cast<const std::byte*>(burst[k]), size, stream.workload, sink);
            if (first != i + k)
              fail("rte_ring: record %llu out of order", (unsigned long long)first);
          }
          if (got != 0 && rte_ring_sp_enqueue_bulk(free_ring.get(), burst, got, nullptr) != got) {
            fail("rte_ring: free ring refused %u buffers", got);
          }
          i += got;
          if (begin == 0 && i >= stream.warmup) {
            begin = TickClock::now();
            begin_index = i;
          }
        }
        end = TickClock::now();
      });
  keep(sink);
  return static_cast<double>(stream.records - begin_index) / settings.clock.seconds(end - begin);
}

Latency rte_ring_rtt(const Settings& settings, std::size_t payload_size) {
  AlignedBuffer a_buffer(payload_size, 64);
  AlignedBuffer b_buffer(payload_size, 64);
  PointerRing forward("cl_bench_fwd", 1);
  PointerRing backward("cl_bench_bwd", 1);
  std::uint64_t a_sink = 0;
  std::uint64_t b_sink = 0;
  // Each side reuses its one buffer: the echo of round trip i proves the
  // peer has read it.
  const auto send = [payload_size](rte_ring* ring, std::byte* buffer, std::uint64_t sequence) {
    write_payload(buffer, payload_size, sequence, Workload::fill);
    while (rte_ring_sp_enqueue(ring, buffer) != 0) {
    }
  };
  const auto receive = [payload_size](rte_ring* ring, std::uint64_t sequence, std::uint64_t& sink) {
    void* buffer = nullptr;
    while (rte_ring_sc_dequeue(ring, &buffer) != 0) {
    }
    const std::uint64_t first =
        read_payload(static_cast<const std::byte*>(buffer), payload_size, Workload::fill, sink);
    if (first != sequence) {
      fail("rte_ring round trip %llu: got message %llu", static_cast<unsigned long long>(sequence),
           static_cast<unsigned long long>(first));
    }
  };
  const Latency latency = round_trips(
      settings,
      [&](std::uint64_t i) {
        send(forward.get(), a_buffer.data(), i);
        receive(backward.get(), i, a_sink);
      },
      [&](std::uint64_t i) {
        receive(forward.get(), i, b_sink);
        send(backward.get(), b_buffer.data(), i);
      });
  keep(a_sink + b_sink);
  return latency;
}

#else

bool rte_ring_available() noexcept {
  return false;
}

const char* rte_ring_version() noexcept {
#if CELLINK_BENCH_HAVE_DPDK
  return "skipped under ThreadSanitizer (DPDK's x86 ring orders with compiler barriers TSan "
         "cannot see)";
#elif CELLINK_BENCH_DPDK_DISABLED
  return "disabled at configure time (-DCELLINK_BENCH_DPDK=OFF)";
#else
  return "not installed (apt-get install dpdk-dev)";
#endif
}

double rte_ring_rate(const Settings&, const StreamCase&) {
  fail("rte_ring row requested, but ring_bench was built without DPDK");
}

Latency rte_ring_rtt(const Settings&, std::size_t) {
  fail("rte_ring row requested, but ring_bench was built without DPDK");
}

#endif

}  // namespace cellink::bench
