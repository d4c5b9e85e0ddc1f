// boost::lockfree::spsc_queue in shared memory: a byte queue of fixed,
// compile-time capacity (its storage is inline, so the whole queue lives in
// one MAP_SHARED mapping, as it would between two processes), used as a
// byte stream: the sender copies its staged message in with push(), the
// receiver copies it out with pop() and checks it. Two copies per message,
// the price of a copying queue; the capacity matches the cellink ring's for
// the payload (ring_capacity_for()).
#include <sys/mman.h>

#include <cerrno>
#include <cstring>
#include <new>

#include <boost/lockfree/spsc_queue.hpp>

#include "../round_trips.hpp"
#include "../streaming.hpp"
#include "copy_buffers.hpp"
#include "suite.hpp"

namespace cellink::bench::suite {
namespace {

constexpr const char* kId = "boost-spsc-shm";

template <std::size_t Capacity>
using ByteQueue = boost::lockfree::spsc_queue<std::byte, boost::lockfree::capacity<Capacity>>;

// A Queue constructed in its own MAP_SHARED anonymous mapping.
template <typename Queue>
class SharedQueue {
 public:
  SharedQueue() {
    void* memory =
        ::mmap(nullptr, sizeof(Queue), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (memory == MAP_FAILED) fail("mmap(%zu bytes): %s", sizeof(Queue), std::strerror(errno));
    queue_ = new (memory) Queue();
  }
  SharedQueue(const SharedQueue&) = delete;
  SharedQueue& operator=(const SharedQueue&) = delete;
  ~SharedQueue() {
    queue_->~Queue();
    ::munmap(queue_, sizeof(Queue));
  }
  [[nodiscard]] Queue& operator*() const noexcept { return *queue_; }

 private:
  Queue* queue_ = nullptr;
};

template <typename Queue>
void send(Queue& queue, CopyBuffers& buffers, std::uint64_t sequence) {
  const std::byte* message = buffers.build(sequence);
  for (std::size_t pushed = 0; pushed < buffers.size();) {
    pushed += queue.push(message + pushed, buffers.size() - pushed);
  }
}

template <typename Queue>
void receive(Queue& queue, CopyBuffers& buffers, std::uint64_t sequence) {
  for (std::size_t popped = 0; popped < buffers.size();) {
    popped += queue.pop(buffers.inbox() + popped, buffers.size() - popped);
  }
  buffers.check(sequence);
}

template <std::size_t Capacity>
[[nodiscard]] Latency rtt_with(const Settings& settings, std::size_t size) {
  SharedQueue<ByteQueue<Capacity>> forward;
  SharedQueue<ByteQueue<Capacity>> backward;
  CopyBuffers a(size, kId);
  CopyBuffers b(size, kId);
  Latency latency = round_trips(
      settings,
      [&](std::uint64_t i) {
        send(*forward, a, i);
        receive(*backward, a, i);
      },
      [&](std::uint64_t i) {
        receive(*forward, b, i);
        send(*backward, b, i);
      });
  keep(a.sink() + b.sink());
  return latency;
}

template <std::size_t Capacity>
[[nodiscard]] double rate_with(const Settings& settings, const StreamCase& stream) {
  SharedQueue<ByteQueue<Capacity>> queue;
  CopyBuffers producer(stream.record_size, kId);
  CopyBuffers consumer(stream.record_size, kId);
  const double rate = stream_rate(
      settings, stream, [&](std::uint64_t i) { send(*queue, producer, i); },
      [&](std::uint64_t i) { receive(*queue, consumer, i); });
  keep(consumer.sink());
  return rate;
}

// Calls measure.template operator()<Capacity>() for the capacity the cellink
// ring gets for `payload`.
template <typename Measure>
[[nodiscard]] auto with_capacity(std::uint64_t payload, Measure measure) {
  constexpr std::size_t KiB = 1024;
  switch (ring_capacity_for(payload)) {
    case 64 * KiB: return measure.template operator()<64 * KiB>();
    case 128 * KiB: return measure.template operator()<128 * KiB>();
    case 256 * KiB: return measure.template operator()<256 * KiB>();
    case 512 * KiB: return measure.template operator()<512 * KiB>();
    case 1024 * KiB: return measure.template operator()<1024 * KiB>();
    case 2048 * KiB: return measure.template operator()<2048 * KiB>();
    case 4096 * KiB: return measure.template operator()<4096 * KiB>();
    default: fail("%s: no queue type for %llu-byte messages", kId, (unsigned long long)payload);
  }
}

}  // namespace

Runner shm_spsc_runner() {
  Runner runner;
  runner.transport = {kId,
                      "boost spsc_queue in shm",
                      Role::baseline,
                      {Mode::poll},
                      "boost::lockfree::spsc_queue<std::byte> with inline storage in a "
                      "MAP_SHARED mapping: push() copies the message in, pop() copies it out",
                      true,
                      "Boost " + std::to_string(BOOST_VERSION / 100000) + "." +
                          std::to_string(BOOST_VERSION / 100 % 1000)};
  runner.run = [](const Context& context, Mode mode, std::uint64_t payload) {
    const Settings rtt = context.rtt_settings(mode, payload);
    const Latency latency = with_capacity(
        payload, [&]<std::size_t Capacity>() { return rtt_with<Capacity>(rtt, payload); });
    const StreamCase stream = context.stream_case(payload);
    const std::uint64_t before = involuntary_switches();
    const double rate = with_capacity(payload, [&]<std::size_t Capacity>() {
      return rate_with<Capacity>(context.settings, stream);
    });
    return std::vector<Result>{
        rtt_result(kId, mode, payload, latency, rtt),
        throughput_result(kId, mode, payload, rate, stream, involuntary_switches() - before)};
  };
  return runner;
}

}  // namespace cellink::bench::suite
