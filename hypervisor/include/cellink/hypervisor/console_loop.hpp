// ConsoleLoop: the single-threaded epoll loop of `cellink console serve`.
//
// Everything of the console service runs on it: PTY masters, viewer
// sockets, the service's timers, and whatever a back end registers (its
// doorbell eventfds, a periodic poll). A callback gets the epoll events
// (EPOLLIN, EPOLLOUT, EPOLLHUP, EPOLLERR ...) and may watch, modify or
// unwatch any fd, its own included; an event for an fd unwatched earlier in
// the same round is not delivered.
//
// Level-triggered: a callback that leaves data unread is called again.
//
// Threading: watch(), unwatch(), modify(), every() and run() on the loop's
// thread only (or before run()); post() and stop() from any thread.
#pragma once

#include <sys/epoll.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "cellink/linux-uio/unique_fd.hpp"

namespace cellink::hypervisor {

class ConsoleLoop {
 public:
  using FdCallback = std::function<void(std::uint32_t events)>;
  using Task = std::function<void()>;

  // Throws std::system_error when epoll or eventfd cannot be created.
  ConsoleLoop();
  ~ConsoleLoop();
  ConsoleLoop(const ConsoleLoop&) = delete;
  ConsoleLoop& operator=(const ConsoleLoop&) = delete;

  // Starts watching `fd` (or replaces its callback and events: never from
  // that fd's own callback, which would be destroyed while it runs; use
  // modify() there). The caller keeps owning the fd and must unwatch it
  // before closing it.
  void watch(int fd, std::uint32_t events, FdCallback callback);
  void modify(int fd, std::uint32_t events);
  void unwatch(int fd) noexcept;
  [[nodiscard]] bool watching(int fd) const noexcept { return watches_.contains(fd); }

  // Calls `task` every `period` (a timerfd) until cancel() or the loop's
  // end. Returns the timer's id for cancel(). An owner that goes away
  // before the loop must cancel its timers.
  int every(std::chrono::milliseconds period, Task task);
  // Stops and closes a timer from every(); unknown ids are ignored. May be
  // called from the timer's own task.
  void cancel(int timer) noexcept;
  // Runs `task` on the loop thread soon. Thread-safe.
  void post(Task task);

  // Runs until stop(). Returns at once if stop() came first.
  void run();
  // Makes run() return after the current round. Thread-safe; not for a
  // signal handler (the service takes signals through a signalfd).
  void stop() noexcept;

 private:
  struct Watch {
    int fd = -1;
    std::uint64_t id = 0;
    FdCallback callback;
  };
  void run_posted();

  linux_uio::UniqueFd epoll_;
  linux_uio::UniqueFd wake_;  // eventfd: post() and stop()
  std::unordered_map<int, std::shared_ptr<Watch>> watches_;
  std::unordered_map<std::uint64_t, std::shared_ptr<Watch>> by_id_;
  std::uint64_t next_id_ = 1;
  std::vector<linux_uio::UniqueFd> timers_;
  // Protects posted_ and stopping_; orders a post() before the wake-up.
  std::mutex mutex_;
  std::vector<Task> posted_;
  bool stopping_ = false;
};

}  // namespace cellink::hypervisor
