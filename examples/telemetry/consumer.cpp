// cellink-telemetry-consumer: receives the Samples of
// cellink-telemetry-producer in a C++20 coroutine on an io_context,
//   auto [error, message] = co_await channel.async_receive(use_awaitable);
// and reads each one in place in the producer's ring record (read_capnp():
// validated first, so a corrupt or hostile producer cannot make it read out
// of bounds).
//
//   cellink-telemetry-consumer --runtime-dir D --cell guest --count 1000 &
//   cellink-telemetry-producer --runtime-dir D --cell host --count 1000
//
// Output: one summary line per 100 samples (temperatures, statuses, and the
// latency from the producer's timestamp, both cells reading CLOCK_MONOTONIC
// on one host), then "consumer: received N samples, M malformed". Exit status
// 0 when all --count samples arrived in sequence and none was malformed; 1
// with "error: ..." on stderr otherwise.
#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <ctime>
#include <exception>
#include <limits>
#include <memory>
#include <stdexcept>
#include <string>
#include <system_error>
#include <utility>

#include <CLI/CLI.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <fmt/format.h>
#include <kj/exception.h>

#include "cellink/linux-uio/async_channel.hpp"
#include "cellink/linux-uio/capnp_message.hpp"
#include "cellink/linux-uio/channel.hpp"
#include "cellink/linux-uio/session.hpp"
#include "telemetry/telemetry.capnp.h"

namespace {

namespace asio = boost::asio;
using cellink::examples::telemetry::Sample;
using cellink::examples::telemetry::Status;
using cellink::linux_uio::AsyncChannel;
using cellink::linux_uio::CapnpMessage;
using cellink::linux_uio::Channel;
using cellink::linux_uio::Session;

constexpr std::uint64_t kSummaryEvery = 100;

struct Options {
  std::string runtime_dir;
  std::string link = "demo";
  std::string cell = "guest";
  std::string channel = "telemetry";
  std::uint64_t count = 1000;
  double timeout_s = 10;

  [[nodiscard]] std::chrono::nanoseconds timeout() const {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(
        std::chrono::duration<double>(timeout_s));
  }
};

std::uint64_t monotonic_ns() {  // the producer's clock
  timespec now{};
  ::clock_gettime(CLOCK_MONOTONIC, &now);
  return static_cast<std::uint64_t>(now.tv_sec) * 1'000'000'000U +
         static_cast<std::uint64_t>(now.tv_nsec);
}

// What one summary line covers.
struct Window {
  std::uint64_t first = 0;
  std::uint64_t samples = 0;
  std::uint64_t readings = 0;
  double temperature_sum = 0;
  float coldest = std::numeric_limits<float>::max();
  float hottest = std::numeric_limits<float>::lowest();
  std::array<std::uint64_t, 3> statuses{};  // ok, degraded, fault
  double latency_sum_us = 0;
  double latency_max_us = 0;
};

struct Totals {
  std::uint64_t received = 0;
  std::uint64_t malformed = 0;
  std::uint64_t gaps = 0;  // samples whose sequence was not the one expected
  std::uint64_t next_sequence = 0;
  std::string failure;
};

void account(Sample::Reader sample, Window& window, Totals& totals) {
  if (sample.getSequence() != totals.next_sequence) {
    ++totals.gaps;
    fmt::print("consumer: expected sample {}, got sample {}\n", totals.next_sequence,
               sample.getSequence());
  }
  totals.next_sequence = sample.getSequence() + 1;
  if (window.samples++ == 0) window.first = sample.getSequence();
  for (const float reading : sample.getTemperatures()) {
    ++window.readings;
    window.temperature_sum += reading;
    window.coldest = std::min(window.coldest, reading);
    window.hottest = std::max(window.hottest, reading);
  }
  const auto status = static_cast<std::size_t>(sample.getStatus());
  if (status < window.statuses.size()) ++window.statuses[status];
  const double latency_us = static_cast<double>(monotonic_ns() - sample.getTimestampNs()) / 1000.0;
  window.latency_sum_us += latency_us;
  window.latency_max_us = std::max(window.latency_max_us, latency_us);
}

void print_summary(const Window& window) {
  const double samples = static_cast<double>(window.samples);
  fmt::print(
      "consumer: samples {}-{}: mean {:.1f} C ({:.1f}..{:.1f}), ok {} degraded {} fault {}, "
      "latency mean {:.1f} us max {:.1f} us\n",
      window.first, window.first + window.samples - 1,
      window.readings > 0 ? window.temperature_sum / static_cast<double>(window.readings) : 0.0,
      window.coldest, window.hottest, window.statuses[0], window.statuses[1], window.statuses[2],
      window.latency_sum_us / samples, window.latency_max_us);
  std::fflush(stdout);
}

// Cancels the channel when no sample arrives for --timeout.
class Watchdog {
 public:
  Watchdog(asio::io_context& io, AsyncChannel& channel, std::chrono::nanoseconds timeout)
      : timer_(io), channel_(channel), timeout_(timeout) {}

  void arm() {
    timer_.expires_after(timeout_);  // cancels the previous wait
    timer_.async_wait([this](std::error_code error) {
      if (error) return;
      fired_ = true;
      channel_.cancel();
    });
  }
  void cancel() { timer_.cancel(); }
  [[nodiscard]] bool fired() const { return fired_; }

 private:
  asio::steady_timer timer_;
  AsyncChannel& channel_;
  std::chrono::nanoseconds timeout_;
  bool fired_ = false;
};

asio::awaitable<void> consume(AsyncChannel& channel, const Options& options, Totals& totals,
                              Watchdog& watchdog) {
  Window window;
  try {
    while (totals.received < options.count) {
      watchdog.arm();
      auto [error, message] = co_await channel.async_receive(asio::use_awaitable);
      if (error) {
        totals.failure = watchdog.fired()
                             ? fmt::format("no sample for {} s after {} of {}", options.timeout_s,
                                           totals.received, options.count)
                             : fmt::format("after {} of {} samples: {}", totals.received,
                                           options.count, error.message());
        break;
      }
      CapnpMessage<Sample> sample = cellink::linux_uio::read_capnp<Sample>(std::move(message));
      if (!sample) {
        ++totals.malformed;
        fmt::print("consumer: malformed sample: {} {}\n", sample.error().message(),
                   sample.error_detail());
        continue;
      }
      try {
        account(sample.root(), window, totals);
      } catch (const kj::Exception& exception) {  // the producer rewrote it after validation
        ++totals.malformed;
        fmt::print("consumer: sample changed while read: {}\n", exception.getDescription().cStr());
        continue;
      }
      ++totals.received;
      if (window.samples == kSummaryEvery) {
        print_summary(window);
        window = Window{};
      }
    }
  } catch (const std::exception& exception) {
    totals.failure = exception.what();
  }
  if (window.samples > 0) print_summary(window);
  watchdog.cancel();
}

int run(int argc, char** argv) {
  CLI::App app{"cellink-telemetry-consumer: receive telemetry samples in a C++20 coroutine"};
  Options options;
  app.add_option("--runtime-dir", options.runtime_dir, "Runtime directory of `cellink daemon`")
      ->required();
  app.add_option("--link", options.link, "Link to attach to")->capture_default_str();
  app.add_option("--cell", options.cell, "This process's cell name")->capture_default_str();
  app.add_option("--channel", options.channel, "Channel name")->capture_default_str();
  app.add_option("--count", options.count, "Samples to receive (the producer's --count)")
      ->capture_default_str()
      ->check(CLI::Range(std::uint64_t{1}, std::uint64_t{100'000'000}));
  app.add_option("--timeout", options.timeout_s, "Seconds to wait for any one sample")
      ->capture_default_str()
      ->check(CLI::Range(0.001, 3600.0));
  CLI11_PARSE(app, argc, argv);

  try {
    cellink::linux_uio::HostDeviceOptions device;
    device.runtime_dir = options.runtime_dir;
    device.link = options.link;
    device.cell = options.cell;
    std::unique_ptr<Session> session = Session::connect(device);
    Channel channel = session->open(options.channel);
    fmt::print("consumer: cell '{}' on link '{}', waiting for {} samples on channel '{}'\n",
               options.cell, options.link, options.count, options.channel);
    std::fflush(stdout);

    asio::io_context io;
    AsyncChannel samples(io, channel);
    Watchdog watchdog(io, samples, options.timeout());
    Totals totals;
    asio::co_spawn(io, consume(samples, options, totals, watchdog), asio::detached);
    io.run();

    fmt::print("consumer: received {} samples, {} malformed\n", totals.received, totals.malformed);
    std::fflush(stdout);
    if (!totals.failure.empty()) throw std::runtime_error(totals.failure);
    if (totals.gaps != 0) {
      throw std::runtime_error(fmt::format("{} samples out of sequence", totals.gaps));
    }
    if (totals.malformed != 0) {
      throw std::runtime_error(fmt::format("{} malformed samples", totals.malformed));
    }
    return 0;
  } catch (const std::exception& error) {
    std::fflush(stdout);
    fmt::print(stderr, "cellink-telemetry-consumer: error: {}\n", error.what());
    return 1;
  }
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& error) {  // from the command-line parser
    std::fprintf(stderr, "%s: error: %s\n", "cellink-telemetry-consumer", error.what());
  } catch (...) {
    std::fprintf(stderr, "%s: unexpected error\n", "cellink-telemetry-consumer");
  }
  return 1;
}
