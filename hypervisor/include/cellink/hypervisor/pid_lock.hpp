// PidLock: "one process serves this directory". An flock'ed file that holds
// the owner's pid, so a second daemon or console service on the same runtime
// dir is refused with the pid to stop, and one killed with SIGKILL leaves a
// file that the next owner simply takes over (the kernel dropped its flock).
//
// Threading: one owner; not thread-safe.
#pragma once

#include <filesystem>
#include <functional>
#include <string>

#include "cellink/linux-uio/unique_fd.hpp"

namespace cellink::hypervisor {

class PidLock {
 public:
  PidLock() = default;
  ~PidLock() { release(); }
  PidLock(PidLock&& other) noexcept = default;
  PidLock& operator=(PidLock&& other) noexcept {
    release();
    fd_ = std::move(other.fd_);
    path_ = std::move(other.path_);
    return *this;
  }
  PidLock(const PidLock&) = delete;
  PidLock& operator=(const PidLock&) = delete;

  // Creates `path` (0600) if needed, locks it and writes our pid into it.
  // Throws std::runtime_error naming the path and the reason when it cannot
  // be opened, and with held_by(pid of the holder, or "unknown") when a live
  // process holds it.
  [[nodiscard]] static PidLock acquire(
      const std::filesystem::path& path,
      const std::function<std::string(const std::string& holder)>& held_by);

  [[nodiscard]] bool held() const noexcept { return static_cast<bool>(fd_); }

  // Removes the file and drops the lock; nothing when not held.
  void release() noexcept;

 private:
  linux_uio::UniqueFd fd_;
  std::filesystem::path path_;
};

}  // namespace cellink::hypervisor
