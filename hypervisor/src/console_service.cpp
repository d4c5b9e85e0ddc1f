// ConsoleService: the console directory, its lock, the status files and the
// loop (contract in the header).
#include "cellink/hypervisor/console_service.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <fstream>
#include <stdexcept>
#include <system_error>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

namespace cellink::hypervisor {

ConsoleService::ConsoleService(ConsoleServiceOptions options)
    : options_(std::move(options)), console_dir_(options_.runtime_dir / "console") {
  if (options_.log_dir.empty()) options_.log_dir = console_dir_;
  for (std::size_t i = 0; i < options_.consoles.size(); ++i) {
    const std::string& cell = options_.consoles[i].cell;
    // The name becomes file names in the console directory.
    if (cell.empty() || cell.starts_with('.') || cell.find('/') != std::string::npos) {
      throw std::runtime_error(fmt::format(
          "console cell name '{}' cannot name files; use letters, digits, '-', '_' or '.' (not "
          "first)",
          cell));
    }
    for (std::size_t j = 0; j < i; ++j) {
      if (options_.consoles[i].cell == options_.consoles[j].cell) {
        throw std::runtime_error(fmt::format(
            "cell '{}' is given a console twice; list each cell once", options_.consoles[i].cell));
      }
    }
  }
  claim();
  try {
    const ConsolePlaces places{console_dir_, options_.log_dir, options_.viewer_queue_limit,
                               options_.pty_pending_limit};
    for (std::size_t index = 0; index < options_.consoles.size(); ++index) {
      consoles_.push_back(
          std::make_unique<Console>(loop_, options_.consoles[index], places,
                                    [this, index](bool urgent) { changed(index, urgent); }));
      dirty_.push_back(false);
    }
    write_all_status();
  } catch (...) {
    consoles_.clear();
    release();
    throw;
  }
}

ConsoleService::~ConsoleService() {
  consoles_.clear();
  release();
}

void ConsoleService::claim() {
  std::error_code error;
  std::filesystem::create_directories(console_dir_, error);
  if (error) {
    throw std::runtime_error(fmt::format("cannot create {}: {} (choose another --runtime-dir)",
                                         console_dir_.string(), error.message()));
  }
  lock_ = PidLock::acquire(console_dir_ / "serve.lock", [this](const std::string& pid) {
    return fmt::format(
        "{} is served by a running `cellink console serve` (pid {}); stop it first (`kill {}`) "
        "or choose another --runtime-dir",
        console_dir_.string(), pid, pid);
  });
}

void ConsoleService::release() noexcept {
  std::error_code ignored;
  for (const ConsoleSettings& settings : options_.consoles) {
    std::filesystem::remove(console_dir_ / (settings.cell + ".status.json"), ignored);
  }
  lock_.release();
  // Only when nothing else (logs, other files) is left in it.
  std::filesystem::remove(console_dir_, ignored);
}

Console& ConsoleService::console(std::string_view cell) {
  for (const auto& console : consoles_) {
    if (console->cell() == cell) return *console;
  }
  throw std::out_of_range(
      fmt::format("no console for cell '{}' (consoles: {})", cell, fmt::join(cells(), ", ")));
}

std::vector<std::string> ConsoleService::cells() const {
  std::vector<std::string> names;
  for (const auto& console : consoles_) names.push_back(console->cell());
  return names;
}

void ConsoleService::changed(std::size_t index, bool urgent) {
  if (index >= dirty_.size()) return;  // still constructing
  if (urgent) {
    write_status(index);
  } else {
    dirty_[index] = true;
  }
}

void ConsoleService::write_status(std::size_t index) {
  dirty_[index] = false;
  const Console& console = *consoles_[index];
  const std::filesystem::path path = console.status_path();
  std::filesystem::path staged = path;
  staged += ".new";
  {
    std::ofstream out(staged, std::ios::trunc);
    nlohmann::json status = console.status();
    status["service_pid"] = ::getpid();
    out << status.dump(2) << "\n";
    if (!out) {
      spdlog::warn("console '{}': cannot write {}", console.cell(), staged.string());
      return;
    }
  }
  std::error_code error;
  std::filesystem::rename(staged, path, error);  // readers see the old or the new, never half
  if (error)
    spdlog::warn("console '{}': cannot rename {}: {}", console.cell(), staged.string(),
                 error.message());
}

void ConsoleService::write_all_status() {
  for (std::size_t index = 0; index < consoles_.size(); ++index) write_status(index);
}

void ConsoleService::run() {
  sigset_t signals;
  sigset_t previous;
  linux_uio::UniqueFd signal_fd;
  if (options_.handle_signals) {
    sigemptyset(&signals);
    sigaddset(&signals, SIGTERM);
    sigaddset(&signals, SIGINT);
    ::pthread_sigmask(SIG_BLOCK, &signals, &previous);
    signal_fd.reset(::signalfd(-1, &signals, SFD_CLOEXEC | SFD_NONBLOCK));
    if (!signal_fd) {
      throw std::system_error(errno, std::system_category(), "signalfd");
    }
    loop_.watch(signal_fd.get(), EPOLLIN, [this, fd = signal_fd.get()](std::uint32_t) {
      signalfd_siginfo info{};
      if (::read(fd, &info, sizeof(info)) == sizeof(info)) {
        spdlog::info("received {}; shutting down",
                     info.ssi_signo == SIGTERM ? "SIGTERM" : "SIGINT");
        loop_.stop();
      }
    });
  }
  loop_.every(options_.status_interval, [this] {
    for (std::size_t index = 0; index < consoles_.size(); ++index) {
      consoles_[index]->tick();
      if (dirty_[index]) write_status(index);
    }
  });
  spdlog::info("cellink console service ready: {} console(s) in {}", consoles_.size(),
               console_dir_.string());
  loop_.run();
  if (signal_fd) {
    loop_.unwatch(signal_fd.get());
    ::pthread_sigmask(SIG_SETMASK, &previous, nullptr);
  }
  spdlog::info("cellink console service stopped");
}

}  // namespace cellink::hypervisor
