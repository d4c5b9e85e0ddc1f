// cellink-ping-pong-async: the ping-pong of ping_pong.cpp on an io_context,
// with AsyncChannel and plain callbacks: each completion handler starts the
// next operation, so one thread serves the channel without ever blocking.
//
//   cellink-ping-pong-async --runtime-dir D --cell guest --role pong &
//   cellink-ping-pong-async --runtime-dir D --cell host --role ping --count 10000
//
// A watchdog timer checks every --timeout seconds that the exchange moved
// on, and otherwise cancels the channel and fails. The protocol, the message
// format and the report: ping_pong.hpp. Exit status 0 on success; 1 with
// "error: ..." on stderr.
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <memory>
#include <span>
#include <string>
#include <system_error>
#include <vector>

#include <CLI/CLI.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <fmt/format.h>

#include "cellink/linux-uio/async_channel.hpp"
#include "cellink/linux-uio/channel.hpp"
#include "cellink/linux-uio/message_error.hpp"
#include "cellink/linux-uio/session.hpp"
#include "ping_pong.hpp"

namespace {

namespace asio = boost::asio;
using cellink::examples::ping_pong::check_echo;
using cellink::examples::ping_pong::fill_message;
using cellink::examples::ping_pong::Options;
using cellink::examples::ping_pong::RoundTrips;
using cellink::linux_uio::AsyncChannel;
using cellink::linux_uio::Channel;
using cellink::linux_uio::Message;
using cellink::linux_uio::MessageErrc;
using cellink::linux_uio::Session;
using Clock = std::chrono::steady_clock;

// The ping or the pong. Its callbacks run one after another on the
// io_context's single thread, so its members need no lock.
class Peer {
 public:
  Peer(asio::io_context& io, Channel& channel, const Options& options)
      : channel_(io, channel), options_(options), watchdog_(io), round_trips_(options.count) {
    message_.resize(options.size);
  }

  void start() {
    watch();
    if (options_.role == "ping") {
      send_ping();
    } else {
      receive_request();
    }
  }
  [[nodiscard]] int exit_status() const { return failed_ ? 1 : 0; }

 private:
  // ---- ping: send n, receive its echo, repeat ----
  void send_ping() {
    fill_message(message_, progress_);
    sent_at_ = Clock::now();
    channel_.async_send(std::span<const std::byte>(message_), [this](std::error_code error) {
      if (error) return fail(fmt::format("send {}: {}", progress_, error.message()));
      channel_.async_receive([this](std::error_code receive_error, Message echo) {
        on_echo(receive_error, std::move(echo));
      });
    });
  }

  void on_echo(std::error_code error, Message echo) {
    const Clock::time_point now = Clock::now();
    if (error) return fail(fmt::format("echo {}: {}", progress_, error.message()));
    if (const std::string problem = check_echo(echo.payload(), progress_, options_.size);
        !problem.empty()) {
      return fail(problem);
    }
    echo.release();
    if (progress_ >= options_.warmup) round_trips_.add(now - sent_at_);
    if (++progress_ < options_.warmup + options_.count) return send_ping();
    finish();
    round_trips_.print(options_, "async");
  }

  // ---- pong: receive a request, send it back from the peer's record ----
  void receive_request() {
    channel_.async_receive([this](std::error_code error, Message request) {
      // The ping closes its channel, then leaves: either ends the echoing.
      if (error == MessageErrc::channel_closed || error == MessageErrc::peer_reset) {
        finish();
        fmt::print("pong: echoed {} messages; the ping left\n", progress_);
        return;
      }
      if (error) return fail(fmt::format("after {} echoes: {}", progress_, error.message()));
      // Held until the echo is sent: send() copies it from the peer's record.
      request_ = std::move(request);
      channel_.async_send(request_.payload(), [this](std::error_code send_error) {
        request_.release();
        if (send_error) return fail(fmt::format("echo {}: {}", progress_, send_error.message()));
        ++progress_;
        receive_request();
      });
    });
  }

  // ---- both ----
  void watch() {
    watchdog_.expires_after(options_.timeout());
    watchdog_.async_wait([this](std::error_code error) {
      if (error || finished_) return;
      if (progress_ == progress_at_last_check_) {
        return fail(
            fmt::format("no progress for {} s after {} messages", options_.timeout_s, progress_));
      }
      progress_at_last_check_ = progress_;
      watch();
    });
  }

  void finish() {
    finished_ = true;
    watchdog_.cancel();
  }

  void fail(const std::string& what) {
    if (finished_) return;
    finish();
    failed_ = true;
    channel_.cancel();
    std::fflush(stdout);
    fmt::print(stderr, "cellink-ping-pong-async ({}): error: {}\n", options_.role, what);
  }

  AsyncChannel channel_;
  const Options& options_;
  asio::steady_timer watchdog_;
  RoundTrips round_trips_;
  std::vector<std::byte> message_;
  Message request_;
  Clock::time_point sent_at_;
  std::uint64_t progress_ = 0;  // round trips (ping) or echoes (pong) completed
  std::uint64_t progress_at_last_check_ = ~std::uint64_t{0};
  bool finished_ = false;
  bool failed_ = false;
};

int run(int argc, char** argv) {
  CLI::App app{"cellink-ping-pong-async: round-trip latency with AsyncChannel and callbacks"};
  Options options;
  cellink::examples::ping_pong::add_options(app, options);
  CLI11_PARSE(app, argc, argv);

  try {
    std::unique_ptr<Session> session = Session::connect(options.device());
    Channel channel = session->open(options.channel);
    fmt::print("{}: cell '{}' (peer {}) on link '{}', channel '{}', mode async\n", options.role,
               options.cell, session->id(), options.link, options.channel);
    std::fflush(stdout);
    asio::io_context io;
    Peer peer(io, channel, options);
    peer.start();
    io.run();
    std::fflush(stdout);
    return peer.exit_status();
  } catch (const std::exception& error) {
    std::fflush(stdout);
    fmt::print(stderr, "cellink-ping-pong-async ({}): error: {}\n", options.role, error.what());
    return 1;
  }
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& error) {  // from the command-line parser
    std::fprintf(stderr, "%s: error: %s\n", "cellink-ping-pong-async", error.what());
  } catch (...) {
    std::fprintf(stderr, "%s: unexpected error\n", "cellink-ping-pong-async");
  }
  return 1;
}
