// QemuVm (demo_vm.hpp).
#include "demo_vm.hpp"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <stdexcept>
#include <system_error>
#include <utility>

#include <fmt/ranges.h>

#include "cellink/hypervisor/config.hpp"
#include "cellink/linux-uio/unique_fd.hpp"

extern char** environ;

namespace cellink::cli::demo {

std::string find_on_path(std::string_view program) {
  const char* path = std::getenv("PATH");
  std::istringstream dirs(path != nullptr ? path : "");
  for (std::string dir; std::getline(dirs, dir, ':');) {
    const std::filesystem::path candidate =
        std::filesystem::path(dir.empty() ? "." : dir) / program;
    std::error_code error;
    if (std::filesystem::is_regular_file(candidate, error) &&
        ::access(candidate.c_str(), X_OK) == 0) {
      return candidate.string();
    }
  }
  return {};
}

std::vector<std::string> guest_cell_devices(const std::filesystem::path& dir) {
  const hypervisor::ConfigResult config = hypervisor::load_default_config();
  if (!config.ok()) throw std::runtime_error("the embedded config is invalid");
  std::uint32_t vectors = 0;
  for (const hypervisor::LinkConfig& link : config.config.links) {
    if (link.name == "demo") vectors = link.vectors;
  }
  const std::string socket = (dir / "demo" / "guest.sock").string();
  return {"-chardev", fmt::format("socket,path={},id=cellink-demo", socket), "-device",
          fmt::format("ivshmem-doorbell,chardev=cellink-demo,vectors={}", vectors)};
}

QemuVm::QemuVm(const std::vector<std::string>& argv, std::vector<std::string> shown,
               const char* who)
    : shown_(std::move(shown)), who_(who) {
  int pipe_ends[2];
  if (::pipe2(pipe_ends, O_CLOEXEC) != 0) throw std::runtime_error("pipe for QEMU failed");
  linux_uio::UniqueFd read_end(pipe_ends[0]);
  linux_uio::UniqueFd write_end(pipe_ends[1]);
  std::vector<char*> pointers;
  for (const std::string& argument : argv) {
    pointers.push_back(const_cast<char*>(argument.c_str()));
  }
  pointers.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  // Not the terminal: -nographic would put it in raw mode.
  posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, write_end.get(), STDOUT_FILENO);
  posix_spawn_file_actions_adddup2(&actions, write_end.get(), STDERR_FILENO);
  std::fflush(stdout);
  const int error =
      ::posix_spawn(&pid_, argv[0].c_str(), &actions, nullptr, pointers.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (error != 0) {
    throw std::runtime_error(fmt::format("cannot start {}: {}", argv[0], std::strerror(error)));
  }
  started_ = Clock::now();
  write_end.reset();  // the console ends when QEMU exits
  try {
    reader_ = std::thread([this, fd = std::move(read_end)] { read_console(fd.get()); });
  } catch (...) {
    ::kill(pid_, SIGKILL);
    (void)exit_code(pid_);
    throw;
  }
}

QemuVm::~QemuVm() {
  if (pid_ > 0) {
    ::kill(pid_, SIGKILL);
    (void)exit_code(pid_);
  }
  reader_.join();
}

double QemuVm::seconds() const {
  return std::chrono::duration<double>(Clock::now() - started_).count();
}

std::optional<std::string> QemuVm::wait_line(std::string_view prefix, Clock::time_point deadline) {
  std::unique_lock lock(mutex_);
  std::optional<std::string> found;
  changed_.wait_until(lock, deadline, [&] {
    const auto line = std::find_if(lines_.begin(), lines_.end(), [&](const std::string& each) {
      return each.starts_with(prefix);
    });
    if (line != lines_.end()) found = *line;
    return found || ended_;
  });
  return found;
}

bool QemuVm::console_ended() const {
  std::lock_guard lock(mutex_);
  return ended_;
}

std::optional<int> QemuVm::wait_exit(Clock::time_point deadline) {
  while (Clock::now() < deadline) {
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }
    std::this_thread::sleep_for(milliseconds(20));
  }
  return std::nullopt;
}

int QemuVm::stop(milliseconds grace) {
  if (pid_ <= 0) return 0;
  ::kill(pid_, SIGTERM);
  if (const std::optional<int> status = wait_exit(Clock::now() + grace)) return *status;
  ::kill(pid_, SIGKILL);
  const int status = exit_code(pid_);
  pid_ = -1;
  return status;
}

void QemuVm::print_console() const {
  std::lock_guard lock(mutex_);
  fmt::print("----- the {} console (QEMU pid {}) -----\n{}\n----- end of the console -----\n", who_,
             pid_, fmt::join(lines_, "\n"));
  std::fflush(stdout);
}

void QemuVm::read_console(int fd) {
  std::string partial;
  char bytes[4096];
  for (;;) {
    const ssize_t count = ::read(fd, bytes, sizeof(bytes));
    if (count < 0 && errno == EINTR) continue;
    if (count <= 0) break;
    partial.append(bytes, static_cast<std::size_t>(count));
    for (std::size_t end; (end = partial.find('\n')) != std::string::npos;) {
      add_line(partial.substr(0, end));
      partial.erase(0, end + 1);
    }
  }
  if (!partial.empty()) add_line(partial);
  std::lock_guard lock(mutex_);
  ended_ = true;
  changed_.notify_all();
}

void QemuVm::add_line(std::string line) {
  // Drops \r (a serial console ends lines with \r\n) and the firmware's
  // escape sequences, which glue to the first line after them.
  std::erase_if(line, [](char c) { return std::iscntrl(static_cast<unsigned char>(c)) != 0; });
  for (const std::string& marker : shown_) {
    if (const std::size_t start = line.find(marker); start != std::string::npos) {
      line.erase(0, start);
      say(who_, "{:6.2f} s  {}", seconds(), line);
      break;
    }
  }
  std::lock_guard lock(mutex_);
  lines_.push_back(std::move(line));
  changed_.notify_all();
}

}  // namespace cellink::cli::demo
