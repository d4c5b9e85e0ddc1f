// Child processes and the peer protocol (peer_process.hpp).
#include "peer_process.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <string_view>
#include <thread>

namespace cellink::bench::suite {
namespace {

using Clock = std::chrono::steady_clock;

// The running children, for the signal handler: a fixed table of atomic
// entries, each the pid in the low and its stop signal in the high 32 bits
// (0: free), so that the handler only loads atomics and calls kill().
constexpr int kSlots = 16;
std::atomic<std::uint64_t> g_children[kSlots];

[[nodiscard]] pid_t pid_of(std::uint64_t entry) noexcept {
  return static_cast<pid_t>(entry & 0xffffffffU);
}
[[nodiscard]] int signal_of(std::uint64_t entry) noexcept {
  return static_cast<int>(entry >> 32);
}

int register_child(pid_t pid, int signal) {
  const std::uint64_t entry =
      (std::uint64_t{static_cast<std::uint32_t>(signal)} << 32) | static_cast<std::uint32_t>(pid);
  for (int slot = 0; slot < kSlots; ++slot) {
    std::uint64_t expected = 0;
    if (g_children[slot].compare_exchange_strong(expected, entry)) return slot;
  }
  return -1;  // more children than slots: PR_SET_PDEATHSIG still covers it
}

void unregister_child(int slot) {
  if (slot >= 0) g_children[slot].store(0);
}

// What the handler removes: the private directory (written before any
// child starts) and files the children leave when they are killed
// (add_cleanup_path(), static strings).
char g_work_dir[4096] = {};
constexpr int kExtraPaths = 8;
std::atomic<const char*> g_extra_paths[kExtraPaths];

// Waits up to about 8 s for `pid` to exit (RouDi takes 2-4 s to shut down);
// async-signal-safe.
void reap_for_a_while(pid_t pid) {
  for (int attempt = 0; attempt < 800; ++attempt) {
    int status = 0;
    if (::waitpid(pid, &status, WNOHANG) != 0) return;
    const timespec pause{0, 10'000'000};
    ::nanosleep(&pause, nullptr);
  }
}

// Only async-signal-safe calls: kill, waitpid, nanosleep, fork, execv.
extern "C" void stop_children_and_reraise(int signal) {
  for (const std::atomic<std::uint64_t>& child : g_children) {
    const std::uint64_t entry = child.load();
    if (entry != 0) ::kill(pid_of(entry), signal_of(entry));
  }
  // The daemon and RouDi remove their sockets and shared memory on SIGTERM;
  // give them the time, then remove our directory.
  for (const std::atomic<std::uint64_t>& child : g_children) {
    const std::uint64_t entry = child.load();
    if (entry != 0) reap_for_a_while(pid_of(entry));
  }
  if (g_work_dir[0] != '\0') {
    const pid_t remover = ::fork();
    if (remover == 0) {
      char rm[] = "/bin/rm";
      char flags[] = "-rf";
      char* argv[3 + kExtraPaths + 1] = {rm, flags, g_work_dir};
      int count = 3;
      for (const std::atomic<const char*>& path : g_extra_paths) {
        if (const char* text = path.load(); text != nullptr)
          argv[count++] = const_cast<char*>(text);
      }
      argv[count] = nullptr;
      ::execv(rm, argv);
      ::_exit(127);
    }
    if (remover > 0) reap_for_a_while(remover);
  }
  std::signal(signal, SIG_DFL);
  ::raise(signal);
}

[[nodiscard]] bool parse_number(std::string_view text, std::uint64_t& value) {
  if (text.empty()) return false;
  value = 0;
  for (const char digit : text) {
    if (digit < '0' || digit > '9') return false;
    value = value * 10 + static_cast<std::uint64_t>(digit - '0');
  }
  return true;
}

}  // namespace

void install_cleanup_handlers(const std::string& work_dir) {
  if (work_dir.size() < sizeof g_work_dir) {
    std::memcpy(g_work_dir, work_dir.c_str(), work_dir.size() + 1);
  }
  for (const int signal : {SIGINT, SIGTERM, SIGHUP, SIGPIPE, SIGABRT, SIGSEGV}) {
    std::signal(signal, stop_children_and_reraise);
  }
}

void add_cleanup_path(const char* path) {
  for (std::atomic<const char*>& slot : g_extra_paths) {
    const char* expected = nullptr;
    if (slot.load() == path || slot.compare_exchange_strong(expected, path)) return;
  }
}

Child::Child(const ChildSpec& spec) : stop_signal_(spec.stop_signal) {
  std::vector<char*> argv;
  for (const std::string& argument : spec.argv) argv.push_back(const_cast<char*>(argument.c_str()));
  argv.push_back(nullptr);
  linux_uio::UniqueFd log;
  if (!spec.log_file.empty()) {
    log.reset(::open(spec.log_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
    if (!log)
      throw std::runtime_error("cannot create " + spec.log_file + ": " + std::strerror(errno));
  }
  const pid_t parent = ::getpid();
  std::fflush(stdout);
  std::fflush(stderr);
  pid_ = ::fork();
  if (pid_ < 0) throw std::runtime_error(std::string("fork: ") + std::strerror(errno));
  if (pid_ == 0) {
    // Only async-signal-safe calls until exec: the bench may have threads.
    ::prctl(PR_SET_PDEATHSIG, spec.stop_signal);
    if (::getppid() != parent) ::_exit(127);  // the bench died before prctl
    // No child reads stdin; QEMU's -nographic would put a terminal in raw mode.
    if (const int null = ::open("/dev/null", O_RDONLY); null > STDIN_FILENO) {
      ::dup2(null, STDIN_FILENO);
      ::close(null);
    }
    if (log) {
      ::dup2(log.get(), STDOUT_FILENO);
      ::dup2(log.get(), STDERR_FILENO);
    } else {
      ::dup2(STDERR_FILENO, STDOUT_FILENO);  // our stdout may be --json
    }
    if (spec.result_fd >= 0) ::dup2(spec.result_fd, 3);  // dup2 clears FD_CLOEXEC
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  slot_ = register_child(pid_, spec.stop_signal);
}

Child::~Child() {
  if (pid_ > 0) (void)stop(std::chrono::seconds(5));
}

bool Child::running() {
  if (pid_ <= 0) return false;
  int status = 0;
  return !wait_exit(std::chrono::milliseconds(0), status);
}

bool Child::wait_exit(std::chrono::milliseconds timeout, int& status) {
  if (pid_ <= 0) return true;
  const Clock::time_point deadline = Clock::now() + timeout;
  for (;;) {
    const pid_t reaped = ::waitpid(pid_, &status, WNOHANG);
    if (reaped == pid_ || (reaped < 0 && errno != EINTR)) {
      unregister_child(slot_);
      pid_ = -1;
      return true;
    }
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
}

int Child::stop(std::chrono::milliseconds grace) {
  int status = 0;
  if (pid_ <= 0) return status;
  ::kill(pid_, stop_signal_);
  if (!wait_exit(grace, status)) {
    ::kill(pid_, SIGKILL);
    (void)wait_exit(std::chrono::hours(1), status);
  }
  return status;
}

std::string describe_exit(int status) {
  if (WIFEXITED(status)) return "exit status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return "signal " + std::to_string(WTERMSIG(status));
  return "status " + std::to_string(status);
}

std::unique_ptr<Child> start_service(const ChildSpec& spec, const char* what,
                                     const std::function<bool()>& ready, std::string& error) {
  auto child = std::make_unique<Child>(spec);
  const Clock::time_point deadline = Clock::now() + std::chrono::seconds(10);
  while (!ready()) {
    int status = 0;
    if (child->wait_exit(std::chrono::milliseconds(20), status)) {
      error = std::string(what) + " exited (" + describe_exit(status) +
              "): " + file_tail(spec.log_file, 400);
      return nullptr;
    }
    if (Clock::now() >= deadline) {
      error = std::string(what) + " was not ready within 10 s: " + file_tail(spec.log_file, 400);
      return nullptr;  // ~Child stops it
    }
  }
  return child;
}

std::string find_program(const std::string& name) {
  const char* search = std::getenv("PATH");
  const std::string directories = search != nullptr ? search : "/usr/bin:/bin";
  std::size_t begin = 0;
  while (begin <= directories.size()) {
    const std::size_t end = std::min(directories.find(':', begin), directories.size());
    std::string candidate = directories.substr(begin, end - begin) + "/" + name;
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
    begin = end + 1;
  }
  return {};
}

std::string file_tail(const std::string& path, std::size_t bytes) {
  std::ifstream file(path);
  const std::string text((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  return text.size() > bytes ? "..." + text.substr(text.size() - bytes) : text;
}

ResultPipe::ResultPipe() {
  int ends[2];
  if (::pipe2(ends, O_CLOEXEC) != 0) fail("pipe2: %s", std::strerror(errno));
  read_.reset(ends[0]);
  write_.reset(ends[1]);
}

bool ResultPipe::read(PeerReport& report, std::chrono::milliseconds timeout, std::string& error) {
  const Clock::time_point deadline = Clock::now() + timeout;
  auto* bytes = reinterpret_cast<char*>(&report);
  std::size_t got = 0;
  while (got < sizeof report) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) {
      error = "timed out waiting for the peer's report";
      return false;
    }
    pollfd ready{read_.get(), POLLIN, 0};
    if (::poll(&ready, 1, static_cast<int>(left.count())) <= 0) continue;
    const ssize_t count = ::read(read_.get(), bytes + got, sizeof report - got);
    if (count < 0 && errno == EINTR) continue;
    if (count <= 0) {
      error = "the peer exited before it reported";
      return false;
    }
    got += static_cast<std::size_t>(count);
  }
  if (report.magic != PeerReport::kMagic) {
    error = "the peer's report is garbled";
    return false;
  }
  return true;
}

void send_report(const PeerReport& report) {
  const auto* bytes = reinterpret_cast<const char*>(&report);
  std::size_t sent = 0;
  while (sent < sizeof report) {
    const ssize_t count = ::write(3, bytes + sent, sizeof report - sent);
    if (count < 0 && errno == EINTR) continue;
    if (count <= 0) fail("peer: writing the report to descriptor 3: %s", std::strerror(errno));
    sent += static_cast<std::size_t>(count);
  }
}

PeerArgs PeerArgs::for_row(std::string kind, const std::string& mode, std::uint64_t size,
                           const Settings& rtt, const StreamCase& stream) {
  PeerArgs args;
  args.kind = std::move(kind);
  args.mode = mode;
  args.size = size;
  args.rtt_samples = rtt.rtt_samples;
  args.rtt_warmup = rtt.rtt_warmup;
  args.stream_records = stream.records;
  args.stream_warmup = stream.warmup;
  return args;
}

std::vector<std::string> PeerArgs::argv(const std::string& self) const {
  return {self,
          "--peer",
          kind,
          "--mode",
          mode,
          "--size",
          std::to_string(size),
          "--rtt-samples",
          std::to_string(rtt_samples),
          "--rtt-warmup",
          std::to_string(rtt_warmup),
          "--stream-records",
          std::to_string(stream_records),
          "--stream-warmup",
          std::to_string(stream_warmup),
          "--cpu",
          std::to_string(cpu),
          "--runtime-dir",
          runtime_dir.empty() ? "-" : runtime_dir,
          "--link",
          link.empty() ? "-" : link};
}

bool PeerArgs::parse(int argc, char** argv, std::string& error) {
  if (argc < 3) {
    error = "--peer needs a kind";
    return false;
  }
  kind = argv[2];
  for (int i = 3; i + 1 < argc; i += 2) {
    const std::string_view flag = argv[i];
    const std::string value = argv[i + 1];
    std::uint64_t number = 0;
    const bool numeric = parse_number(value, number);
    if (flag == "--mode") {
      mode = value;
    } else if (flag == "--runtime-dir") {
      runtime_dir = value;
    } else if (flag == "--link") {
      link = value;
    } else if (flag == "--cpu") {
      cpu = value == "-1" ? -1 : static_cast<int>(number);
    } else if (!numeric) {
      error = "peer: " + std::string(flag) + " takes a number, not '" + value + "'";
      return false;
    } else if (flag == "--size") {
      size = number;
    } else if (flag == "--rtt-samples") {
      rtt_samples = number;
    } else if (flag == "--rtt-warmup") {
      rtt_warmup = number;
    } else if (flag == "--stream-records") {
      stream_records = number;
    } else if (flag == "--stream-warmup") {
      stream_warmup = number;
    } else {
      error = "peer: unknown flag " + std::string(flag);
      return false;
    }
  }
  return true;
}

Settings PeerArgs::settings() const {
  Settings settings;
  settings.rtt_samples = rtt_samples;
  settings.rtt_warmup = rtt_warmup;
  settings.untimed_pass = false;
  return settings;
}

void pin_this_thread(int cpu) {
  if (cpu < 0) return;
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  // sched_setaffinity(0) pins the calling thread; threads it starts later
  // (a Session's) inherit the mask.
  if (::sched_setaffinity(0, sizeof set, &set) != 0) {
    fail("sched_setaffinity(CPU %d): %s", cpu, std::strerror(errno));
  }
}

}  // namespace cellink::bench::suite
