// Daemon harness for the integration tests. See daemon.hpp.
#include "daemon.hpp"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstring>
#include <system_error>

#include "cellink/linux-uio/unix_socket.hpp"

namespace cellink::integration {
namespace {

// The daemon's log is meant for stderr, but spdlog's default logger writes
// to stdout (CliTest.DaemonLogsToStderrAndKeepsStdoutEmpty). The harness reads both, so
// that bug fails one test instead of all of them.
constexpr Stream kLogStream = Stream::any;

}  // namespace

Daemon::Daemon(DaemonSettings settings) : settings_(std::move(settings)) {
  start();
}

void Daemon::start() {
  std::vector<std::string> argv = {CELLINK_BIN,     "daemon",
                                   "--runtime-dir", settings_.runtime_dir.string(),
                                   "--log-level",   "info"};
  if (settings_.config) {
    argv.emplace_back("--config");
    argv.push_back(settings_.config->string());
  }
  if (settings_.reattach_grace_ms) {
    argv.emplace_back("--reattach-grace");
    argv.push_back(std::to_string(*settings_.reattach_grace_ms));
  }
  incarnations_.push_back(std::make_unique<Process>(std::move(argv)));
  // The ready line is logged after every socket is listening.
  (void)process().expect_line("cellink daemon ready", milliseconds(10000), kLogStream);
  (void)status_json();
}

nlohmann::json Daemon::status_json() const {
  return query_status(settings_.runtime_dir);
}

std::string Daemon::expect_log(const std::string& pattern, milliseconds timeout) {
  return process().expect_line(pattern, timeout, kLogStream);
}

void Daemon::kill9() {
  process().kill(SIGKILL);
  (void)process().wait_exit();
}

int Daemon::terminate() {
  process().kill(SIGTERM);
  return process().wait_exit();
}

void Daemon::restart() {
  if (!process().reaped()) {
    throw std::logic_error("Daemon::restart: the previous daemon is still running");
  }
  start();
}

std::string Daemon::transcript() const {
  std::string text;
  for (const auto& incarnation : incarnations_) text += incarnation->transcript();
  return text;
}

nlohmann::json query_status(const std::filesystem::path& runtime_dir, milliseconds timeout) {
  const std::filesystem::path path = runtime_dir / "control.sock";
  auto failed = [&](const std::string& why) {
    return ExpectationFailed("status query on " + path.string() + " failed: " + why);
  };
  int error = 0;
  const UniqueFd socket = linux_uio::connect_unix(path, error);
  if (!socket) throw failed(std::system_category().message(error));
  const std::string request = "status\n";
  if (::send(socket.get(), request.data(), request.size(), MSG_NOSIGNAL) !=
      static_cast<ssize_t>(request.size())) {
    throw failed("send: " + std::system_category().message(errno));
  }
  std::string reply;
  const Clock::time_point deadline = Clock::now() + timeout;
  for (;;) {
    const auto left = std::chrono::ceil<milliseconds>(deadline - Clock::now()).count();
    pollfd readable{socket.get(), POLLIN, 0};
    const int ready = ::poll(&readable, 1, static_cast<int>(std::max<long>(0, left)));
    if (ready < 0 && errno == EINTR) continue;
    if (ready <= 0) throw failed("no complete answer within the timeout; got: " + reply);
    char bytes[4096];
    const ssize_t got = ::read(socket.get(), bytes, sizeof(bytes));
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) throw failed("read: " + std::system_category().message(errno));
    if (got == 0) break;
    reply.append(bytes, static_cast<std::size_t>(got));
  }
  nlohmann::json status = nlohmann::json::parse(reply, nullptr, false);
  if (status.is_discarded()) throw failed("the answer is not JSON: " + reply);
  return status;
}

const nlohmann::json& peer_status(const nlohmann::json& status, const std::string& link,
                                  const std::string& cell) {
  for (const nlohmann::json& each : status.at("links")) {
    if (each.at("name") != link) continue;
    for (const nlohmann::json& peer : each.at("peers")) {
      if (peer.at("cell") == cell) return peer;
    }
  }
  throw ExpectationFailed("no peer '" + cell + "' on link '" + link + "' in the status:\n" +
                          status.dump(2));
}

std::string link_config(const std::string& link, const std::vector<std::string>& cells,
                        unsigned vectors, const std::string& backing) {
  std::string text;
  std::string list;
  for (const std::string& cell : cells) {
    text += "[[cell]]\nname = \"" + cell + "\"\n\n";
    list += (list.empty() ? "\"" : ", \"") + cell + "\"";
  }
  text += "[[link]]\nname = \"" + link + "\"\ncells = [" + list +
          "]\nrw_section = \"0\"\noutput_section = \"4KiB\"\nvectors = " + std::to_string(vectors) +
          "\nprotocol = \"cellink\"\nbacking = \"" + backing + "\"\n";
  return text;
}

}  // namespace cellink::integration
