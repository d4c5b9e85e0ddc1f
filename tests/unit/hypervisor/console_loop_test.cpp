// ConsoleLoop: fd watches, timers, post() and stop() across threads.
#include "cellink/hypervisor/console_loop.hpp"

#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <thread>

#include <gtest/gtest.h>

namespace cellink::hypervisor {
namespace {

using namespace std::chrono_literals;

TEST(ConsoleLoop, ATimerCancelledFromItsOwnTaskNeverRunsAgain) {
  ConsoleLoop loop;
  int runs = 0;
  int timer = -1;
  timer = loop.every(2ms, [&] {
    if (++runs == 3) loop.cancel(timer);
  });
  // Stop well after the timer would have run many more times.
  loop.every(60ms, [&] { loop.stop(); });
  loop.run();
  EXPECT_EQ(runs, 3);
}

TEST(ConsoleLoop, AnFdUnwatchedEarlierInTheSameRoundIsNotDelivered) {
  ConsoleLoop loop;
  linux_uio::UniqueFd first(::eventfd(1, EFD_NONBLOCK | EFD_CLOEXEC));
  linux_uio::UniqueFd second(::eventfd(1, EFD_NONBLOCK | EFD_CLOEXEC));
  int calls = 0;
  // Whichever runs first unwatches the other: only one may be called.
  loop.watch(first.get(), EPOLLIN, [&](std::uint32_t) {
    ++calls;
    loop.unwatch(first.get());
    loop.unwatch(second.get());
  });
  loop.watch(second.get(), EPOLLIN, [&](std::uint32_t) {
    ++calls;
    loop.unwatch(first.get());
    loop.unwatch(second.get());
  });
  loop.every(30ms, [&] { loop.stop(); });
  loop.run();
  EXPECT_EQ(calls, 1);
}

TEST(ConsoleLoop, PostAndStopWorkFromAnotherThread) {
  ConsoleLoop loop;
  std::atomic<int> ran{0};
  std::thread other([&] {
    for (int i = 0; i < 100; ++i) loop.post([&] { ++ran; });
    loop.post([&] { loop.stop(); });
  });
  loop.run();
  other.join();
  EXPECT_EQ(ran.load(), 100);
}

}  // namespace
}  // namespace cellink::hypervisor
