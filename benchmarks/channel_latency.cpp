// channel_bench's rows: Channel round trips over a LoopbackLink, eventfd
// round trips, Cap'n Proto samples and the one-thread cost. Thread A (on
// cpus.first) starts and times each round trip, thread B (cpus.second)
// echoes; the first rtt_warmup round trips are not recorded.
#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <memory>
#include <span>
#include <vector>

#include <capnp/message.h>

#include "cellink/linux-uio/capnp_message.hpp"
#include "cellink/linux-uio/channel.hpp"
#include "cellink/linux-uio/loopback_device.hpp"
#include "cellink/linux-uio/session.hpp"
#include "cellink/linux-uio/unique_fd.hpp"
#include "cellink/transports/link_format.hpp"
#include "channel_bench.hpp"
#include "round_trips.hpp"
#include "telemetry/telemetry.capnp.h"

namespace cellink::bench {
namespace {

using examples::telemetry::Sample;
using linux_uio::Channel;
using linux_uio::Loan;
using linux_uio::Message;
using linux_uio::MessageErrc;
using linux_uio::UniqueFd;

// 128 KiB output sections give each direction a 64 KiB ring, the size of
// ring_rtt()'s rings, so that both walk the same amount of memory.
constexpr std::uint64_t kOutputSection = 128 * 1024;
static_assert([] {
  transports::LinkGeometry geometry;
  return transports::LinkGeometry::compute(2, kOutputSection, geometry) &&
         geometry.ring_capacity_bytes() == kRttRingCapacity;
}());
constexpr std::chrono::seconds kConnectTimeout{5};

// A sends message i and waits for its echo; B receives it and echoes it.
template <typename Side>
[[nodiscard]] Latency ping_pong(const Settings& settings, Side& a, Side& b) {
  const Latency latency = round_trips(
      settings,
      [&](std::uint64_t i) {
        a.send(i);
        a.receive(i);
      },
      [&](std::uint64_t i) {
        b.receive(i);
        b.send(i);
      });
  keep(a.sink() + b.sink());
  return latency;
}

// ---- Two Sessions over one LoopbackLink -----------------------------------------

// Peer 0 (thread A) and peer 1 (thread B), each with channel "bench" open
// toward the other and connected. Built on the main thread before the
// measured threads start; A uses only a(), B only b().
class SessionPair {
 public:
  explicit SessionPair(std::chrono::nanoseconds spin_budget)
      : link_(2, kOutputSection),
        a_session_(link_.device(0), options(spin_budget)),
        b_session_(link_.device(1), options(spin_budget)),
        a_(a_session_.open("bench")),
        b_(b_session_.open("bench")) {
    if (a_.wait_connected(kConnectTimeout) || b_.wait_connected(kConnectTimeout)) {
      fail("channel 'bench' did not connect over the LoopbackLink within 5 s");
    }
  }
  [[nodiscard]] Channel& a() noexcept { return a_; }
  [[nodiscard]] Channel& b() noexcept { return b_; }

 private:
  [[nodiscard]] static linux_uio::SessionOptions options(std::chrono::nanoseconds spin_budget) {
    linux_uio::SessionOptions options;
    options.spin_budget = spin_budget;
    return options;
  }
  linux_uio::LoopbackLink link_;
  linux_uio::Session a_session_;
  linux_uio::Session b_session_;
  Channel a_;
  Channel b_;
};

// One side of a raw-bytes ping-pong: as ring_rtt(), the sender fills the
// whole payload (memset, sequence number first) and the receiver reads one
// word per 64 bytes and checks the sequence number.
class RawSide {
 public:
  RawSide(Channel& channel, std::uint32_t size, SendWith send_with, ReceiveWith receive_with)
      : channel_(channel),
        size_(size),
        send_with_(send_with),
        receive_with_(receive_with),
        staging_(size, 64) {}

  void send(std::uint64_t sequence) {
    if (send_with_ == SendWith::loan) {
      Loan loan = channel_.loan(size_);
      if (!loan) fail("loan(%u): %s", size_, loan.error().message().c_str());
      write_payload(loan.data().data(), size_, sequence, Workload::fill);
      if (const std::error_code error = loan.commit(size_)) {
        fail("commit(%u): %s", size_, error.message().c_str());
      }
      return;
    }
    write_payload(staging_.data(), size_, sequence, Workload::fill);
    if (const std::error_code error = channel_.send(std::span{staging_.data(), size_})) {
      fail("send(%u): %s", size_, error.message().c_str());
    }
  }

  void receive(std::uint64_t sequence) {
    const Message message = next();
    const std::uint64_t first =
        read_payload(message.payload().data(), message.size(), Workload::fill, sink_);
    if (first != sequence || message.size() != size_) {
      fail("channel round trip %llu: got message %llu of %zu bytes, expected %u bytes",
           static_cast<unsigned long long>(sequence), static_cast<unsigned long long>(first),
           message.size(), size_);
    }
  }  // ~Message releases the record, as ring_rtt() releases before replying

  [[nodiscard]] std::uint64_t sink() const noexcept { return sink_; }

 private:
  [[nodiscard]] Message next() {
    if (receive_with_ == ReceiveWith::receive) {
      Message message = channel_.receive();
      if (!message) fail("receive: %s", message.error().message().c_str());
      return message;
    }
    for (;;) {
      Message message = channel_.try_receive();
      if (message) return message;
      if (message.error() != MessageErrc::would_block) {
        fail("try_receive: %s", message.error().message().c_str());
      }
    }
  }

  Channel& channel_;
  std::uint32_t size_;
  SendWith send_with_;
  ReceiveWith receive_with_;
  AlignedBuffer staging_;
  std::uint64_t sink_ = 0;
};

// ---- Plain eventfds ---------------------------------------------------------------

[[nodiscard]] UniqueFd blocking_eventfd() {
  UniqueFd fd(::eventfd(0, EFD_CLOEXEC));
  if (!fd) fail("eventfd: %s", std::strerror(errno));
  return fd;
}

void post(int fd) {
  const std::uint64_t one = 1;
  if (::write(fd, &one, sizeof one) != sizeof one) fail("eventfd write: %s", std::strerror(errno));
}

void take(int fd) {
  std::uint64_t count = 0;
  if (::read(fd, &count, sizeof count) != sizeof count || count != 1) {
    fail("eventfd read: %s (count %llu)", std::strerror(errno),
         static_cast<unsigned long long>(count));
  }
}

// Sleeps in poll() on an epoll fd that watches `fd`, as a Session sleeps on
// a LoopbackDevice's event_fd(), then reads the eventfd.
class EpollWait {
 public:
  explicit EpollWait(int fd) : fd_(fd), epoll_(::epoll_create1(EPOLL_CLOEXEC)) {
    epoll_event event{};
    event.events = EPOLLIN;
    if (!epoll_ || ::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &event) != 0) {
      fail("epoll: %s", std::strerror(errno));
    }
  }
  void wait() {
    pollfd ready{epoll_.get(), POLLIN, 0};
    while (::poll(&ready, 1, -1) != 1) {
    }
    take(fd_);
  }

 private:
  int fd_;
  UniqueFd epoll_;
};

// ---- Cap'n Proto ------------------------------------------------------------------

void fill_sample(Sample::Builder sample, std::uint64_t sequence, std::uint32_t temperatures) {
  sample.setSequence(sequence);
  sample.setTimestampNs(sequence * 1000);
  sample.setCell("rt-0");
  sample.setStatus(examples::telemetry::Status::DEGRADED);
  if (temperatures == 0) return;
  auto list = sample.initTemperatures(temperatures);
  for (std::uint32_t i = 0; i < temperatures; ++i) list.set(i, 20.0F + static_cast<float>(i));
}

// Reads every field, as a consumer would; returns the sequence number.
[[nodiscard]] std::uint64_t read_sample(Sample::Reader sample, std::uint64_t& sink) {
  sink += sample.getTimestampNs() + sample.getCell().size() +
          static_cast<std::uint64_t>(sample.getStatus());
  for (const float temperature : sample.getTemperatures()) {
    sink += std::bit_cast<std::uint32_t>(temperature);
  }
  return sample.getSequence();
}

// The same work on raw bytes of the same size: the sender writes a sequence
// number, then every 4-byte element in place; the receiver reads them all.
void write_raw_sample(std::span<std::byte> bytes, std::uint64_t sequence) {
  std::memcpy(bytes.data(), &sequence, sizeof sequence);
  for (std::size_t at = sizeof sequence; at + 4 <= bytes.size(); at += 4) {
    const float value = 20.0F + static_cast<float>(at);
    std::memcpy(bytes.data() + at, &value, 4);
  }
}

[[nodiscard]] std::uint64_t read_raw_sample(std::span<const std::byte> bytes, std::uint64_t& sink) {
  std::uint64_t sequence = 0;
  std::memcpy(&sequence, bytes.data(), sizeof sequence);
  for (std::size_t at = sizeof sequence; at + 4 <= bytes.size(); at += 4) {
    std::uint32_t element = 0;
    std::memcpy(&element, bytes.data() + at, 4);
    sink += element;
  }
  return sequence;
}

// One side of a Sample ping-pong (section 3): sends and receives `shape`
// in `encoding`, reads every field and checks the sequence number.
class SampleSide {
 public:
  SampleSide(Channel& channel, const CapnpCase& shape, Encoding encoding)
      : channel_(channel), shape_(shape), encoding_(encoding), staging_(shape.bytes, 64) {}

  void send(std::uint64_t sequence) {
    std::error_code error;
    if (encoding_ == Encoding::capnp) {
      error = linux_uio::send_capnp<Sample>(channel_, shape_.bytes, [&](Sample::Builder sample) {
        fill_sample(sample, sequence, shape_.temperatures);
      });
    } else if (encoding_ == Encoding::raw_loan) {
      Loan loan = channel_.loan(shape_.bytes);
      if (!loan) fail("loan(%u): %s", shape_.bytes, loan.error().message().c_str());
      write_raw_sample(loan.data(), sequence);
      error = loan.commit(shape_.bytes);
    } else {
      const std::span<std::byte> bytes{staging_.data(), shape_.bytes};
      write_raw_sample(bytes, sequence);
      error = channel_.send(bytes);
    }
    if (error) fail("sending a %u-byte sample: %s", shape_.bytes, error.message().c_str());
  }

  void receive(std::uint64_t sequence) {
    std::uint64_t got = 0;
    if (encoding_ == Encoding::capnp) {
      const auto message = linux_uio::receive_capnp<Sample>(channel_);
      if (!message) {
        fail("receive_capnp: %s %s", message.error().message().c_str(),
             message.error_detail().c_str());
      }
      got = read_sample(message.root(), sink_);
    } else {
      const Message message = channel_.receive();
      if (!message) fail("receive: %s", message.error().message().c_str());
      if (message.size() != shape_.bytes) fail("a sample of %zu bytes arrived", message.size());
      got = read_raw_sample(message.payload(), sink_);
    }
    if (got != sequence) {
      fail("sample round trip %llu: got sample %llu", static_cast<unsigned long long>(sequence),
           static_cast<unsigned long long>(got));
    }
  }

  [[nodiscard]] std::uint64_t sink() const noexcept { return sink_; }

 private:
  Channel& channel_;
  CapnpCase shape_;
  Encoding encoding_;
  AlignedBuffer staging_;
  std::uint64_t sink_ = 0;
};

// ---- One thread plays both sides ------------------------------------------------

// One message in flight, both ends on this thread: no line crosses cores, so
// this is the instruction cost of send + receive + release. Not inlined, so
// that callgrind can collect exactly these loops (see docs/benchmarks.md).
[[gnu::noinline]] void single_thread_channel_loop(RawSide& a, RawSide& b, std::uint64_t messages) {
  for (std::uint64_t i = 0; i < messages; i += 2) {
    a.send(i);
    b.receive(i);
    b.send(i + 1);
    a.receive(i + 1);
  }
}

[[gnu::noinline]] void single_thread_sample_loop(SampleSide& a, SampleSide& b,
                                                 std::uint64_t messages) {
  for (std::uint64_t i = 0; i < messages; i += 2) {
    a.send(i);
    b.receive(i);
    b.send(i + 1);
    a.receive(i + 1);
  }
}

[[gnu::noinline]] void single_thread_ring_loop(transports::RingProducer& producer,
                                               transports::RingConsumer<>& consumer,
                                               std::uint32_t size, std::uint64_t messages,
                                               std::uint64_t& sink) {
  for (std::uint64_t i = 0; i < messages; ++i) {
    transports::RingProducer::Reservation reservation;
    if (producer.reserve(size, 1, reservation) != transports::ProduceStatus::ok) {
      fail("reserve(%u) failed with one record in flight", size);
    }
    write_payload(reservation.payload.data(), size, i, Workload::fill);
    if (producer.commit(reservation, size) != transports::ProduceStatus::ok) fail("commit");
    (void)producer.publish();  // nobody arms a wake-up: no doorbell is due
    transports::Record record;
    if (consumer.peek(record) != transports::ConsumeStatus::ok) fail("peek");
    if (read_payload(record.payload.data(), record.payload.size(), Workload::fill, sink) != i) {
      fail("single-thread ring: record %llu lost", static_cast<unsigned long long>(i));
    }
    if (consumer.release(record) != transports::ConsumeStatus::ok) fail("release");
  }
}

}  // namespace

Latency channel_rtt(const Settings& settings, std::chrono::nanoseconds spin_budget,
                    std::uint32_t size, SendWith send_with, ReceiveWith receive_with) {
  SessionPair pair(spin_budget);
  RawSide a(pair.a(), size, send_with, receive_with);
  RawSide b(pair.b(), size, send_with, receive_with);
  return ping_pong(settings, a, b);
}

Latency eventfd_rtt(const Settings& settings, bool through_epoll) {
  const UniqueFd to_b = blocking_eventfd();
  const UniqueFd to_a = blocking_eventfd();
  EpollWait a_wait(to_a.get());
  EpollWait b_wait(to_b.get());
  return round_trips(
      settings,
      [&](std::uint64_t) {
        post(to_b.get());
        if (through_epoll) {
          a_wait.wait();
        } else {
          take(to_a.get());
        }
      },
      [&](std::uint64_t) {
        if (through_epoll) {
          b_wait.wait();
        } else {
          take(to_b.get());
        }
        post(to_a.get());
      });
}

std::uint32_t sample_bytes(std::uint32_t temperatures) {
  capnp::MallocMessageBuilder builder;
  fill_sample(builder.initRoot<Sample>(), 0, temperatures);
  const auto segments = builder.getSegmentsForOutput();
  if (segments.size() != 1) fail("a test Sample took %zu segments", segments.size());
  return static_cast<std::uint32_t>(segments[0].size() * sizeof(capnp::word));
}

Latency sample_rtt(const Settings& settings, const CapnpCase& shape, Encoding encoding) {
  SessionPair pair(kSpinForever);
  SampleSide a(pair.a(), shape, encoding);
  SampleSide b(pair.b(), shape, encoding);
  return ping_pong(settings, a, b);
}

Cost single_thread_cost(const Settings& settings, std::uint32_t size) {
  const std::uint64_t messages = (settings.rtt_warmup + settings.rtt_samples) & ~std::uint64_t{1};
  Cost cost;
  {
    SessionPair pair(kSpinForever);
    RawSide a(pair.a(), size, SendWith::send, ReceiveWith::receive);
    RawSide b(pair.b(), size, SendWith::send, ReceiveWith::receive);
    single_thread_channel_loop(a, b, settings.rtt_warmup & ~std::uint64_t{1});
    const std::uint64_t begin = TickClock::now();
    single_thread_channel_loop(a, b, messages);
    cost.channel_ns = settings.clock.ns(TickClock::now() - begin) / static_cast<double>(messages);
    keep(a.sink() + b.sink());
  }
  RingMemory memory(kRttRingCapacity);
  transports::RingProducer producer;
  transports::RingConsumer<> consumer;
  memory.attach(producer, consumer);
  std::uint64_t sink = 0;
  single_thread_ring_loop(producer, consumer, size, settings.rtt_warmup, sink);
  const std::uint64_t begin = TickClock::now();
  single_thread_ring_loop(producer, consumer, size, messages, sink);
  cost.ring_ns = settings.clock.ns(TickClock::now() - begin) / static_cast<double>(messages);
  keep(sink);
  return cost;
}

double single_thread_sample_ns(const Settings& settings, const CapnpCase& shape,
                               Encoding encoding) {
  const std::uint64_t messages = (settings.rtt_warmup + settings.rtt_samples) & ~std::uint64_t{1};
  SessionPair pair(kSpinForever);
  SampleSide a(pair.a(), shape, encoding);
  SampleSide b(pair.b(), shape, encoding);
  single_thread_sample_loop(a, b, settings.rtt_warmup & ~std::uint64_t{1});
  const std::uint64_t begin = TickClock::now();
  single_thread_sample_loop(a, b, messages);
  const double ns = settings.clock.ns(TickClock::now() - begin) / static_cast<double>(messages);
  keep(a.sink() + b.sink());
  return ns;
}

}  // namespace cellink::bench
