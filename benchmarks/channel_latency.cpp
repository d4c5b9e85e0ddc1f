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
#include "channel_sides.hpp"
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
                    std::uint32_t size, SendWith send_with, ReceiveWith receive_with,
                    std::uint64_t output_section, linux_uio::Threading threading) {
  SessionPair pair(spin_budget, output_section, threading);
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
  // A first segment large enough for the whole Sample (a float list packs
  // two elements per word), so that it takes one segment at any size.
  capnp::MallocMessageBuilder builder(std::max<unsigned>(1024, temperatures / 2 + 64));
  fill_sample(builder.initRoot<Sample>(), 0, temperatures);
  const auto segments = builder.getSegmentsForOutput();
  if (segments.size() != 1) fail("a test Sample took %zu segments", segments.size());
  return static_cast<std::uint32_t>(segments[0].size() * sizeof(capnp::word));
}

Latency sample_rtt(const Settings& settings, const CapnpCase& shape, Encoding encoding,
                   std::chrono::nanoseconds spin_budget, std::uint64_t output_section) {
  SessionPair pair(spin_budget, output_section);
  SampleSide a(pair.a(), shape, encoding);
  SampleSide b(pair.b(), shape, encoding);
  return ping_pong(settings, a, b);
}

Cost single_thread_cost(const Settings& settings, std::uint32_t size,
                        linux_uio::Threading threading) {
  const std::uint64_t messages = (settings.rtt_warmup + settings.rtt_samples) & ~std::uint64_t{1};
  Cost cost;
  {
    SessionPair pair(kSpinForever, kChannelOutputSection, threading);
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
