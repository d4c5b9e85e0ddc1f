#include "bench_child.hpp"

#include <fcntl.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <thread>

namespace cellink::bench::console {
namespace {

// The niceness children get; set once by raise_reader_priority().
std::optional<int> child_niceness;

}  // namespace

bool raise_reader_priority(int nice) {
  errno = 0;
  const int before = ::getpriority(PRIO_PROCESS, 0);
  if (errno != 0) return false;
  if (::setpriority(PRIO_PROCESS, 0, nice) != 0) return false;
  child_niceness = before;
  return true;
}

BenchChild::BenchChild(const ChildSpec& spec) : stop_signal_(spec.stop_signal) {
  // Everything the child needs is prepared before fork: it only calls
  // async-signal-safe functions.
  std::vector<char*> argv;
  for (const std::string& word : spec.argv) argv.push_back(const_cast<char*>(word.c_str()));
  argv.push_back(nullptr);
  const int log = spec.log_file.empty() ? ::open("/dev/null", O_WRONLY | O_CLOEXEC)
                                        : ::open(spec.log_file.c_str(),
                                                 O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  const int null_in = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (log < 0 || null_in < 0) {
    throw std::runtime_error("cannot open " + spec.log_file + ": " + std::strerror(errno));
  }
  const pid_t parent = ::getpid();
  pid_ = ::fork();
  if (pid_ < 0) {
    const int error = errno;
    ::close(log);
    ::close(null_in);
    throw std::runtime_error(std::string("fork: ") + std::strerror(error));
  }
  if (pid_ == 0) {
    (void)::setpgid(0, 0);
    (void)::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(127);
    if (child_niceness) (void)::setpriority(PRIO_PROCESS, 0, *child_niceness);
    // dup2 clears FD_CLOEXEC on the copies.
    (void)::dup2(spec.stdin_fd >= 0 ? spec.stdin_fd : null_in, STDIN_FILENO);
    (void)::dup2(spec.stdout_fd >= 0 ? spec.stdout_fd : log, STDOUT_FILENO);
    (void)::dup2(log, STDERR_FILENO);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  (void)::setpgid(pid_, pid_);  // also here, so that stop() never races the child's own
  ::close(log);
  ::close(null_in);
}

BenchChild::~BenchChild() {
  stop();
}

bool BenchChild::running() {
  if (reaped_) return false;
  if (::waitpid(pid_, &status_, WNOHANG) == pid_) reaped_ = true;
  return !reaped_;
}

void BenchChild::stop(std::chrono::milliseconds grace) {
  if (pid_ <= 0 || !running()) return;
  (void)::kill(-pid_, stop_signal_);
  const auto deadline = std::chrono::steady_clock::now() + grace;
  while (running() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  if (running()) {
    (void)::kill(-pid_, SIGKILL);
    if (::waitpid(pid_, &status_, 0) == pid_) reaped_ = true;
  }
}

std::string describe_exit(int status) {
  if (WIFEXITED(status)) return "exit status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return "signal " + std::to_string(WTERMSIG(status));
  return "status " + std::to_string(status);
}

std::string find_program(const std::string& name) {
  const char* path = std::getenv("PATH");
  std::istringstream dirs(path != nullptr ? path : "/usr/bin:/bin");
  for (std::string dir; std::getline(dirs, dir, ':');) {
    const std::filesystem::path candidate = std::filesystem::path(dir) / name;
    if (::access(candidate.c_str(), X_OK) == 0) return candidate.string();
  }
  return {};
}

std::string run_to_end(const std::vector<std::string>& argv) {
  int out[2];
  if (::pipe2(out, O_CLOEXEC) != 0) throw std::runtime_error("pipe2 failed");
  std::string text;
  int status = 0;
  {
    BenchChild child({argv, {}, -1, out[1], SIGKILL});
    ::close(out[1]);
    char chunk[4096];
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    for (ssize_t got; (got = ::read(out[0], chunk, sizeof chunk)) != 0;) {
      if (got < 0 && errno != EINTR) break;
      if (got > 0) text.append(chunk, static_cast<std::size_t>(got));
      if (std::chrono::steady_clock::now() > deadline) break;
    }
    ::close(out[0]);
    child.stop(std::chrono::seconds(10));
    status = child.status();
  }
  if (status != 0) {
    throw std::runtime_error(argv[0] + " " + argv[1] + ": " + describe_exit(status) + ": " + text);
  }
  return text;
}

}  // namespace cellink::bench::console
