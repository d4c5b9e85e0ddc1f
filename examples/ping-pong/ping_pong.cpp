// cellink-ping-pong: round-trip latency between two cells of a link served by
// `cellink daemon`, with the blocking and polling Channel calls.
//
//   cellink-ping-pong --runtime-dir D --cell guest --role pong &
//   cellink-ping-pong --runtime-dir D --cell host --role ping --count 10000 --mode adaptive
//
// --mode (each side chooses its own):
//   block     receive() sleeps on the interrupt at once (spin budget 0);
//   adaptive  receive() spins for the Session's default budget, then sleeps;
//   poll      spin on try_receive() and never sleep: the receiver never arms
//             its ring, so the sender never rings a doorbell.
// --single-thread makes the Session single-threaded (Threading::single): no
// locks and no progress thread, since this program calls it from one thread.
// The protocol, the message format and the report: ping_pong.hpp. Exit status
// 0 on success; 1 with "error: ..." on stderr.
#include "ping_pong.hpp"

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "cellink/linux-uio/channel.hpp"
#include "cellink/linux-uio/message_error.hpp"
#include "cellink/linux-uio/session.hpp"

namespace {

using cellink::examples::ping_pong::check_echo;
using cellink::examples::ping_pong::fill_message;
using cellink::examples::ping_pong::Options;
using cellink::examples::ping_pong::RoundTrips;
using cellink::linux_uio::Channel;
using cellink::linux_uio::Message;
using cellink::linux_uio::MessageErrc;
using cellink::linux_uio::Session;
using cellink::linux_uio::SessionOptions;
using Clock = std::chrono::steady_clock;

[[noreturn]] void fail(const std::string& what) {
  throw std::runtime_error(what);
}

// The next message in `mode`; would_block from poll means timed out.
Message receive(Channel& channel, const std::string& mode, std::chrono::nanoseconds timeout) {
  if (mode != "poll") return channel.receive(timeout);
  const Clock::time_point deadline = Clock::now() + timeout;
  for (;;) {
    Message message = channel.try_receive();
    if (message || message.error() != MessageErrc::would_block) return message;
    if (Clock::now() >= deadline) return message;
  }
}

std::string describe(std::error_code error) {
  return error == MessageErrc::would_block ? "timed out" : error.message();
}

int run_ping(Channel& channel, const Options& options, const std::string& mode) {
  std::vector<std::byte> message(options.size);
  RoundTrips round_trips(options.count);
  const std::uint64_t total = options.warmup + options.count;
  for (std::uint64_t n = 0; n < total; ++n) {
    fill_message(message, n);
    const Clock::time_point start = Clock::now();
    if (const std::error_code error = channel.send(message, options.timeout())) {
      fail(fmt::format("send {}: {}", n, error.message()));
    }
    Message echo = receive(channel, mode, options.timeout());
    const Clock::time_point end = Clock::now();
    if (!echo) fail(fmt::format("echo {}: {}", n, describe(echo.error())));
    if (const std::string problem = check_echo(echo.payload(), n, options.size); !problem.empty()) {
      fail(problem);
    }
    if (n >= options.warmup) round_trips.add(end - start);
  }
  round_trips.print(options, mode);
  return 0;
}

int run_pong(Channel& channel, const Options& options, const std::string& mode) {
  std::uint64_t echoed = 0;
  for (;;) {
    Message request = receive(channel, mode, options.timeout());
    if (!request) {
      // The ping closes its channel, then leaves: either ends the echoing.
      if (request.error() == MessageErrc::channel_closed ||
          request.error() == MessageErrc::peer_reset) {
        break;
      }
      fail(fmt::format("after {} echoes: {}", echoed, describe(request.error())));
    }
    // Straight from the peer's record into ours: send() copies it.
    if (const std::error_code error = channel.send(request.payload(), options.timeout())) {
      fail(fmt::format("echo {}: {}", echoed, error.message()));
    }
    ++echoed;
  }
  fmt::print("pong: echoed {} messages; the ping left\n", echoed);
  return 0;
}

int run(int argc, char** argv) {
  CLI::App app{"cellink-ping-pong: round-trip latency between two cells, blocking or polling"};
  Options options;
  cellink::examples::ping_pong::add_options(app, options);
  std::string mode = "adaptive";
  app.add_option("--mode", mode, "block, poll or adaptive (spin, then block)")
      ->capture_default_str()
      ->check(CLI::IsMember({"block", "poll", "adaptive"}));
  bool single_thread = false;
  app.add_flag("--single-thread", single_thread,
               "single-threaded Session: no locks, no progress thread (docs/link.md, section 8)");
  CLI11_PARSE(app, argc, argv);

  try {
    SessionOptions session_options;
    if (mode == "block") session_options.spin_budget = std::chrono::nanoseconds{0};
    if (single_thread) session_options.threading = cellink::linux_uio::Threading::single;
    std::unique_ptr<Session> session = Session::connect(options.device(), session_options);
    Channel channel = session->open(options.channel);
    if (const std::error_code error = channel.wait_connected(options.timeout())) {
      fail(
          fmt::format("channel '{}': {} waiting for the other cell of link '{}' to open it (is "
                      "the {} running?)",
                      options.channel, error.message(), options.link,
                      options.role == "ping" ? "pong" : "ping"));
    }
    fmt::print("{}: cell '{}' (peer {}) on link '{}', channel '{}' connected, mode {}{}\n",
               options.role, options.cell, session->id(), options.link, options.channel, mode,
               single_thread ? ", single-threaded Session" : "");
    std::fflush(stdout);
    const int status = options.role == "ping" ? run_ping(channel, options, mode)
                                              : run_pong(channel, options, mode);
    std::fflush(stdout);
    return status;
  } catch (const std::exception& error) {
    std::fflush(stdout);
    fmt::print(stderr, "cellink-ping-pong ({}): error: {}\n", options.role, error.what());
    return 1;
  }
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& error) {  // from the command-line parser
    std::fprintf(stderr, "%s: error: %s\n", "cellink-ping-pong", error.what());
  } catch (...) {
    std::fprintf(stderr, "%s: unexpected error\n", "cellink-ping-pong");
  }
  return 1;
}
