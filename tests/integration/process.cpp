// Process and TempDir for the integration tests. See process.hpp.
#include "process.hpp"

#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <fstream>
#include <regex>
#include <system_error>

extern char** environ;

namespace cellink::integration {
namespace {

[[noreturn]] void throw_errno(const std::string& what) {
  throw std::system_error(errno, std::generic_category(), what);
}

void make_pipe(UniqueFd& read_end, UniqueFd& write_end) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) throw_errno("pipe2");
  read_end.reset(fds[0]);
  write_end.reset(fds[1]);
}

// A test writing to a dead child's stdin must get EPIPE, not die.
void ignore_sigpipe_once() {
  static const bool ignored = [] { return ::signal(SIGPIPE, SIG_IGN) != SIG_ERR; }();
  (void)ignored;
}

std::string describe_status(int status) {
  if (WIFEXITED(status)) return "exited with " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return "killed by signal " + std::to_string(WTERMSIG(status));
  return "status " + std::to_string(status);
}

}  // namespace

Process::Process(std::vector<std::string> argv) : argv_(std::move(argv)) {
  ignore_sigpipe_once();
  UniqueFd child_stdin;
  UniqueFd child_stdout;
  UniqueFd child_stderr;
  make_pipe(child_stdin, stdin_);
  make_pipe(stdout_read_, child_stdout);
  make_pipe(stderr_read_, child_stderr);
  make_pipe(wake_read_, wake_write_);

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, child_stdin.get(), STDIN_FILENO);
  posix_spawn_file_actions_adddup2(&actions, child_stdout.get(), STDOUT_FILENO);
  posix_spawn_file_actions_adddup2(&actions, child_stderr.get(), STDERR_FILENO);
  posix_spawnattr_t attributes;
  posix_spawnattr_init(&attributes);
  sigset_t defaults;
  sigemptyset(&defaults);
  sigaddset(&defaults, SIGPIPE);
  sigaddset(&defaults, SIGTERM);
  sigaddset(&defaults, SIGINT);
  sigset_t unblocked;
  sigemptyset(&unblocked);
  posix_spawnattr_setsigdefault(&attributes, &defaults);
  posix_spawnattr_setsigmask(&attributes, &unblocked);
  posix_spawnattr_setpgroup(&attributes, 0);  // its own group, so the destructor gets them all
  posix_spawnattr_setflags(&attributes,
                           POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK);

  std::vector<char*> args;
  for (std::string& arg : argv_) args.push_back(arg.data());
  args.push_back(nullptr);
  const int error = ::posix_spawn(&pid_, args[0], &actions, &attributes, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attributes);
  if (error != 0) {
    throw std::system_error(error, std::generic_category(), "posix_spawn " + command());
  }
  // glibc 2.36 declares pidfd_open without extern "C"; call the kernel directly.
  pidfd_.reset(static_cast<int>(::syscall(SYS_pidfd_open, pid_, 0)));
  if (!pidfd_) {
    const int error_code = errno;
    ::kill(-pid_, SIGKILL);
    (void)::waitpid(pid_, nullptr, 0);
    throw std::system_error(error_code, std::generic_category(), "pidfd_open");
  }
  reader_ = std::thread([this] { read_output(); });
}

Process::~Process() {
  if (pid_ > 0) {
    // The whole group: `cellink demo` forks a daemon and a peer of its own.
    ::kill(-pid_, SIGKILL);
    if (!exit_status_) {
      ::kill(pid_, SIGKILL);
      int status = 0;
      while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
      }
    }
  }
  const char stop = 1;
  (void)::write(wake_write_.get(), &stop, 1);
  if (reader_.joinable()) reader_.join();
}

std::string Process::command() const {
  std::string text;
  for (const std::string& arg : argv_) text += (text.empty() ? "" : " ") + arg;
  return text;
}

void Process::read_output() {
  for (;;) {
    pollfd watched[3] = {{stdout_read_.get(), POLLIN, 0},
                         {stderr_read_.get(), POLLIN, 0},
                         {wake_read_.get(), POLLIN, 0}};
    {
      std::lock_guard lock(mutex_);
      if (stdout_.ended) watched[0].fd = -1;
      if (stderr_.ended) watched[1].fd = -1;
      if (stdout_.ended && stderr_.ended) return;
    }
    if (::poll(watched, 3, -1) < 0) {
      if (errno == EINTR) continue;
      return;
    }
    if (watched[2].revents != 0) return;
    for (int i = 0; i < 2; ++i) {
      if (watched[i].revents == 0) continue;
      char bytes[65536];
      const ssize_t got = ::read(watched[i].fd, bytes, sizeof(bytes));
      if (got < 0 && errno == EINTR) continue;
      std::lock_guard lock(mutex_);
      Capture& target = i == 0 ? stdout_ : stderr_;
      if (got <= 0) {
        if (!target.partial.empty()) target.lines.push_back({std::move(target.partial), false});
        target.partial.clear();
        target.ended = true;
      } else {
        append(target, bytes, static_cast<std::size_t>(got));
      }
      changed_.notify_all();
    }
  }
}

void Process::append(Capture& capture, const char* bytes, std::size_t size) {
  capture.partial.append(bytes, size);
  std::size_t start = 0;
  for (std::size_t end; (end = capture.partial.find('\n', start)) != std::string::npos;) {
    capture.lines.push_back({capture.partial.substr(start, end - start), false});
    start = end + 1;
  }
  capture.partial.erase(0, start);
}

std::vector<Process::Capture*> Process::captures(Stream stream) {
  if (stream == Stream::out) return {&stdout_};
  if (stream == Stream::err) return {&stderr_};
  return {&stdout_, &stderr_};
}

std::vector<const Process::Capture*> Process::captures(Stream stream) const {
  if (stream == Stream::out) return {&stdout_};
  if (stream == Stream::err) return {&stderr_};
  return {&stdout_, &stderr_};
}

std::string Process::expect_line(const std::string& pattern, milliseconds timeout, Stream stream) {
  const std::regex regex(pattern);
  const Clock::time_point deadline = Clock::now() + timeout;
  std::unique_lock lock(mutex_);
  auto take_first = [&]() -> std::optional<std::string> {
    for (Capture* capture : captures(stream)) {
      for (Line& line : capture->lines) {
        if (!line.consumed && std::regex_search(line.text, regex)) {
          line.consumed = true;
          return line.text;
        }
      }
    }
    return std::nullopt;
  };
  auto ended = [&] {
    for (const Capture* capture : captures(stream)) {
      if (!capture->ended) return false;
    }
    return true;
  };
  for (;;) {
    if (auto line = take_first()) return *line;
    const char* why = nullptr;
    if (ended()) {
      why = "its output ended";
    } else if (changed_.wait_until(lock, deadline) == std::cv_status::timeout) {
      why = "timed out";
    }
    if (why == nullptr) continue;
    // One last look: the line may have arrived with the end of the output.
    if (auto line = take_first()) return *line;
    const char* name = stream == Stream::out   ? "stdout"
                       : stream == Stream::err ? "stderr"
                                               : "output";
    throw ExpectationFailed(std::string(why) + " after waiting up to " +
                            std::to_string(timeout.count()) + " ms for a line matching /" +
                            pattern + "/ on " + name + " of `" + command() + "`\n" +
                            transcript_locked());
  }
}

std::vector<std::string> Process::take_lines(const std::string& pattern, Stream stream) {
  const std::regex regex(pattern);
  std::lock_guard lock(mutex_);
  std::vector<std::string> taken;
  for (Capture* capture : captures(stream)) {
    for (Line& line : capture->lines) {
      if (!line.consumed && std::regex_search(line.text, regex)) {
        line.consumed = true;
        taken.push_back(line.text);
      }
    }
  }
  return taken;
}

bool Process::saw_line(const std::string& pattern, Stream stream) const {
  const std::regex regex(pattern);
  std::lock_guard lock(mutex_);
  for (const Capture* capture : captures(stream)) {
    for (const Line& line : capture->lines) {
      if (std::regex_search(line.text, regex)) return true;
    }
  }
  return false;
}

std::string Process::output(Stream stream) const {
  std::lock_guard lock(mutex_);
  std::string text;
  for (const Capture* capture : captures(stream)) {
    for (const Line& line : capture->lines) text += line.text + "\n";
    text += capture->partial;
  }
  return text;
}

std::string Process::transcript() const {
  std::lock_guard lock(mutex_);
  return transcript_locked();
}

std::string Process::transcript_locked() const {
  std::string text = "----- `" + command() + "` (pid " + std::to_string(pid_) + ", " +
                     (exit_status_ ? describe_status(*exit_status_) : std::string("running")) +
                     ")\n";
  for (const Capture* capture : {&stdout_, &stderr_}) {
    text += capture == &stdout_ ? "--- stdout:\n" : "--- stderr:\n";
    for (const Line& line : capture->lines) text += line.text + "\n";
    if (!capture->partial.empty()) text += capture->partial + "\n";
  }
  return text;
}

void Process::send_line(const std::string& line) {
  const std::string bytes = line + "\n";
  std::size_t sent = 0;
  while (sent < bytes.size()) {
    const ssize_t wrote = ::write(stdin_.get(), bytes.data() + sent, bytes.size() - sent);
    if (wrote < 0 && errno == EINTR) continue;
    if (wrote <= 0) {
      throw ExpectationFailed("cannot send '" + line + "' to `" + command() +
                              "`: " + std::system_category().message(errno) + "\n" + transcript());
    }
    sent += static_cast<std::size_t>(wrote);
  }
}

void Process::close_stdin() noexcept {
  stdin_.reset();
}

void Process::kill(int signal) noexcept {
  if (pid_ > 0 && !exit_status_) ::kill(pid_, signal);
}

int Process::wait_exit(milliseconds timeout) {
  if (!exit_status_) {
    pollfd exited{pidfd_.get(), POLLIN, 0};
    int ready = 0;
    const Clock::time_point deadline = Clock::now() + timeout;
    do {
      const auto left = std::chrono::ceil<milliseconds>(deadline - Clock::now());
      ready = ::poll(&exited, 1, static_cast<int>(std::max<long>(0, left.count())));
    } while (ready < 0 && errno == EINTR);
    if (ready <= 0) {
      throw ExpectationFailed("`" + command() + "` did not exit within " +
                              std::to_string(timeout.count()) + " ms\n" + transcript());
    }
    int status = 0;
    while (::waitpid(pid_, &status, 0) < 0) {
      if (errno != EINTR) throw_errno("waitpid");
    }
    std::lock_guard lock(mutex_);
    exit_status_ = status;
  }
  const int status = *exit_status_;
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

bool Process::wait_for_output_end(milliseconds timeout) {
  std::unique_lock lock(mutex_);
  return changed_.wait_for(lock, timeout, [&] { return stdout_.ended && stderr_.ended; });
}

TempDir::TempDir() {
  std::string pattern = "/tmp/cellink-it-XXXXXX";
  if (::mkdtemp(pattern.data()) == nullptr) throw_errno("mkdtemp");
  path_ = pattern;
}

TempDir::~TempDir() {
  std::error_code ignored;
  std::filesystem::remove_all(path_, ignored);
}

std::filesystem::path TempDir::write_file(const std::string& name, const std::string& text) const {
  std::filesystem::path file = path_ / name;
  std::ofstream stream(file);
  stream << text;
  if (!stream.flush()) throw std::runtime_error("cannot write " + file.string());
  return file;
}

RunResult run(std::vector<std::string> argv, milliseconds timeout) {
  Process process(std::move(argv));
  process.close_stdin();
  RunResult result;
  result.exit_code = process.wait_exit(timeout);
  // The pipes close when the last holder exits; a holder that outlives the
  // command is the caller's to detect, so this does not fail.
  (void)process.wait_for_output_end(timeout);
  result.out = process.output(Stream::out);
  result.err = process.output(Stream::err);
  return result;
}

}  // namespace cellink::integration
