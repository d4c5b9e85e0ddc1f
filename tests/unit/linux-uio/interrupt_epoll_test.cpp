// InterruptEpoll (interrupt_epoll.hpp): the sleep of UioDevice and
// VfioDevice, on real eventfds standing in for their interrupt fds.
#include "cellink/linux-uio/interrupt_epoll.hpp"

#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <limits>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "cellink/linux-uio/unique_fd.hpp"

namespace cellink::linux_uio {
namespace {

using std::chrono::milliseconds;

UniqueFd make_eventfd() {
  UniqueFd fd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  EXPECT_TRUE(fd);
  return fd;
}

void signal(const UniqueFd& fd, std::uint64_t count = 1) {
  ASSERT_EQ(::write(fd.get(), &count, sizeof(count)), static_cast<ssize_t>(sizeof(count)));
}

// Reads `fd`; 0 when it had nothing.
std::uint64_t drain(const UniqueFd& fd) {
  std::uint64_t count = 0;
  return ::read(fd.get(), &count, sizeof(count)) == sizeof(count) ? count : 0;
}

class InterruptEpollTest : public ::testing::Test {
 protected:
  void SetUp() override {
    epoll_.open("test");
    for (std::uint64_t tag = 0; tag < fds_.size(); ++tag) epoll_.watch(fds_[tag].get(), tag);
    epoll_.watch(wake_.get(), InterruptEpoll::kWakeTag);
  }

  // collect for wait(): reads the fd behind `tag`, records it.
  bool collect(std::uint64_t tag) {
    const std::uint64_t count = drain(fds_.at(tag));
    if (count == 0) return false;
    epoll_.count_interrupts(count);
    collected_.push_back(tag);
    return true;
  }

  InterruptEpoll epoll_;
  std::vector<UniqueFd> fds_ = [] {
    std::vector<UniqueFd> fds;
    for (int i = 0; i < 3; ++i) fds.push_back(make_eventfd());
    return fds;
  }();
  UniqueFd wake_ = make_eventfd();
  std::vector<std::uint64_t> collected_;
};

TEST_F(InterruptEpollTest, CollectsExactlyTheReadyFdsByTheirTagsAndCountsThem) {
  signal(fds_[0], 2);
  signal(fds_[2], 3);
  EXPECT_TRUE(epoll_.wait(milliseconds{1000}, [&](std::uint64_t tag) { return collect(tag); }));
  std::sort(collected_.begin(), collected_.end());
  EXPECT_EQ(collected_, (std::vector<std::uint64_t>{0, 2}));
  const InterruptStats stats = epoll_.stats();
  EXPECT_EQ(stats.interrupts, 5U);
  EXPECT_EQ(stats.reads, 2U);
  EXPECT_EQ(stats.interrupt_wakeups, 1U);
}

TEST_F(InterruptEpollTest, APollWithNothingReadyReturnsAtOnceAndCountsNoWakeup) {
  EXPECT_FALSE(epoll_.wait(milliseconds{0}, [&](std::uint64_t tag) { return collect(tag); }));
  signal(fds_[1]);
  EXPECT_TRUE(epoll_.wait(milliseconds{0}, [&](std::uint64_t tag) { return collect(tag); }));
  EXPECT_EQ(epoll_.stats().interrupt_wakeups, 0U) << "a poll is not a wake-up";
}

TEST_F(InterruptEpollTest, TheWakeFdEndsTheWaitAndIsLeftUnread) {
  signal(wake_);
  EXPECT_FALSE(epoll_.wait(milliseconds{10000}, [&](std::uint64_t tag) { return collect(tag); }));
  EXPECT_TRUE(collected_.empty());
  EXPECT_EQ(drain(wake_), 1U) << "wait() must leave the wake fd to its owner";
}

// A timeout of milliseconds::max() is "forever", not a deadline in the past
// that overflowed (which returned at once).
TEST_F(InterruptEpollTest, AnEndlessTimeoutSleepsUntilTheWakeFd) {
  std::atomic<bool> signalled{false};
  std::thread waker([&] {
    std::this_thread::sleep_for(milliseconds{50});
    signalled.store(true);
    signal(wake_);
  });
  EXPECT_FALSE(epoll_.wait(milliseconds::max(), [&](std::uint64_t tag) { return collect(tag); }));
  EXPECT_TRUE(signalled.load()) << "wait() returned before the wake fd was written";
  waker.join();
}

TEST(WaitDeadline, IsForeverForYearsAndNowPlusTheTimeoutOtherwise) {
  EXPECT_EQ(wait_deadline(milliseconds::max()), std::chrono::steady_clock::time_point::max());
  const auto before = std::chrono::steady_clock::now();
  const auto deadline = wait_deadline(milliseconds{500});
  EXPECT_GE(deadline, before + milliseconds{500});
  EXPECT_EQ(epoll_timeout_until(std::chrono::steady_clock::time_point::max()),
            std::numeric_limits<int>::max());
  EXPECT_EQ(epoll_timeout_until(before - milliseconds{5}), 0);
}

}  // namespace
}  // namespace cellink::linux_uio
