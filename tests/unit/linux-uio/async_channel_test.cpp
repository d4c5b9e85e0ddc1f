// async_channel.hpp over in-process links (LoopbackLink): peer 0 sends on
// channel "async", peer 1 receives through an AsyncChannel, with callbacks,
// std::future and C++20 coroutines; and cancellation, destruction and close
// while operations are pending. Every wait runs the io_context until an
// event, with a deadline that fails the test.
#include "cellink/linux-uio/async_channel.hpp"

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <ctime>
#include <functional>
#include <future>
#include <iostream>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/use_future.hpp>
#include <gtest/gtest.h>

#include "cellink/linux-uio/channel.hpp"
#include "cellink/linux-uio/loopback_device.hpp"
#include "cellink/linux-uio/message_error.hpp"
#include "cellink/linux-uio/session.hpp"

namespace cellink::linux_uio {
namespace {

namespace asio = boost::asio;
using Clock = std::chrono::steady_clock;

// The longest any awaited event may take; under TSan too.
constexpr std::chrono::seconds kTimeout{20};

std::string text_of(const Message& message) {
  const std::span<const std::byte> bytes = message.payload();
  return {reinterpret_cast<const char*>(bytes.data()), bytes.size()};
}

// Runs `io` on this thread until done() holds. Fails loudly when the
// deadline passes or the io_context runs out of work first.
::testing::AssertionResult run_until(asio::io_context& io, const std::function<bool()>& done,
                                     std::chrono::nanoseconds timeout = kTimeout) {
  const Clock::time_point deadline = Clock::now() + timeout;
  io.restart();
  while (!done()) {
    if (Clock::now() >= deadline) {
      return ::testing::AssertionFailure()
             << "timed out after " << std::chrono::duration<double>(timeout).count() << " s";
    }
    if (io.run_one_until(deadline) == 0 && !done()) {
      if (io.stopped() && Clock::now() < deadline) {
        return ::testing::AssertionFailure()
               << "the io_context ran out of work before the event came";
      }
    }
  }
  return ::testing::AssertionSuccess();
}

// A receive's outcome, filled by its completion handler.
struct Received {
  bool done = false;
  std::error_code error;
  Message message;

  auto handler() {
    return [this](std::error_code received_error, Message received) {
      done = true;
      error = received_error;
      message = std::move(received);
    };
  }
};

// Two sessions on one in-process link, with channel `name` open on both.
struct LinkPair {
  explicit LinkPair(std::string_view name = "async", SessionOptions receiver_options = {})
      : receiver_session(link.device(1), receiver_options),
        sender(sender_session.open(name)),
        receiver(receiver_session.open(name)) {}

  ::testing::AssertionResult connect() {
    if (const std::error_code error = sender.wait_connected(kTimeout)) {
      return ::testing::AssertionFailure() << "sender: " << error.message();
    }
    if (const std::error_code error = receiver.wait_connected(kTimeout)) {
      return ::testing::AssertionFailure() << "receiver: " << error.message();
    }
    return ::testing::AssertionSuccess();
  }

  LoopbackLink link{2};
  Session sender_session{link.device(0)};
  Session receiver_session;
  Channel sender;
  Channel receiver;
};

class AsyncChannelTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(pair_.connect()); }

  void send(std::string_view text) { ASSERT_FALSE(pair_.sender.send(text, kTimeout)); }

  // Sends until even an 8-byte message finds no room; returns how many went.
  int fill_ring() {
    int queued = 0;
    for (const std::size_t size : {std::size_t{1024}, std::size_t{8}}) {
      const std::vector<std::byte> message(size, std::byte{0x5a});
      while (pair_.sender.send(message, kNoWait) == std::error_code{}) ++queued;
    }
    EXPECT_EQ(pair_.sender.send("12345678", kNoWait), MessageErrc::would_block);
    return queued;
  }

  asio::io_context io_;
  LinkPair pair_;
  AsyncChannel receiver_{io_, pair_.receiver};
};

TEST_F(AsyncChannelTest, CallbackGetsAMessageSentWhileTheReceiveWaits) {
  Received received;
  receiver_.async_receive(received.handler());
  io_.poll();  // the receive is now waiting on the event fd
  ASSERT_FALSE(received.done);

  send("hello");

  ASSERT_TRUE(run_until(io_, [&] { return received.done; }));
  EXPECT_FALSE(received.error) << received.error.message();
  EXPECT_EQ(text_of(received.message), "hello");
}

TEST_F(AsyncChannelTest, AReadyMessageCompletesOutsideTheInitiatingCall) {
  send("ready");
  Received received;

  receiver_.async_receive(received.handler());

  EXPECT_FALSE(received.done) << "the handler ran inside async_receive()";
  ASSERT_TRUE(run_until(io_, [&] { return received.done; }));
  EXPECT_EQ(text_of(received.message), "ready");
}

TEST_F(AsyncChannelTest, ReceivesInOrderWhenEachCallbackStartsTheNext) {
  constexpr int kMessages = 300;
  std::vector<std::string> texts;
  std::function<void(std::error_code, Message)> next = [&](std::error_code error, Message message) {
    ASSERT_FALSE(error) << error.message();
    texts.push_back(text_of(message));
    if (texts.size() < kMessages) receiver_.async_receive(next);
  };
  receiver_.async_receive(next);
  std::thread sender([&] {
    for (int n = 0; n < kMessages; ++n) {
      ASSERT_FALSE(pair_.sender.send("message " + std::to_string(n), kTimeout));
    }
  });

  const bool all = run_until(io_, [&] { return texts.size() == kMessages; });
  sender.join();
  ASSERT_TRUE(all);
  for (int n = 0; n < kMessages; ++n) EXPECT_EQ(texts[n], "message " + std::to_string(n));
}

TEST_F(AsyncChannelTest, UseFutureYieldsTheErrorCodeAndTheMessage) {
  auto work = asio::make_work_guard(io_);
  std::thread runner([&] { io_.run(); });

  std::future<std::tuple<std::error_code, Message>> result =
      receiver_.async_receive(asio::use_future);
  send("future");

  const std::future_status status = result.wait_for(kTimeout);
  work.reset();
  io_.stop();
  runner.join();
  ASSERT_EQ(status, std::future_status::ready);
  auto [error, message] = result.get();
  EXPECT_FALSE(error) << error.message();
  EXPECT_EQ(text_of(message), "future");
}

TEST_F(AsyncChannelTest, CoroutineReceivesAndSendsWithUseAwaitable) {
  LinkPair reverse("reply");
  ASSERT_TRUE(reverse.connect());
  AsyncChannel replies(io_, reverse.sender);
  std::vector<std::string> texts;
  std::error_code failure;
  bool finished = false;
  asio::co_spawn(
      io_,
      [&]() -> asio::awaitable<void> {
        for (int n = 0; n < 3; ++n) {
          auto [error, message] = co_await receiver_.async_receive(asio::use_awaitable);
          if (error) {
            failure = error;
            break;
          }
          texts.push_back(text_of(message));
          const std::string reply = "re: " + texts.back();
          const std::error_code sent = co_await replies.async_send(reply, asio::use_awaitable);
          if (sent) {
            failure = sent;
            break;
          }
        }
        finished = true;
      },
      asio::detached);
  io_.poll();

  for (const char* text : {"one", "two", "three"}) send(text);

  ASSERT_TRUE(run_until(io_, [&] { return finished; }));
  EXPECT_FALSE(failure) << failure.message();
  EXPECT_EQ(texts, (std::vector<std::string>{"one", "two", "three"}));
  for (const char* text : {"re: one", "re: two", "re: three"}) {
    Message reply = reverse.receiver.receive(kTimeout);
    ASSERT_TRUE(reply) << reply.error().message();
    EXPECT_EQ(text_of(reply), text);
  }
}

TEST_F(AsyncChannelTest, CancelCompletesAWaitingReceiveWithOperationAborted) {
  Received received;
  receiver_.async_receive(received.handler());
  io_.poll();

  receiver_.cancel();

  ASSERT_TRUE(run_until(io_, [&] { return received.done; }));
  EXPECT_EQ(received.error, operation_aborted()) << received.error.message();
  EXPECT_FALSE(received.message);
}

TEST_F(AsyncChannelTest, TheChannelIsUsableAgainAfterCancel) {
  Received cancelled;
  receiver_.async_receive(cancelled.handler());
  receiver_.cancel();
  ASSERT_TRUE(run_until(io_, [&] { return cancelled.done; }));

  Received received;
  receiver_.async_receive(received.handler());
  send("after cancel");

  ASSERT_TRUE(run_until(io_, [&] { return received.done; }));
  EXPECT_FALSE(received.error) << received.error.message();
  EXPECT_EQ(text_of(received.message), "after cancel");
}

TEST_F(AsyncChannelTest, CancelNeverDropsAMessageAlreadyTakenOffTheRing) {
  send("taken");
  Received received;
  receiver_.async_receive(received.handler());  // takes it; delivery is posted

  receiver_.cancel();

  ASSERT_TRUE(run_until(io_, [&] { return received.done; }));
  EXPECT_FALSE(received.error) << received.error.message();
  EXPECT_EQ(text_of(received.message), "taken");
}

TEST_F(AsyncChannelTest, CancelFromAnotherThreadMidStreamLosesNoMessage) {
  constexpr int kMessages = 2000;
  constexpr int kCancelEvery = 50;
  std::vector<int> received;
  int aborted = 0;
  std::error_code failure;
  std::function<void(std::error_code, Message)> next = [&](std::error_code error, Message message) {
    if (error == operation_aborted()) {
      ++aborted;
    } else if (error) {
      failure = error;
      return;
    } else {
      int n = -1;
      message.copy_out(std::as_writable_bytes(std::span{&n, 1}));
      received.push_back(n);
    }
    if (received.size() < kMessages) receiver_.async_receive(next);
  };
  receiver_.async_receive(next);
  std::thread sender([&] {
    for (int n = 0; n < kMessages; ++n) {
      ASSERT_FALSE(pair_.sender.send(std::as_bytes(std::span{&n, 1}), kTimeout));
      if (n % kCancelEvery == 0) receiver_.cancel();
    }
  });

  const bool all = run_until(io_, [&] { return received.size() == kMessages || failure; });
  sender.join();
  ASSERT_TRUE(all) << received.size() << " of " << kMessages << " received";
  EXPECT_FALSE(failure) << failure.message();
  for (int n = 0; n < kMessages; ++n) ASSERT_EQ(received[n], n);
  std::cout << "[   info   ] " << aborted << " receives aborted mid-stream\n";
}

TEST_F(AsyncChannelTest, DestroyingItWithAReceivePendingAbortsTheReceive) {
  auto doomed = std::make_unique<AsyncChannel>(io_, pair_.receiver);
  Received received;
  doomed->async_receive(received.handler());
  io_.poll();

  doomed.reset();

  ASSERT_TRUE(run_until(io_, [&] { return received.done; }));
  EXPECT_EQ(received.error, operation_aborted()) << received.error.message();
  send("still works");
  Message message = pair_.receiver.receive(kTimeout);
  ASSERT_TRUE(message) << message.error().message();
  EXPECT_EQ(text_of(message), "still works");
}

TEST_F(AsyncChannelTest, DestroyingAnOwningOneClosesItsChannel) {
  Channel extra = pair_.receiver_session.open("extra");
  Channel peer_side = pair_.sender_session.open("extra");
  ASSERT_FALSE(extra.wait_connected(kTimeout));
  auto owner = std::make_unique<AsyncChannel>(io_, std::move(extra));
  Received received;
  owner->async_receive(received.handler());
  io_.poll();

  owner.reset();

  ASSERT_TRUE(run_until(io_, [&] { return received.done; }));
  EXPECT_EQ(received.error, operation_aborted());
  // The name is free again: the Channel was closed, not just let go.
  EXPECT_NO_THROW((void)pair_.receiver_session.open("extra"));
}

TEST_F(AsyncChannelTest, OperationsAfterCloseFailWithShutDown) {
  receiver_.close();
  EXPECT_FALSE(receiver_.is_open());
  Received received;
  std::optional<std::error_code> sent;

  receiver_.async_receive(received.handler());
  receiver_.async_send("late", [&](std::error_code error) { sent = error; });

  ASSERT_TRUE(run_until(io_, [&] { return received.done && sent.has_value(); }));
  EXPECT_EQ(received.error, MessageErrc::shut_down);
  EXPECT_EQ(*sent, MessageErrc::shut_down);
}

TEST_F(AsyncChannelTest, AnEmptyChannelIsRefused) {
  Channel empty;
  EXPECT_THROW((void)std::make_unique<AsyncChannel>(io_, empty), std::invalid_argument);
  EXPECT_THROW((void)std::make_unique<AsyncChannel>(io_, Channel{}), std::invalid_argument);
}

TEST_F(AsyncChannelTest, AnInterruptTakenByAnotherUserIsRecoveredByTheSafetyPoll) {
  Received received;
  receiver_.async_receive(received.handler());
  io_.poll();
  send("stolen doorbell");
  // Another user of the Session drains its device events before the
  // io_context sees them: the wait's fd is no longer readable.
  (void)pair_.receiver_session.process_events();

  const Clock::time_point start = Clock::now();
  ASSERT_TRUE(run_until(io_, [&] { return received.done; }));
  EXPECT_EQ(text_of(received.message), "stolen doorbell");
  EXPECT_LT(Clock::now() - start, 10 * AsyncChannel::kSafetyPoll);
}

TEST_F(AsyncChannelTest, AsyncSendWaitsForRingSpace) {
  AsyncChannel sender(io_, pair_.sender);
  const int queued = fill_ring();
  const std::string last = "the one that waited";
  std::optional<std::error_code> sent;

  sender.async_send(last, [&](std::error_code error) { sent = error; });
  io_.poll();
  EXPECT_FALSE(sent.has_value()) << "sent into a full ring: " << sent->message();
  for (int n = 0; n < queued; ++n) {
    Message message = pair_.receiver.receive(kTimeout);
    ASSERT_TRUE(message) << message.error().message();
  }

  ASSERT_TRUE(run_until(io_, [&] { return sent.has_value(); }));
  EXPECT_FALSE(*sent) << sent->message();
  Message message = pair_.receiver.receive(kTimeout);
  ASSERT_TRUE(message) << message.error().message();
  EXPECT_EQ(text_of(message), last);
}

TEST_F(AsyncChannelTest, AsyncSendWaitsForThePeerToOpenTheChannel) {
  Channel early = pair_.sender_session.open("late-opener");
  AsyncChannel sender(io_, early);
  std::optional<std::error_code> sent;
  sender.async_send("first", [&](std::error_code error) { sent = error; });
  io_.poll();
  EXPECT_FALSE(sent.has_value());

  Channel late = pair_.receiver_session.open("late-opener");

  ASSERT_TRUE(run_until(io_, [&] { return sent.has_value(); }));
  EXPECT_FALSE(*sent) << sent->message();
  Message message = late.receive(kTimeout);
  ASSERT_TRUE(message) << message.error().message();
  EXPECT_EQ(text_of(message), "first");
}

TEST_F(AsyncChannelTest, CancelAbortsASendWaitingForSpaceAndSendsNothing) {
  AsyncChannel sender(io_, pair_.sender);
  const int queued = fill_ring();
  std::optional<std::error_code> sent;
  sender.async_send("never", [&](std::error_code error) { sent = error; });
  io_.poll();

  sender.cancel();

  ASSERT_TRUE(run_until(io_, [&] { return sent.has_value(); }));
  EXPECT_EQ(*sent, operation_aborted());
  for (int n = 0; n < queued; ++n) ASSERT_TRUE(pair_.receiver.receive(kTimeout));
  EXPECT_EQ(pair_.receiver.try_receive().error(), MessageErrc::would_block);
}

// Credits replaced the per-peer back-pressure: a channel nobody reads fills
// only its own window, so a receive on another channel of the same peer is
// not held back, and it waits without spinning until its message comes.
TEST(AsyncChannelBackPressure, AReceiveIsNotHeldBackByAnUnreadChannelAndWaitsWithoutSpinning) {
  SessionOptions options;
  options.credit_window = 256;
  LinkPair pair("unread", options);
  ASSERT_TRUE(pair.connect());
  Channel other_out = pair.sender_session.open("wanted");
  Channel wanted = pair.receiver_session.open("wanted");
  ASSERT_FALSE(other_out.wait_connected(kTimeout));
  // "unread" fills its window and then would block.
  int held_back = 0;
  while (!pair.sender.send("unread", kNoWait)) ++held_back;
  ASSERT_GT(held_back, 0);
  EXPECT_EQ(pair.sender.send("unread", kNoWait), MessageErrc::would_block);
  asio::io_context io;
  AsyncChannel receiver(io, wanted);
  Received received;
  receiver.async_receive(received.handler());

  timespec cpu_before{};
  ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &cpu_before);
  io.run_for(std::chrono::milliseconds{200});
  timespec cpu_after{};
  ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &cpu_after);
  const double cpu_ms = static_cast<double>(cpu_after.tv_sec - cpu_before.tv_sec) * 1e3 +
                        static_cast<double>(cpu_after.tv_nsec - cpu_before.tv_nsec) / 1e6;
  EXPECT_FALSE(received.done);
  EXPECT_LT(cpu_ms, 100.0) << "the waiting receive spun for 200 ms";

  ASSERT_FALSE(other_out.send("wanted", kTimeout)) << "the unread channel stalled its sibling";
  ASSERT_TRUE(run_until(io, [&] { return received.done; }));
  EXPECT_FALSE(received.error) << received.error.message();
  EXPECT_EQ(text_of(received.message), "wanted");
  for (int n = 0; n < held_back; ++n) ASSERT_TRUE(pair.receiver.receive(kTimeout));
}

// Echo between the two ends of a link, both AsyncChannels: the sender checks
// that reply n carries n.
class EchoLoop {
 public:
  EchoLoop(
      asio::io_context& io, LinkPair& pair, int round_trips,
      std::function<void()> on_finished = [] {})
      : pinger_(io, pair.sender),
        ponger_(io, pair.receiver),
        round_trips_(round_trips),
        on_finished_(std::move(on_finished)) {}

  void start() {
    receive_echo_request();
    send_ping();
  }
  [[nodiscard]] bool finished() const { return finish_signalled_; }
  [[nodiscard]] int completed() const { return completed_; }
  [[nodiscard]] std::string failure() const {
    const std::lock_guard lock(failure_mutex_);
    return failure_text_;
  }

 private:
  // The ping and the pong chains may fail on two threads at once.
  void fail(const std::string& what) {
    {
      const std::lock_guard lock(failure_mutex_);
      if (!failure_text_.empty()) return;
      failure_text_ = what;
    }
    finish();
  }
  void finish() {
    if (!finish_signalled_.exchange(true)) on_finished_();
  }
  void send_ping() {
    std::memcpy(ping_.data(), &completed_, sizeof completed_);
    pinger_.async_send(std::span<const std::byte>(ping_), [this](std::error_code error) {
      if (error) return fail("ping send: " + error.message());
      pinger_.async_receive([this](std::error_code receive_error, Message reply) {
        if (receive_error) return fail("reply: " + receive_error.message());
        int n = -1;
        reply.copy_out(std::as_writable_bytes(std::span{&n, 1}));
        if (n != completed_) return fail("reply " + std::to_string(n) + " out of order");
        if (++completed_ < round_trips_) return send_ping();
        finish();
      });
    });
  }
  void receive_echo_request() {
    ponger_.async_receive([this](std::error_code error, Message request) {
      if (error) return fail("pong receive: " + error.message());
      echo_ = request.copy();
      request.release();
      ponger_.async_send(std::span<const std::byte>(echo_), [this](std::error_code send_error) {
        if (send_error) return fail("pong send: " + send_error.message());
        receive_echo_request();
      });
    });
  }

  AsyncChannel pinger_;
  AsyncChannel ponger_;
  int round_trips_;
  std::function<void()> on_finished_;
  int completed_ = 0;  // the ping chain's
  std::atomic<bool> finish_signalled_{false};
  mutable std::mutex failure_mutex_;
  std::string failure_text_;  // guarded by failure_mutex_
  std::array<std::byte, 32> ping_{};
  std::vector<std::byte> echo_;
};

TEST(AsyncChannelIoContext, OneIoContextServesChannelsOfTwoSessionsAtOnce) {
  constexpr int kRoundTrips = 1000;
  asio::io_context io;
  LinkPair first;
  LinkPair second;
  ASSERT_TRUE(first.connect());
  ASSERT_TRUE(second.connect());
  EchoLoop one(io, first, kRoundTrips);
  EchoLoop two(io, second, kRoundTrips);

  one.start();
  two.start();

  ASSERT_TRUE(run_until(io, [&] { return one.finished() && two.finished(); }));
  EXPECT_EQ(one.failure(), "");
  EXPECT_EQ(two.failure(), "");
  EXPECT_EQ(one.completed(), kRoundTrips);
  EXPECT_EQ(two.completed(), kRoundTrips);
}

TEST(AsyncChannelIoContext, RoundTripsOnATwoThreadIoContextNeverStall) {
  constexpr int kRoundTrips = 1000;
  asio::io_context io;
  LinkPair pair;
  ASSERT_TRUE(pair.connect());
  std::promise<void> finished;
  EchoLoop loop(io, pair, kRoundTrips, [&] { finished.set_value(); });
  auto work = asio::make_work_guard(io);
  asio::post(io, [&] { loop.start(); });
  std::thread first([&] { io.run(); });
  std::thread second([&] { io.run(); });

  const std::future_status status = finished.get_future().wait_for(kTimeout);
  work.reset();
  io.stop();
  first.join();
  second.join();
  ASSERT_EQ(status, std::future_status::ready)
      << "stalled after " << loop.completed() << " round trips";
  EXPECT_EQ(loop.failure(), "");
  EXPECT_EQ(loop.completed(), kRoundTrips);
}

}  // namespace
}  // namespace cellink::linux_uio
