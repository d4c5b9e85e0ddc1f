// Multi-thread stress of the record ring (docs/ring.md): a producer thread and
// a consumer thread on one ring in plain memory, every payload checked.
//
// - A consumer that sleeps on an eventfd whenever the ring is empty never
//   misses a wake-up (the F1/F2 event-index pair).
// - A pinned polling pair with out-of-order release delivers every payload,
//   and a held record is never overwritten (R2/A2).
// - A concurrent mutator scribbling over the producer's area never makes the
//   consumer hand out a span outside the data area (the hostile-peer checks).
//
// Messages: 10,000,000 (wake-up) and 2,000,000 (polling); 200,000 each under
// TSan; CELLINK_RING_STRESS_MESSAGES overrides both.
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <mutex>
#include <random>
#include <span>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "aligned_section.hpp"
#include "cellink/transports/ring_consumer.hpp"
#include "cellink/transports/ring_format.hpp"
#include "cellink/transports/ring_producer.hpp"

#if defined(__SANITIZE_THREAD__)
#define CELLINK_UNDER_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define CELLINK_UNDER_TSAN 1
#endif
#endif

namespace cellink::transports {
namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

#ifdef CELLINK_UNDER_TSAN
constexpr bool kUnderTsan = true;
#else
constexpr bool kUnderTsan = false;
#endif

// CELLINK_RING_STRESS_MESSAGES, else `usual` (200,000 under TSan, whose
// threads run some 10x slower).
std::uint64_t message_count(std::uint64_t usual) {
  if (const char* text = std::getenv("CELLINK_RING_STRESS_MESSAGES")) {
    return std::strtoull(text, nullptr, 10);
  }
  return kUnderTsan ? 200'000 : usual;
}

using Section = test_support::AlignedSection;

// Both areas of one ring, and the shared words as a debugger would read them.
struct SharedRing {
  explicit SharedRing(std::uint64_t capacity)
      : producer_section(kProducerAreaOverhead + capacity), consumer_section(kConsumerAreaSize) {}
  std::uint64_t load(std::size_t offset, Section& section) {
    auto& word = *reinterpret_cast<std::uint64_t*>(section.bytes().data() + offset);
    return std::atomic_ref<std::uint64_t>(word).load(std::memory_order_acquire);
  }
  std::uint64_t produced() { return load(offsetof(ProducerArea, produced), producer_section); }
  std::uint64_t wake_after() { return load(offsetof(ConsumerArea, wake_after), consumer_section); }
  Section producer_section;
  Section consumer_section;
};

// Every payload: a stamp naming it, then bytes from a fixed random table.
struct Stamp {
  std::uint64_t sequence;
  std::uint32_t size;
  std::uint32_t check;
};
static_assert(sizeof(Stamp) == 16 && std::is_trivially_copyable_v<Stamp>);
constexpr std::uint32_t stamp_check(std::uint64_t sequence, std::uint32_t size) {
  return static_cast<std::uint32_t>((sequence * 0x2545f4914f6cdd1dULL) >> 32) ^ size;
}
std::span<const std::byte> pattern(std::uint64_t sequence, std::size_t size) {
  static const std::array<std::byte, 1U << 16> table = [] {
    std::array<std::byte, 1U << 16> bytes{};
    std::mt19937 random(0x53545253);
    for (std::byte& byte : bytes) byte = static_cast<std::byte>(random());
    return bytes;
  }();
  return std::span<const std::byte>(table).subspan(sequence * 977 % (table.size() / 2), size);
}
void write_payload(std::span<std::byte> payload, std::uint64_t sequence) {
  const auto size = static_cast<std::uint32_t>(payload.size());
  const Stamp stamp{sequence, size, stamp_check(sequence, size)};
  std::memcpy(payload.data(), &stamp, sizeof(stamp));
  const auto rest = pattern(sequence, payload.size() - sizeof(stamp));
  std::memcpy(payload.data() + sizeof(stamp), rest.data(), rest.size());
}
// Empty when `record` is message `sequence` intact, else what is wrong.
std::string check_payload(const Record& record, std::uint64_t sequence) {
  std::ostringstream problem;
  Stamp stamp{};
  if (record.payload.size() < sizeof(stamp)) {
    problem << "message " << sequence << ": " << record.payload.size() << "-byte payload";
    return problem.str();
  }
  std::memcpy(&stamp, record.payload.data(), sizeof(stamp));
  const auto rest = pattern(sequence, record.payload.size() - sizeof(stamp));
  const bool check_ok = stamp.check == stamp_check(stamp.sequence, stamp.size);
  const bool bytes_ok =
      std::memcmp(record.payload.data() + sizeof(stamp), rest.data(), rest.size()) == 0;
  if (stamp.sequence != sequence || stamp.size != record.payload.size() || !check_ok || !bytes_ok ||
      record.channel != static_cast<std::uint16_t>(sequence)) {
    problem << "message " << sequence << ": got sequence " << stamp.sequence << ", size "
            << stamp.size << " in a " << record.payload.size() << "-byte payload, channel "
            << record.channel << ", stamp check " << (check_ok ? "ok" : "bad") << ", bytes "
            << (bytes_ok ? "ok" : "differ");
  }
  return problem.str();
}

std::uint32_t random_size(std::mt19937_64& random, std::uint64_t capacity) {
  if (random() % 64 == 0)
    return static_cast<std::uint32_t>(16 + random() % (max_payload(capacity) - 15));
  return static_cast<std::uint32_t>(16 + random() % 240);
}

// The first failure any thread reports; it also tells the other threads to stop.
class Failure {
 public:
  void report(const std::string& message) {
    const std::lock_guard lock(mutex_);  // orders concurrent reports; guards message_
    if (message_.empty()) message_ = message;
    stopped_.store(true, std::memory_order_relaxed);
  }
  [[nodiscard]] bool stopped() const { return stopped_.load(std::memory_order_relaxed); }
  [[nodiscard]] std::string message() {
    const std::lock_guard lock(mutex_);  // guards message_
    return message_;
  }

 private:
  std::mutex mutex_;
  std::string message_;
  std::atomic<bool> stopped_{false};
};

// Busy for up to `most` nanoseconds: the producer being slow, without sleeping.
void dawdle(std::mt19937_64& random, std::uint64_t most) {
  const auto until = Clock::now() + std::chrono::nanoseconds(random() % most);
  while (Clock::now() < until) {
  }
}

// Writes `count` messages; waits (spinning, then yielding) while the ring is
// full, and fails loudly if the consumer makes no room for 10 s.
struct ProducerLoop {
  RingProducer& producer;
  std::uint64_t capacity;
  std::uint64_t count;
  std::uint64_t seed;
  Failure& failure;
  int doorbell_fd = -1;  // written when publish() asks for a doorbell; -1: polling
  std::uint64_t doorbells = 0;
  bool slow = false;  // pauses now and then, and in stretches after every batch

  void publish() {
    if (!producer.publish()) return;
    ++doorbells;
    const std::uint64_t one = 1;
    if (doorbell_fd >= 0 && write(doorbell_fd, &one, sizeof(one)) != sizeof(one)) {
      failure.report("eventfd write failed: " + std::string(std::strerror(errno)));
    }
  }

  void run() {
    std::mt19937_64 random(seed);
    bool trickle = false;  // a stretch in which the consumer keeps catching up and sleeping
    for (std::uint64_t sequence = 0, batches = 0; sequence < count && !failure.stopped();
         ++batches) {
      const std::uint64_t batch = random() % 4 == 0 ? 1 + random() % 16 : 1;
      for (std::uint64_t i = 0; i < batch && sequence < count; ++i, ++sequence) {
        RingProducer::Reservation reservation;
        const std::uint32_t size = random_size(random, capacity);
        const auto channel = static_cast<std::uint16_t>(sequence);
        ProduceStatus status = producer.reserve(size, channel, reservation);
        if (status == ProduceStatus::full) publish();  // let the consumer drain the batch
        for (auto since = Clock::now(); status == ProduceStatus::full;) {
          if (failure.stopped()) return;
          if (Clock::now() - since > 10s) {
            failure.report("producer starved: ring full for 10 s at message " +
                           std::to_string(sequence));
            return;
          }
          std::this_thread::yield();
          status = producer.reserve(size, channel, reservation);
        }
        if (status != ProduceStatus::ok) {
          failure.report("reserve: status " + std::to_string(static_cast<int>(status)) + ", " +
                         describe(producer.diagnostic().error));
          return;
        }
        write_payload(reservation.payload, sequence);
        if (producer.commit(reservation, size) != ProduceStatus::ok) {
          failure.report("commit failed at message " + std::to_string(sequence));
          return;
        }
      }
      publish();
      if (!slow) continue;
      if (batches % 512 == 0) trickle = random() % 4 == 0;
      if (trickle || random() % 64 == 0) dawdle(random, trickle ? 4'000 : 20'000);
      if (random() % 1024 == 0) std::this_thread::yield();
    }
  }
};

// ---------------------------------------------------------------- lost wake-ups

TEST(RingStress, ConsumerThatSleepsWheneverEmptyNeverMissesAWakeUp) {
  constexpr std::uint64_t kCapacity = 8192;
  const std::uint64_t count = message_count(10'000'000);
  SharedRing ring(kCapacity);
  RingProducer producer;
  RingConsumer<> consumer;
  ASSERT_TRUE(producer.init(ring.producer_section.bytes(), ring.consumer_section.bytes()));
  ASSERT_TRUE(consumer.init(ring.producer_section.bytes(), ring.consumer_section.bytes()));
  const int doorbell = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  ASSERT_GE(doorbell, 0) << std::strerror(errno);

  Failure failure;
  ProducerLoop producer_loop{producer, kCapacity, count, 0x57414b45, failure, doorbell, 0, true};
  std::uint64_t received = 0, sleeps = 0, wakeups = 0, arming_races = 0;
  const auto start = Clock::now();
  std::thread producer_thread([&] { producer_loop.run(); });
  std::thread consumer_thread([&] {
    std::uint64_t drained = 0;
    while (received < count && !failure.stopped()) {
      Record record;
      const ConsumeStatus status = consumer.peek(record);
      if (status == ConsumeStatus::ok) {
        if (const std::string problem = check_payload(record, received); !problem.empty()) {
          return failure.report(problem);
        }
        (void)consumer.release(record);
        ++received;
        continue;
      }
      if (status != ConsumeStatus::empty) {
        return failure.report(std::string("peek: ") + describe(consumer.diagnostic().error));
      }
      // Drop doorbells meant for an earlier arming, so a lost one cannot hide.
      while (read(doorbell, &drained, sizeof(drained)) == sizeof(drained)) {
      }
      if (!consumer.arm_wakeup()) {  // a record arrived meanwhile
        ++arming_races;
        continue;
      }
      ++sleeps;
      pollfd wait{doorbell, POLLIN, 0};
      const int ready = poll(&wait, 1, 5000);
      if (ready == 0) {
        std::ostringstream message;
        message << "lost wake-up: asleep 5 s with " << received << " of " << count
                << " messages received; produced " << ring.produced() << ", consumer read index "
                << consumer.consumed() << ", wake_after " << ring.wake_after();
        return failure.report(message.str());
      }
      if (ready < 0 && errno != EINTR) return failure.report(std::strerror(errno));
      if (ready > 0) ++wakeups;
    }
  });
  producer_thread.join();
  consumer_thread.join();
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  close(doorbell);

  ASSERT_EQ(failure.message(), "");
  EXPECT_EQ(received, count);
  EXPECT_EQ(ring.produced(), producer.published());
  EXPECT_LE(wakeups, producer_loop.doorbells) << "every wake-up was a doorbell";
  RecordProperty("messages", std::to_string(received));
  RecordProperty("sleeps", std::to_string(sleeps));
  RecordProperty("wakeups", std::to_string(wakeups));
  RecordProperty("doorbells", std::to_string(producer_loop.doorbells));
  RecordProperty("arming_races", std::to_string(arming_races));
  std::cout << "lost-wake-up stress: " << received << " messages in " << seconds << " s, " << sleeps
            << " sleeps, " << wakeups << " wake-ups, " << producer_loop.doorbells
            << " doorbells rung, " << arming_races << " armings that found a record\n";
}

// ---------------------------------------------------------------- polling

// Pins the calling thread to the `index`th CPU it may run on; false if none.
bool pin_to_cpu(int index) {
  cpu_set_t allowed;
  if (sched_getaffinity(0, sizeof(allowed), &allowed) != 0) return false;
  for (int cpu = 0, seen = 0; cpu < CPU_SETSIZE; ++cpu) {
    if (!CPU_ISSET(cpu, &allowed) || seen++ != index) continue;
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(cpu, &one);
    return pthread_setaffinity_np(pthread_self(), sizeof(one), &one) == 0;
  }
  return false;
}

TEST(RingStress, PinnedPollingPairWithOutOfOrderReleaseDeliversEveryPayloadIntact) {
  constexpr std::uint64_t kCapacity = 16384;
  constexpr std::size_t kMaxHeld = 16;
  const std::uint64_t count = message_count(2'000'000);
  SharedRing ring(kCapacity);
  RingProducer producer;
  RingConsumer<kMaxHeld> consumer;
  ASSERT_TRUE(producer.init(ring.producer_section.bytes(), ring.consumer_section.bytes()));
  ASSERT_TRUE(consumer.init(ring.producer_section.bytes(), ring.consumer_section.bytes()));

  Failure failure;
  ProducerLoop producer_loop{producer, kCapacity, count, 0x504f4c4c, failure, -1, 0, false};
  std::uint64_t received = 0, held_most = 0, out_of_order = 0, window_full = 0;
  std::atomic<int> pinned{0};
  const auto start = Clock::now();
  std::thread producer_thread([&] {
    pinned += pin_to_cpu(0) ? 1 : 0;
    producer_loop.run();
  });
  std::thread consumer_thread([&] {
    pinned += pin_to_cpu(1) ? 1 : 0;
    std::mt19937_64 random(0x484f4c44);
    struct Held {
      Record record;
      std::uint64_t sequence;
    };
    std::vector<Held> held;
    auto release_one = [&] {
      const std::size_t pick = random() % held.size();
      // Still intact: the producer has not reused a held record's space.
      if (std::string problem = check_payload(held[pick].record, held[pick].sequence);
          !problem.empty()) {
        failure.report("held record overwritten: " + problem);
      }
      out_of_order += pick != 0 ? 1 : 0;
      (void)consumer.release(held[pick].record);
      held.erase(held.begin() + static_cast<std::ptrdiff_t>(pick));
    };
    auto progress = Clock::now();
    while ((received < count || !held.empty()) && !failure.stopped()) {
      Record record;
      const ConsumeStatus status =
          received < count ? consumer.peek(record) : ConsumeStatus::too_many_held;
      if (status == ConsumeStatus::ok) {
        if (const std::string problem = check_payload(record, received); !problem.empty()) {
          return failure.report(problem);
        }
        held.push_back({record, received++});
        held_most = std::max<std::uint64_t>(held_most, held.size());
        progress = Clock::now();
        if (random() % 2 == 0) release_one();
      } else if (status == ConsumeStatus::too_many_held) {
        window_full += received < count ? 1 : 0;
        release_one();
      } else if (status != ConsumeStatus::empty) {
        return failure.report(std::string("peek: ") + describe(consumer.diagnostic().error));
      } else if (!held.empty() && random() % 4 == 0) {
        release_one();
      } else if (Clock::now() - progress > 10s) {
        return failure.report("consumer starved: ring empty for 10 s after " +
                              std::to_string(received) + " messages, produced " +
                              std::to_string(ring.produced()));
      }
    }
  });
  producer_thread.join();
  consumer_thread.join();
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();

  ASSERT_EQ(failure.message(), "");
  EXPECT_EQ(received, count);
  EXPECT_EQ(consumer.consumed(), producer.published());
  EXPECT_EQ(producer_loop.doorbells, 0U) << "a polling consumer never asks for a doorbell";
  EXPECT_GT(window_full, 0U) << "the consumer never held as many records as it may";
  EXPECT_GT(out_of_order, 0U);
  RecordProperty("messages", std::to_string(received));
  RecordProperty("out_of_order_releases", std::to_string(out_of_order));
  std::cout << "polling stress: " << received << " messages in " << seconds << " s, "
            << out_of_order << " out-of-order releases, " << window_full
            << " peeks at too_many_held, at most " << held_most << " held, " << pinned.load()
            << " of 2 threads pinned\n";
}

// ---------------------------------------------------------------- mutator

TEST(RingStress, ConcurrentMutatorNeverMakesTheConsumerReadOutsideTheDataArea) {
  if (kUnderTsan) {
    GTEST_SKIP() << "the consumer's payload reads are plain reads of bytes the mutator "
                    "writes: a race by design, which TSan would report";
  }
  constexpr std::uint64_t kCapacity = 1024;
  constexpr std::uint64_t kPeeks = 4'000'000;
  SharedRing ring(kCapacity);
  const std::span<std::byte> area = ring.producer_section.bytes();
  const std::byte* const data = area.data() + kProducerAreaOverhead;

  std::atomic<bool> done{false};
  std::uint64_t flips = 0;
  std::thread mutator_thread([&] {
    std::mt19937_64 random(0x4d555441);
    auto& consumed = *reinterpret_cast<std::uint64_t*>(ring.consumer_section.bytes().data());
    while (!done.load(std::memory_order_relaxed)) {
      // Anywhere; or `produced`; or the next 256 bytes the consumer will read.
      const std::uint64_t next = std::atomic_ref(consumed).load(std::memory_order_relaxed);
      const std::uint64_t choice = random() % 4;
      const std::size_t offset =
          choice == 0   ? random() % area.size()
          : choice == 1 ? offsetof(ProducerArea, produced) + random() % 8
                        : kProducerAreaOverhead + ((next + random() % 256) & (kCapacity - 1));
      // Relaxed atomic stores: a hostile peer, but not a C++ data race.
      std::atomic_ref<std::byte> byte(area[offset]);
      byte.store(byte.load(std::memory_order_relaxed) ^ static_cast<std::byte>(1 + random() % 255),
                 std::memory_order_relaxed);
      ++flips;
      dawdle(random, 10'000);
    }
  });
  struct StopOnExit {  // joins the mutator even when an ASSERT returns early
    std::atomic<bool>& done;
    std::thread& thread;
    ~StopOnExit() {
      done.store(true, std::memory_order_relaxed);
      if (thread.joinable()) thread.join();
    }
  } stop_mutator{done, mutator_thread};

  std::mt19937_64 random(0x52454144);
  std::uint64_t peeks = 0, records = 0, garbage = 0, rounds = 0, not_ready = 0;
  std::uint64_t producer_breaks = 0;
  std::array<std::uint64_t, 16> breaks{};
  const auto deadline = Clock::now() + 2s;
  while (peeks < kPeeks && Clock::now() < deadline && !::testing::Test::HasFailure()) {
    ++rounds;
    RingProducer producer;
    RingConsumer<8> consumer;
    ASSERT_TRUE(producer.init(area, ring.consumer_section.bytes()));
    ASSERT_TRUE(consumer.init(area, ring.consumer_section.bytes()));
    std::vector<Record> held;
    std::uint64_t sequence = 0, expected = 0;
    for (int streak = 0; peeks < kPeeks && streak < 3 && Clock::now() < deadline; ++peeks) {
      if (producer.broken()) {  // the consumer trusted a mutated `produced` and said so
        ++producer_breaks;
        break;
      }
      Record record;
      const ConsumeStatus status = consumer.peek(record);
      if (status == ConsumeStatus::ok) {
        ++records;
        const auto begin = reinterpret_cast<std::uintptr_t>(record.payload.data());
        ASSERT_GE(begin, reinterpret_cast<std::uintptr_t>(data));
        ASSERT_LE(begin - reinterpret_cast<std::uintptr_t>(data) + record.payload.size(), kCapacity)
            << "payload span leaves the data area";
        garbage += check_payload(record, expected++).empty() ? 0 : 1;
        std::array<std::byte, 64> copy{};
        (void)RingConsumer<8>::copy_out(record, copy);
        held.push_back(record);
        if (held.size() < 4 && random() % 2 == 0) continue;
      } else if (status == ConsumeStatus::empty) {
        for (int i = 0; i < 4 && !producer.broken(); ++i, ++sequence) {
          const auto size = static_cast<std::uint32_t>(16 + random() % 64);
          RingProducer::Reservation reservation;
          if (producer.reserve(size, static_cast<std::uint16_t>(sequence), reservation) !=
              ProduceStatus::ok) {
            break;
          }
          write_payload(reservation.payload, sequence);
          (void)producer.commit(reservation, size);
        }
        (void)producer.publish();
        if (random() % 8 == 0) (void)consumer.arm_wakeup();
      } else if (status == ConsumeStatus::not_ready) {
        ++not_ready;
        ++streak;  // the magic was hit before we attached: start a new round
      } else if (status == ConsumeStatus::broken) {
        ++breaks[static_cast<std::size_t>(consumer.diagnostic().error)];
        const RingDiagnostic diagnostic = consumer.diagnostic();
        for (int i = 0; i < 100; ++i, ++peeks) {
          ASSERT_EQ(consumer.peek(record), ConsumeStatus::broken) << "broken must be sticky";
          ASSERT_FALSE(consumer.arm_wakeup());
        }
        ASSERT_EQ(consumer.diagnostic().error, diagnostic.error);
        break;
      } else {
        ASSERT_EQ(status, ConsumeStatus::too_many_held);
      }
      std::shuffle(held.begin(), held.end(), random);
      for (const Record& release : held) (void)consumer.release(release);
      held.clear();
    }
  }
  done.store(true, std::memory_order_relaxed);
  mutator_thread.join();

  std::uint64_t broken_rounds = 0;
  std::ostringstream by_error;
  for (std::size_t error = 1; error < breaks.size(); ++error) {
    broken_rounds += breaks[error];
    if (breaks[error] != 0) {
      by_error << " " << describe(static_cast<RingError>(error)) << ": " << breaks[error] << ";";
    }
  }
  EXPECT_GT(records, 0U);
  EXPECT_GT(broken_rounds, 0U) << "the mutator never broke the ring: it is too gentle";
  RecordProperty("peeks", std::to_string(peeks));
  RecordProperty("broken_rounds", std::to_string(broken_rounds));
  RecordProperty("garbage_records", std::to_string(garbage));
  std::cout << "mutator stress: " << flips << " flips, " << rounds << " rounds, " << peeks
            << " peeks, " << records << " records (" << garbage << " garbage), " << broken_rounds
            << " broken rounds," << by_error.str() << " " << producer_breaks
            << " rounds ended by a broken producer, " << not_ready << " not-ready peeks\n";
}

}  // namespace
}  // namespace cellink::transports
