// ConsoleLoop: epoll, an eventfd for post() and stop(), timerfds (contract
// in the header).
#include "cellink/hypervisor/console_loop.hpp"

#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <cerrno>
#include <system_error>

namespace cellink::hypervisor {
namespace {

[[noreturn]] void throw_errno(const char* what) {
  throw std::system_error(errno, std::system_category(), what);
}

}  // namespace

ConsoleLoop::ConsoleLoop()
    : epoll_(::epoll_create1(EPOLL_CLOEXEC)), wake_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
  if (!epoll_) throw_errno("epoll_create1");
  if (!wake_) throw_errno("eventfd");
  watch(wake_.get(), EPOLLIN, [this](std::uint32_t) {
    std::uint64_t count = 0;
    (void)::read(wake_.get(), &count, sizeof(count));
    run_posted();
  });
}

ConsoleLoop::~ConsoleLoop() = default;

void ConsoleLoop::watch(int fd, std::uint32_t events, FdCallback callback) {
  if (auto found = watches_.find(fd); found != watches_.end()) {
    found->second->callback = std::move(callback);
    modify(fd, events);
    return;
  }
  auto entry = std::make_shared<Watch>(Watch{fd, next_id_++, std::move(callback)});
  epoll_event event{};
  event.events = events;
  event.data.u64 = entry->id;
  if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &event) != 0) throw_errno("epoll_ctl(ADD)");
  by_id_[entry->id] = entry;
  watches_[fd] = std::move(entry);
}

void ConsoleLoop::modify(int fd, std::uint32_t events) {
  auto found = watches_.find(fd);
  if (found == watches_.end()) return;
  epoll_event event{};
  event.events = events;
  event.data.u64 = found->second->id;
  if (::epoll_ctl(epoll_.get(), EPOLL_CTL_MOD, fd, &event) != 0) throw_errno("epoll_ctl(MOD)");
}

void ConsoleLoop::unwatch(int fd) noexcept {
  auto found = watches_.find(fd);
  if (found == watches_.end()) return;
  (void)::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, fd, nullptr);
  by_id_.erase(found->second->id);
  watches_.erase(found);
}

int ConsoleLoop::every(std::chrono::milliseconds period, Task task) {
  linux_uio::UniqueFd timer(::timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK));
  if (!timer) throw_errno("timerfd_create");
  const auto nanos = std::chrono::duration_cast<std::chrono::nanoseconds>(period).count();
  itimerspec spec{};
  spec.it_interval.tv_sec = static_cast<time_t>(nanos / 1'000'000'000);
  spec.it_interval.tv_nsec = static_cast<long>(nanos % 1'000'000'000);
  spec.it_value = spec.it_interval;
  if (spec.it_value.tv_sec == 0 && spec.it_value.tv_nsec == 0) spec.it_value.tv_nsec = 1;
  if (::timerfd_settime(timer.get(), 0, &spec, nullptr) != 0) throw_errno("timerfd_settime");
  const int fd = timer.get();
  watch(fd, EPOLLIN, [fd, task = std::move(task)](std::uint32_t) {
    std::uint64_t expirations = 0;
    if (::read(fd, &expirations, sizeof(expirations)) > 0) task();
  });
  timers_.push_back(std::move(timer));
  return fd;
}

void ConsoleLoop::cancel(int timer) noexcept {
  for (auto it = timers_.begin(); it != timers_.end(); ++it) {
    if (it->get() != timer) continue;
    unwatch(timer);  // the running task, if it is this one, survives in run()
    timers_.erase(it);
    return;
  }
}

void ConsoleLoop::post(Task task) {
  {
    std::lock_guard lock(mutex_);
    posted_.push_back(std::move(task));
  }
  const std::uint64_t one = 1;
  (void)::write(wake_.get(), &one, sizeof(one));
}

void ConsoleLoop::stop() noexcept {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  const std::uint64_t one = 1;
  (void)::write(wake_.get(), &one, sizeof(one));
}

void ConsoleLoop::run_posted() {
  std::vector<Task> tasks;
  {
    std::lock_guard lock(mutex_);
    tasks.swap(posted_);
  }
  for (Task& task : tasks) task();
}

void ConsoleLoop::run() {
  constexpr int kBatch = 64;
  epoll_event events[kBatch];
  for (;;) {
    {
      std::lock_guard lock(mutex_);
      if (stopping_) return;
    }
    const int count = ::epoll_wait(epoll_.get(), events, kBatch, -1);
    if (count < 0) {
      if (errno == EINTR) continue;
      throw_errno("epoll_wait");
    }
    for (int i = 0; i < count; ++i) {
      // Looked up by id, not fd: a callback earlier in this round may have
      // unwatched this fd, and another may have been watched under its number.
      auto found = by_id_.find(events[i].data.u64);
      if (found == by_id_.end()) continue;
      const std::shared_ptr<Watch> entry = found->second;  // survives its own unwatch
      entry->callback(events[i].events);
    }
  }
}

}  // namespace cellink::hypervisor
