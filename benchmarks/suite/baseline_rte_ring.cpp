// DPDK's rte_ring (rte_ring.cpp, ring_bench's row): pointers to buffers
// written in place, passed on SP/SC rings in one address space. Zero copy,
// but only between threads of one process: it passes pointers, which cells
// cannot. "not installed" when CMake found no libdpdk.
#include "suite.hpp"

namespace cellink::bench::suite {

Runner rte_ring_runner() {
  Runner runner;
  runner.transport = {"rte-ring",
                      "DPDK rte_ring",
                      Role::baseline,
                      {Mode::poll},
                      "pointers to pooled buffers filled in place, on SP/SC rte_rings "
                      "(round trip: one buffer per side; stream: bursts of 32)",
                      rte_ring_available(),
                      rte_ring_version()};
  runner.run = [](const Context& context, Mode mode, std::uint64_t payload) {
    const std::string id = "rte-ring";
    if (!rte_ring_available()) {
      return std::vector<Result>{
          unavailable(id, mode, Measure::rtt, payload, Status::not_installed, rte_ring_version()),
          unavailable(id, mode, Measure::throughput, payload, Status::not_installed,
                      rte_ring_version())};
    }
    const Settings rtt = context.rtt_settings(mode, payload);
    const Latency latency = rte_ring_rtt(rtt, payload);
    const StreamCase stream = context.stream_case(payload);
    const std::uint64_t before = involuntary_switches();
    const double rate = rte_ring_rate(context.settings, stream);
    return std::vector<Result>{
        rtt_result(id, mode, payload, latency, rtt),
        throughput_result(id, mode, payload, rate, stream, involuntary_switches() - before)};
  };
  return runner;
}

}  // namespace cellink::bench::suite
