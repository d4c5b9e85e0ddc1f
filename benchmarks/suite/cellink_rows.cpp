// The in-process rows: the physical limits (a cache line bouncing between
// the two CPUs; memcpy on one) and the cellink transports over shared memory
// in one process: the bare record ring (ring_bench's rows), Channels between
// two Sessions over a LoopbackLink, and Cap'n Proto on such a Channel
// (channel_bench's rows). Rings are sized per payload (ring_capacity_for()),
// so that one message is always one record.
#include <algorithm>
#include <optional>
#include <string>

#include "../channel_bench.hpp"
#include "channel_modes.hpp"
#include "suite.hpp"

namespace cellink::bench::suite {
namespace {

constexpr std::uint64_t kCacheLine = 64;

template <typename Measure>
[[nodiscard]] Result measure_rate(const std::string& id, Mode mode, std::uint64_t payload,
                                  const StreamCase& stream, Measure measure) {
  const std::uint64_t before = involuntary_switches();
  const double rate = measure();
  return throughput_result(id, mode, payload, rate, stream, involuntary_switches() - before);
}

Runner ring_runner() {
  Runner runner;
  runner.transport = {"cellink-ring",
                      "cellink ring",
                      Role::cellink,
                      {Mode::poll},
                      "two record rings, no Session: reserve, fill in place, commit, publish; "
                      "the receiver peeks, reads one word per 64 B, checks, releases",
                      true,
                      ""};
  runner.run = [](const Context& context, Mode mode, std::uint64_t payload) {
    const std::string id = "cellink-ring";
    const Settings rtt = context.rtt_settings(mode, payload);
    const Latency latency =
        ring_rtt(rtt, static_cast<std::uint32_t>(payload), ring_capacity_for(payload));
    const StreamCase stream = context.stream_case(payload);
    return std::vector<Result>{rtt_result(id, mode, payload, latency, rtt),
                               measure_rate(id, mode, payload, stream, [&] {
                                 return cellink_ring_rate(context.settings, stream);
                               })};
  };
  return runner;
}

// `threading`: the Sessions' SessionOptions::threading. Threading::single
// (no locks, no progress thread) is its own transport, cellink-channel-single.
Runner channel_runner(linux_uio::Threading threading) {
  const bool single = threading == linux_uio::Threading::single;
  const std::string id = single ? "cellink-channel-single" : "cellink-channel";
  Runner runner;
  runner.transport = {id,
                      single ? "cellink channel, 1-thread" : "cellink channel",
                      Role::cellink,
                      {Mode::poll, Mode::block, Mode::adaptive},
                      std::string("Channel::send() of a staged buffer between two Sessions over an "
                                  "in-process LoopbackLink; the receiver checks and releases each "
                                  "Message") +
                          (single ? "; single-threaded Sessions (Threading::single: no locks, "
                                    "no progress thread)"
                                  : ""),
                      true,
                      ""};
  runner.run = [id, threading](const Context& context, Mode mode, std::uint64_t payload) {
    const Settings rtt = context.rtt_settings(mode, payload);
    const Latency latency =
        channel_rtt(rtt, spin_budget(mode), static_cast<std::uint32_t>(payload), SendWith::send,
                    receive_with(mode), output_section_for(payload), threading);
    const StreamCase stream = context.stream_case(payload);
    return std::vector<Result>{
        rtt_result(id, mode, payload, latency, rtt), measure_rate(id, mode, payload, stream, [&] {
          return channel_rate(context.settings, spin_budget(mode), receive_with(mode), stream,
                              output_section_for(payload), threading);
        })};
  };
  return runner;
}

// The telemetry Sample whose wire size comes closest to `payload` from
// below; nullopt when even an empty one is larger.
[[nodiscard]] std::optional<CapnpCase> sample_shape(std::uint64_t payload) {
  const std::uint32_t empty = sample_bytes(0);
  if (empty > payload) return std::nullopt;
  auto temperatures = static_cast<std::uint32_t>((payload - empty) / sizeof(float));
  std::uint32_t bytes = sample_bytes(temperatures);
  while (temperatures > 0 && bytes > payload) {
    temperatures -= std::max<std::uint32_t>(1, (bytes - payload) / sizeof(float));
    bytes = sample_bytes(temperatures);
  }
  return CapnpCase{temperatures, bytes};
}

Runner capnp_runner() {
  Runner runner;
  runner.transport = {"cellink-capnp",
                      "cellink Cap'n Proto",
                      Role::cellink,
                      {Mode::poll, Mode::block, Mode::adaptive},
                      "a telemetry Sample built in place with send_capnp() and read field by "
                      "field after receive_capnp() validated it, on a LoopbackLink Channel",
                      true,
                      ""};
  runner.run = [](const Context& context, Mode mode, std::uint64_t payload) {
    const std::string id = "cellink-capnp";
    std::vector<Result> results;
    const std::optional<CapnpCase> shape = sample_shape(payload);
    if (!shape) {
      results.push_back(unavailable(
          id, mode, Measure::rtt, payload, Status::not_applicable,
          "the smallest telemetry Sample is " + std::to_string(sample_bytes(0)) + " B"));
    } else {
      const Settings rtt = context.rtt_settings(mode, payload);
      // poll: receive_capnp() spins inside receive() (a try_receive loop
      // has no Cap'n Proto form); the effect is the same, no doorbell.
      results.push_back(rtt_result(
          id, mode, payload,
          sample_rtt(rtt, *shape, Encoding::capnp, spin_budget(mode), output_section_for(payload)),
          rtt));
      results.back().note = "Sample with " + std::to_string(shape->temperatures) +
                            " temperatures, " + std::to_string(shape->bytes) + " B on the wire";
    }
    results.push_back(unavailable(id, mode, Measure::throughput, payload, Status::not_applicable,
                                  "round trips only: a stream adds nothing to the channel rows"));
    return results;
  };
  return runner;
}

Runner cacheline_runner() {
  Runner runner;
  runner.transport = {"cache-line",
                      "cache-line ping-pong",
                      Role::limit,
                      {Mode::poll},
                      "the physical limit: A stores n into a cache line, B waits for it and "
                      "stores n into another; one line per direction",
                      true,
                      ""};
  runner.run = [](const Context& context, Mode mode, std::uint64_t payload) {
    const std::string id = "cache-line";
    std::vector<Result> results;
    if (payload > kCacheLine) {
      results.push_back(unavailable(id, mode, Measure::rtt, payload, Status::not_applicable,
                                    "one cache line carries at most 64 B"));
    } else {
      const Settings rtt = context.rtt_settings(mode, payload);
      results.push_back(rtt_result(id, mode, payload, cacheline_rtt(rtt), rtt));
      results.back().note = "an 8-byte store per direction; up to 64 B share its line";
    }
    results.push_back(unavailable(id, mode, Measure::throughput, payload, Status::not_applicable,
                                  "a latency limit: memcpy is the throughput limit"));
    return results;
  };
  return runner;
}

Runner memcpy_runner() {
  Runner runner;
  runner.transport = {"memcpy",
                      "memcpy, one thread",
                      Role::limit,
                      {Mode::none},
                      "the throughput limit: one thread copies each message from a hot source "
                      "into a ring-sized area, the copy zero copy saves",
                      true,
                      ""};
  runner.run = [](const Context& context, Mode mode, std::uint64_t payload) {
    const std::string id = "memcpy";
    StreamCase copy = context.stream_case(payload);
    copy.records *= 4;
    copy.warmup = copy.records / 8;
    return std::vector<Result>{
        unavailable(id, mode, Measure::rtt, payload, Status::not_applicable,
                    "one thread: no round trip"),
        measure_rate(id, mode, payload, copy, [&] { return memcpy_rate(context.settings, copy); })};
  };
  return runner;
}

}  // namespace

std::vector<Runner> cellink_runners() {
  return {ring_runner(), channel_runner(linux_uio::Threading::multi),
          channel_runner(linux_uio::Threading::single), capnp_runner()};
}

std::vector<Runner> limit_runners() {
  return {cacheline_runner(), memcpy_runner()};
}

}  // namespace cellink::bench::suite
