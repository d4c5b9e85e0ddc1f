// The ratios the run reports: cellink's 64 B round trip against the
// physical limit, and against each baseline, like for like (a blocking
// cellink channel against the blocking kernel IPC, polling against the
// polling queues and iceoryx) and, for the kernel IPC, polling cellink too;
// and the inmate's rows against the same limits when they ran.
// Every ratio divides two rows of this run; nothing is compared with a
// stored figure.
#include "suite.hpp"

namespace cellink::bench::suite {
namespace {

struct RatioSpec {
  const char* id;
  const char* label;
  RowKey numerator;
  RowKey denominator;
};

[[nodiscard]] std::vector<RatioSpec> specs() {
  const RowKey channel_poll{"cellink-channel", Mode::poll, 64};
  const RowKey channel_block{"cellink-channel", Mode::block, 64};
  const RowKey ring_poll{"cellink-ring", Mode::poll, 64};
  const RowKey daemon_poll{"cellink-daemon", Mode::poll, 64};
  const RowKey single_poll{"cellink-channel-single", Mode::poll, 64};
  return {
      {"cellink_single_64B_poll_rtt_over_cacheline",
       "cellink channel, 1-thread Sessions, 64 B poll RTT / cache-line RTT",
       single_poll,
       {"cache-line", Mode::poll, 64}},
      {"cellink_64B_poll_rtt_over_ring",
       "cellink channel 64 B poll RTT / cellink ring RTT (the message layer's cost)", channel_poll,
       ring_poll},
      {"cellink_single_64B_poll_rtt_over_ring",
       "cellink channel, 1-thread Sessions, 64 B poll RTT / cellink ring RTT", single_poll,
       ring_poll},
      {"cellink_64B_poll_rtt_over_cacheline",
       "cellink channel 64 B poll RTT / cache-line RTT",
       channel_poll,
       {"cache-line", Mode::poll, 64}},
      {"cellink_ring_64B_poll_rtt_over_cacheline",
       "cellink ring 64 B poll RTT / cache-line RTT",
       ring_poll,
       {"cache-line", Mode::poll, 64}},
      {"cellink_64B_block_rtt_over_pipe",
       "cellink channel 64 B block RTT / pipe 64 B RTT",
       channel_block,
       {"pipe", Mode::block, 64}},
      {"cellink_64B_poll_rtt_over_pipe",
       "cellink channel 64 B poll RTT / pipe 64 B RTT",
       channel_poll,
       {"pipe", Mode::block, 64}},
      {"cellink_64B_block_rtt_over_unix_socket",
       "cellink channel 64 B block RTT / UNIX socket 64 B RTT",
       channel_block,
       {"unix-socket", Mode::block, 64}},
      {"cellink_64B_poll_rtt_over_unix_socket",
       "cellink channel 64 B poll RTT / UNIX socket 64 B RTT",
       channel_poll,
       {"unix-socket", Mode::block, 64}},
      {"cellink_64B_block_rtt_over_eventfd",
       "cellink channel 64 B block RTT / eventfd RTT",
       channel_block,
       {"eventfd", Mode::block, 8}},
      {"cellink_64B_poll_rtt_over_eventfd",
       "cellink channel 64 B poll RTT / eventfd RTT",
       channel_poll,
       {"eventfd", Mode::block, 8}},
      {"cellink_64B_poll_rtt_over_iceoryx",
       "cellink channel 64 B poll RTT / iceoryx 64 B RTT",
       channel_poll,
       {"iceoryx", Mode::poll, 64}},
      {"cellink_daemon_64B_poll_rtt_over_iceoryx",
       "cellink via daemon 64 B poll RTT / iceoryx 64 B RTT (both two processes)",
       daemon_poll,
       {"iceoryx", Mode::poll, 64}},
      {"cellink_64B_poll_rtt_over_boost_spsc_shm",
       "cellink channel 64 B poll RTT / boost spsc_queue 64 B RTT",
       channel_poll,
       {"boost-spsc-shm", Mode::poll, 64}},
      {"cellink_ring_64B_poll_rtt_over_rte_ring",
       "cellink ring 64 B poll RTT / rte_ring 64 B RTT",
       ring_poll,
       {"rte-ring", Mode::poll, 64}},
  };
}

// The ratios of a transport that runs on request (--only), listed only in
// a run that has it. The inmate's side is emulated (QEMU TCG): these say
// what emulation costs against the limits, not what an inmate costs on
// hardware.
[[nodiscard]] std::vector<RatioSpec> on_request_specs() {
  return {
      {"inmate_tcg_64B_poll_rtt_over_cacheline",
       "inmate under QEMU TCG (emulated) 64 B poll RTT / cache-line RTT",
       {"cellink-inmate", Mode::poll, 64},
       {"cache-line", Mode::poll, 64}},
      {"inmate_tcg_64B_block_rtt_over_eventfd",
       "inmate under QEMU TCG (emulated) 64 B block RTT / eventfd RTT",
       {"cellink-inmate", Mode::block, 64},
       {"eventfd", Mode::block, 8}},
  };
}

[[nodiscard]] Ratio ratio_of(const Run& run, const RatioSpec& spec) {
  Ratio ratio;
  ratio.id = spec.id;
  ratio.label = spec.label;
  ratio.numerator = spec.numerator;
  ratio.denominator = spec.denominator;
  const Result* top = run.find(spec.numerator, Measure::rtt);
  const Result* bottom = run.find(spec.denominator, Measure::rtt);
  if (top == nullptr || bottom == nullptr) {
    ratio.status = Status::not_applicable;
    ratio.note = "a row was not measured in this run";
  } else if (!top->measured() || !bottom->measured()) {
    const Result& missing = top->measured() ? *bottom : *top;
    ratio.status = missing.status;
    ratio.note = missing.transport + ": " + missing.note;
  } else {
    ratio.p50 = top->latency.p50 / bottom->latency.p50;
    ratio.p99 = top->latency.p99 / bottom->latency.p99;
  }
  return ratio;
}

}  // namespace

std::vector<Ratio> compute_ratios(const Run& run) {
  std::vector<Ratio> ratios;
  for (const RatioSpec& spec : specs()) ratios.push_back(ratio_of(run, spec));
  for (const RatioSpec& spec : on_request_specs()) {
    if (run.transport(spec.numerator.transport) != nullptr) ratios.push_back(ratio_of(run, spec));
  }
  return ratios;
}

const Result* best_baseline(const Run& run, Measure measure, std::uint64_t payload, bool blocking) {
  const Result* best = nullptr;
  for (const Result& result : run.results) {
    const Transport* transport = run.transport(result.transport);
    if (transport == nullptr || transport->role != Role::baseline || !result.measured() ||
        result.measure != measure || result.payload != payload ||
        (result.mode == Mode::block) != blocking) {
      continue;
    }
    const bool better =
        best == nullptr ||
        (measure == Measure::rtt ? result.latency.p50 < best->latency.p50
                                 : result.messages_per_second > best->messages_per_second);
    if (better) best = &result;
  }
  return best;
}

}  // namespace cellink::bench::suite
