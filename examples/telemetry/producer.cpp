// cellink-telemetry-producer: one cell publishes typed telemetry Samples
// (telemetry.capnp) on a channel, each built in place in a loaned ring record
// with send_capnp(): no copy, no heap per sample.
//
//   cellink-telemetry-consumer --runtime-dir D --cell guest --count 1000 &
//   cellink-telemetry-producer --runtime-dir D --cell host --count 1000 --rate 1000
//
// Sample n: sequence n, CLOCK_MONOTONIC at sending, --sensors temperatures
// that drift with n, status degraded while any of them is above 43.5 C, and
// one component ("<cell>/board") with its own reading. After the last sample
// the producer stays until the consumer leaves the link, then reports how
// many samples the consumer released (Session::last_reset()), so a sample
// lost on the way is noticed. Exit status 0 when all were released; 1 with
// "error: ..." on stderr otherwise.
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <ctime>
#include <exception>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "cellink/linux-uio/capnp_message.hpp"
#include "cellink/linux-uio/channel.hpp"
#include "cellink/linux-uio/message_error.hpp"
#include "cellink/linux-uio/session.hpp"
#include "telemetry/telemetry.capnp.h"

namespace {

using cellink::examples::telemetry::Sample;
using cellink::examples::telemetry::Status;
using cellink::linux_uio::Channel;
using cellink::linux_uio::Message;
using cellink::linux_uio::MessageErrc;
using cellink::linux_uio::ResetReport;
using cellink::linux_uio::Session;
using Clock = std::chrono::steady_clock;

constexpr float kDegradedAbove = 43.5F;
constexpr unsigned kMaxSensors = 64;

struct Options {
  std::string runtime_dir;
  std::string link = "demo";
  std::string cell = "host";
  std::string channel = "telemetry";
  std::uint64_t count = 1000;
  double rate = 1000;  // samples per second; 0: as fast as the ring takes them
  unsigned sensors = 4;
  double timeout_s = 10;

  [[nodiscard]] std::chrono::nanoseconds timeout() const {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(
        std::chrono::duration<double>(timeout_s));
  }
};

[[noreturn]] void fail(const std::string& what) {
  throw std::runtime_error(what);
}

std::uint64_t monotonic_ns() {  // the consumer reads the same clock
  timespec now{};
  ::clock_gettime(CLOCK_MONOTONIC, &now);
  return static_cast<std::uint64_t>(now.tv_sec) * 1'000'000'000U +
         static_cast<std::uint64_t>(now.tv_nsec);
}

float temperature(std::uint64_t n, unsigned sensor) {
  return 40.0F + 4.0F * static_cast<float>(std::sin(static_cast<double>(n) * 0.05 + sensor));
}

void fill_sample(Sample::Builder sample, std::uint64_t n, const Options& options) {
  sample.setSequence(n);
  sample.setTimestampNs(monotonic_ns());
  sample.setCell(options.cell);
  auto temperatures = sample.initTemperatures(options.sensors);
  bool degraded = false;
  for (unsigned sensor = 0; sensor < options.sensors; ++sensor) {
    temperatures.set(sensor, temperature(n, sensor));
    degraded = degraded || temperatures[sensor] > kDegradedAbove;
  }
  sample.setStatus(degraded ? Status::DEGRADED : Status::OK);
  Sample::Builder board = sample.initComponents(1)[0];
  board.setSequence(n);
  board.setTimestampNs(sample.getTimestampNs());
  board.setCell(options.cell + "/board");
  board.initTemperatures(1).set(0, temperature(n, kMaxSensors));
  board.setStatus(Status::OK);
}

// A bound in bytes for one sample (send_capnp() zeroes this much of the
// loan): the two structs, the two names and the two temperature lists.
std::size_t sample_bound(const Options& options) {
  return 256 + 2 * options.cell.size() + std::size_t{4} * options.sensors;
}

int run(int argc, char** argv) {
  CLI::App app{"cellink-telemetry-producer: publish typed Cap'n Proto telemetry samples"};
  Options options;
  app.add_option("--runtime-dir", options.runtime_dir, "Runtime directory of `cellink daemon`")
      ->required();
  app.add_option("--link", options.link, "Link to attach to")->capture_default_str();
  app.add_option("--cell", options.cell, "This process's cell name")->capture_default_str();
  app.add_option("--channel", options.channel, "Channel name")->capture_default_str();
  app.add_option("--count", options.count, "Samples to send")
      ->capture_default_str()
      ->check(CLI::Range(std::uint64_t{1}, std::uint64_t{100'000'000}));
  app.add_option("--rate", options.rate, "Samples per second (0: unpaced)")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 10'000'000.0));
  app.add_option("--sensors", options.sensors, "Temperatures per sample")
      ->capture_default_str()
      ->check(CLI::Range(1U, kMaxSensors));
  app.add_option("--timeout", options.timeout_s, "Seconds any one step may take")
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
    if (const std::error_code error = channel.wait_connected(options.timeout())) {
      fail(fmt::format("channel '{}': {} waiting for a consumer to open it on link '{}'",
                       options.channel, error.message(), options.link));
    }
    fmt::print("producer: cell '{}' on link '{}', channel '{}' connected; {} samples at {}\n",
               options.cell, options.link, options.channel, options.count,
               options.rate > 0 ? fmt::format("{}/s", options.rate) : std::string("full speed"));
    std::fflush(stdout);

    const Clock::time_point start = Clock::now();
    const auto period = options.rate > 0 ? std::chrono::duration_cast<Clock::duration>(
                                               std::chrono::duration<double>(1.0 / options.rate))
                                         : Clock::duration::zero();
    for (std::uint64_t n = 0; n < options.count; ++n) {
      if (period > Clock::duration::zero()) std::this_thread::sleep_until(start + n * period);
      const std::error_code error = cellink::linux_uio::send_capnp<Sample>(
          channel, sample_bound(options),
          [&](Sample::Builder sample) { fill_sample(sample, n, options); }, options.timeout());
      if (error) fail(fmt::format("sample {}: {}", n, error.message()));
    }
    const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
    fmt::print("producer: sent {} samples in {:.3f} s\n", options.count, seconds);
    std::fflush(stdout);

    // The consumer sends nothing: this receive ends when it leaves (its
    // channel's close is reported first).
    Message left = channel.receive(options.timeout());
    if (left.error() == MessageErrc::channel_closed) left = channel.receive(options.timeout());
    if (left.error() != MessageErrc::peer_reset) {
      fail(fmt::format("waiting for the consumer to leave: {}",
                       left ? "it sent a message" : left.error().message()));
    }
    const ResetReport report = session->last_reset(channel.peer());
    if (!report.delivered_known) {
      fmt::print("producer: the consumer left; how many samples it released is unknown\n");
      return 0;
    }
    fmt::print("producer: the consumer left after releasing {} of {} samples\n", report.delivered,
               report.sent);
    std::fflush(stdout);
    if (report.delivered != options.count) {
      fail(fmt::format("the consumer released {} of {} samples", report.delivered, options.count));
    }
    return 0;
  } catch (const std::exception& error) {
    std::fflush(stdout);
    fmt::print(stderr, "cellink-telemetry-producer: error: {}\n", error.what());
    return 1;
  }
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& error) {  // from the command-line parser
    std::fprintf(stderr, "%s: error: %s\n", "cellink-telemetry-producer", error.what());
  } catch (...) {
    std::fprintf(stderr, "%s: unexpected error\n", "cellink-telemetry-producer");
  }
  return 1;
}
