// cellink_bench's data model: the transports it compares, one Result per
// (transport, mode, workload, payload size), the ratios computed from them,
// and the presets that say how long each row runs. The rows are measured by
// the runners (cellink_rows.cpp, daemon_transport.cpp, baselines_*.cpp,
// baseline_iceoryx.cpp, inmate_transport.cpp); the JSON (bench_json.cpp, schema in
// docs/bench-json.md), the table (bench_table.cpp) and the report
// (bench_report.cpp) only read them.
//
// Threading: everything here runs on the main thread; a runner starts its
// own pinned threads or peer processes and joins them before it returns.
#pragma once

#include <cstdint>
#include <cstdio>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "../ring_bench.hpp"

namespace cellink::bench::suite {

// How the receiver waits: spinning, sleeping on the interrupt fd at once, or
// the Session's adaptive default (spin kDefaultSpinBudget, then sleep).
// `none` for a one-thread row (memcpy).
enum class Mode : std::uint8_t { poll, block, adaptive, none };
enum class Measure : std::uint8_t { rtt, throughput };
// limit: what the hardware allows; cellink: the code under test; baseline:
// what a user would use instead.
enum class Role : std::uint8_t { limit, cellink, baseline };
// not_applicable: the transport cannot run this row by design (the reason
// says why); not_installed: the package is missing at build time.
enum class Status : std::uint8_t { ok, not_applicable, not_installed };

[[nodiscard]] const char* name(Mode mode) noexcept;
[[nodiscard]] const char* name(Measure measure) noexcept;
[[nodiscard]] const char* name(Role role) noexcept;
[[nodiscard]] const char* name(Status status) noexcept;
// The Mode called `text`; nullopt for an unknown name.
[[nodiscard]] std::optional<Mode> mode_named(std::string_view text) noexcept;
// "8 B", "64 KiB", "1 MiB".
[[nodiscard]] std::string size_label(std::uint64_t bytes);

struct Transport {
  std::string id;     // stable key in the JSON, e.g. "cellink-channel"
  std::string label;  // for people, e.g. "cellink channel"
  Role role = Role::baseline;
  std::vector<Mode> modes;
  std::string description;  // what one message does, one sentence
  bool installed = true;
  std::string detail;  // a version, or how to install it when not installed
};

struct Result {
  std::string transport;
  Mode mode = Mode::poll;
  Measure measure = Measure::rtt;
  std::uint64_t payload = 0;  // bytes per message
  Status status = Status::ok;
  std::string note;  // why n/a or not installed; otherwise an optional remark
  // rtt: round trips, ns (one-way is half). samples counts the timed ones.
  Latency latency;
  std::uint64_t samples = 0;
  // throughput: messages per second, timed on the receiver; samples counts
  // the timed messages.
  double messages_per_second = 0;
  std::uint64_t switches = 0;  // involuntary context switches of this process

  [[nodiscard]] bool measured() const noexcept { return status == Status::ok; }
  [[nodiscard]] double bytes_per_second() const noexcept {
    return messages_per_second * static_cast<double>(payload);
  }
};

// Identifies one row: the numerator or denominator of a ratio.
struct RowKey {
  std::string transport;
  Mode mode = Mode::poll;
  std::uint64_t payload = 0;
};

// A p50 and a p99 ratio of two round trips of this run.
struct Ratio {
  std::string id;     // stable key, e.g. "cellink_64B_poll_rtt_over_cacheline"
  std::string label;  // for people
  RowKey numerator;
  RowKey denominator;
  Status status = Status::ok;  // not_installed when either row's transport is missing
  std::string note;
  double p50 = 0;
  double p99 = 0;
};

struct Machine {
  std::string cpu_model;
  unsigned online_cpus = 0;
  std::vector<int> cpus_used;
  std::string kernel;
  bool hypervisor_flag = false;  // /proc/cpuinfo "hypervisor"
  std::string virtualisation;    // systemd-detect-virt, "none", or "unknown"
  std::string load_average;
  std::string compiler;
  std::string build_type;
  std::string clock;  // source and frequency
  double timer_overhead_ns = 0;
};

// How long each row runs.
struct Preset {
  const char* name;
  std::vector<std::uint64_t> sizes;
  std::uint64_t rtt_samples;          // polling round trips per row, payloads up to 4 KiB
  std::uint64_t min_rtt_samples;      // the floor once larger payloads scale it down
  std::uint64_t blocking_divisor;     // blocking rows: this many times fewer
  std::uint64_t stream_bytes;         // payload bytes per throughput row ...
  std::uint64_t max_stream_messages;  // ... but at most this many messages
  std::uint64_t min_stream_messages;  // ... and at least this many
  unsigned calibrate_ms;
};

[[nodiscard]] const Preset& preset_named(const std::string& name);

// What the runners are given.
struct Context {
  const Preset* preset = nullptr;
  Settings settings;        // the pinned CPUs and the calibrated clock
  std::string self_path;    // this executable, for peer processes
  std::string work_dir;     // a private temporary directory
  std::string cellink_cli;  // the `cellink` executable (runs `cellink daemon`)

  // Round-trip counts for one row: fewer for blocking rows and big payloads.
  [[nodiscard]] Settings rtt_settings(Mode mode, std::uint64_t payload) const;
  // Message counts for one throughput row.
  [[nodiscard]] StreamCase stream_case(std::uint64_t payload) const;
};

// The ring capacity every cellink row uses for a payload: 64 KiB, or four
// times the payload when that is larger (a record may take half the ring),
// so that one message is one record.
[[nodiscard]] constexpr std::uint64_t ring_capacity_for(std::uint64_t payload) noexcept {
  std::uint64_t capacity = std::uint64_t{64} * 1024;
  while (capacity < 4 * payload) capacity *= 2;
  return capacity;
}
// The output section of a 2-peer link whose rings have that capacity: the
// section also holds the link's control areas, so twice the ring.
[[nodiscard]] constexpr std::uint64_t output_section_for(std::uint64_t payload) noexcept {
  return 2 * ring_capacity_for(payload);
}

// A transport and how to measure it. run() returns the rows of one mode
// and payload size: usually one rtt and one throughput Result.
struct Runner {
  Transport transport;
  std::function<std::vector<Result>(const Context&, Mode, std::uint64_t)> run;
  std::vector<std::uint64_t> sizes;  // the preset's sizes it runs; empty: every one
  bool on_request = false;           // runs only when --only names it
};

// Each builder describes its transports; a transport that is not installed
// gets a runner that reports so.
[[nodiscard]] std::vector<Runner> cellink_runners();  // cellink_rows.cpp
[[nodiscard]] std::vector<Runner> limit_runners();    // cellink_rows.cpp
[[nodiscard]] Runner daemon_runner();                 // daemon_transport.cpp
[[nodiscard]] std::vector<Runner> ipc_runners();      // baselines_ipc.cpp
[[nodiscard]] Runner shm_spsc_runner();               // baseline_shm_spsc.cpp
[[nodiscard]] Runner rte_ring_runner();               // baseline_rte_ring.cpp
[[nodiscard]] Runner iceoryx_runner();                // baseline_iceoryx.cpp
[[nodiscard]] Runner inmate_runner();                 // inmate_transport.cpp
// Stops what the runners started for the whole run (the daemon, RouDi).
void stop_daemon();
void stop_iceoryx();

// Helpers for runners.
[[nodiscard]] Result rtt_result(const std::string& transport, Mode mode, std::uint64_t payload,
                                const Latency& latency, const Settings& settings);
[[nodiscard]] Result throughput_result(const std::string& transport, Mode mode,
                                       std::uint64_t payload, double rate, const StreamCase& stream,
                                       std::uint64_t switches);
[[nodiscard]] Result unavailable(const std::string& transport, Mode mode, Measure measure,
                                 std::uint64_t payload, Status status, std::string note);

// Everything one run produced.
struct Run {
  std::string preset;
  std::string command;
  std::string started_utc;
  double wall_seconds = 0;
  double ns_per_tick = 1;  // converts the histograms' ticks
  Machine machine;
  std::vector<Transport> transports;
  std::vector<Result> results;
  std::vector<Ratio> ratios;

  [[nodiscard]] const Result* find(const RowKey& key, Measure measure) const;
  [[nodiscard]] const Transport* transport(const std::string& id) const;
};

[[nodiscard]] Machine machine_info(const Context& context,
                                   const Latency& timer);         // machine_info.cpp
[[nodiscard]] std::vector<Ratio> compute_ratios(const Run& run);  // ratios.cpp
// The best measured baseline of a payload size that waits the same way
// (`blocking`: mode block; otherwise poll, which adaptive rows are compared
// with since they spin first): lowest RTT p50 or highest throughput; null
// when none was measured.
[[nodiscard]] const Result* best_baseline(const Run& run, Measure measure, std::uint64_t payload,
                                          bool blocking);
[[nodiscard]] std::string to_json(const Run& run);    // bench_json.cpp
void print_table(const Run& run, std::FILE* stream);  // bench_table.cpp
// Writes DIR/report.md, DIR/report.html, DIR/bench.json and the plots;
// returns false (with a message on stderr) when DIR cannot be written.
[[nodiscard]] bool write_report(const Run& run, const std::string& directory);  // bench_report.cpp

}  // namespace cellink::bench::suite
