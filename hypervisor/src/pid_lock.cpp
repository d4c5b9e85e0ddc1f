// PidLock: see pid_lock.hpp.
#include "cellink/hypervisor/pid_lock.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <fstream>
#include <stdexcept>
#include <system_error>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

namespace cellink::hypervisor {

PidLock PidLock::acquire(const std::filesystem::path& path,
                         const std::function<std::string(const std::string& holder)>& held_by) {
  PidLock lock;
  lock.fd_.reset(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (!lock.fd_) {
    throw std::runtime_error(
        fmt::format("cannot open {}: {}", path.string(), std::system_category().message(errno)));
  }
  if (::flock(lock.fd_.get(), LOCK_EX | LOCK_NB) != 0) {
    std::string holder = "unknown";
    std::ifstream(path) >> holder;
    // Not ours: closing drops nothing, and the holder keeps its file.
    lock.fd_.reset();
    throw std::runtime_error(held_by(holder));
  }
  lock.path_ = path;
  const std::string pid = fmt::format("{}\n", ::getpid());
  if (::ftruncate(lock.fd_.get(), 0) != 0 ||
      ::write(lock.fd_.get(), pid.data(), pid.size()) != static_cast<ssize_t>(pid.size())) {
    spdlog::warn("cannot record the pid in {}", path.string());
  }
  return lock;
}

void PidLock::release() noexcept {
  if (!fd_) return;
  std::error_code ignored;
  std::filesystem::remove(path_, ignored);
  path_.clear();
  fd_.reset();
}

}  // namespace cellink::hypervisor
