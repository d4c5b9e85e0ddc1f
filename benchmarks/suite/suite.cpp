// The data model's small parts: names, presets, row counts and look-ups.
#include "suite.hpp"

#include <algorithm>
#include <stdexcept>

namespace cellink::bench::suite {

const char* name(Mode mode) noexcept {
  switch (mode) {
    case Mode::poll: return "poll";
    case Mode::block: return "block";
    case Mode::adaptive: return "adaptive";
    case Mode::none: return "none";
  }
  return "?";
}

const char* name(Measure measure) noexcept {
  return measure == Measure::rtt ? "rtt" : "throughput";
}

const char* name(Role role) noexcept {
  switch (role) {
    case Role::limit: return "limit";
    case Role::cellink: return "cellink";
    case Role::baseline: return "baseline";
  }
  return "?";
}

const char* name(Status status) noexcept {
  switch (status) {
    case Status::ok: return "ok";
    case Status::not_applicable: return "n/a";
    case Status::not_installed: return "not installed";
  }
  return "?";
}

std::optional<Mode> mode_named(std::string_view text) noexcept {
  for (const Mode mode : {Mode::poll, Mode::block, Mode::adaptive, Mode::none}) {
    if (text == name(mode)) return mode;
  }
  return std::nullopt;
}

std::string size_label(std::uint64_t bytes) {
  constexpr std::uint64_t KiB = 1024;
  if (bytes >= KiB * KiB && bytes % (KiB * KiB) == 0) return std::to_string(bytes >> 20) + " MiB";
  if (bytes >= KiB && bytes % KiB == 0) return std::to_string(bytes >> 10) + " KiB";
  return std::to_string(bytes) + " B";
}

const Preset& preset_named(const std::string& name) {
  constexpr std::uint64_t KiB = 1024;
  constexpr std::uint64_t MiB = 1024 * KiB;
  static const Preset kSmoke{"smoke", {8, 64, MiB}, 300, 20, 10, 4 * MiB, 2'000, 16, 20};
  static const Preset kQuick{
      "quick", {8, 64, 16 * KiB, MiB}, 20'000, 100, 10, 64 * MiB, 100'000, 64, 100};
  static const Preset kFull{
      "full", {8, 64, KiB, 16 * KiB, 256 * KiB, MiB}, 200'000, 500, 10, 512 * MiB, 1'000'000, 256,
      200};
  if (name == "smoke") return kSmoke;
  if (name == "quick") return kQuick;
  if (name == "full") return kFull;
  throw std::invalid_argument("no preset '" + name + "'");
}

Settings Context::rtt_settings(Mode mode, std::uint64_t payload) const {
  Settings rtt = settings;
  std::uint64_t samples = preset->rtt_samples;
  constexpr std::uint64_t kFullSamplesUpTo = 4 * 1024;
  if (payload > kFullSamplesUpTo) samples = samples * kFullSamplesUpTo / payload;
  if (mode == Mode::block) samples /= preset->blocking_divisor;
  rtt.rtt_samples = std::max(samples, preset->min_rtt_samples);
  rtt.rtt_warmup = std::max<std::uint64_t>(rtt.rtt_samples / 10, 10);
  // The suite reports percentiles only: no second pass timed in blocks.
  rtt.untimed_pass = false;
  return rtt;
}

StreamCase Context::stream_case(std::uint64_t payload) const {
  StreamCase stream;
  stream.record_size = payload;
  stream.capacity = ring_capacity_for(payload);
  stream.workload = Workload::fill;
  stream.records = std::clamp(preset->stream_bytes / payload, preset->min_stream_messages,
                              preset->max_stream_messages);
  stream.warmup = std::max<std::uint64_t>(stream.records / 10, 1);
  return stream;
}

Result rtt_result(const std::string& transport, Mode mode, std::uint64_t payload,
                  const Latency& latency, const Settings& settings) {
  Result result;
  result.transport = transport;
  result.mode = mode;
  result.measure = Measure::rtt;
  result.payload = payload;
  result.latency = latency;
  result.samples = settings.rtt_samples;
  result.switches = latency.switches;
  return result;
}

Result throughput_result(const std::string& transport, Mode mode, std::uint64_t payload,
                         double rate, const StreamCase& stream, std::uint64_t switches) {
  Result result;
  result.transport = transport;
  result.mode = mode;
  result.measure = Measure::throughput;
  result.payload = payload;
  result.messages_per_second = rate;
  result.samples = stream.records - stream.warmup;
  result.switches = switches;
  return result;
}

Result unavailable(const std::string& transport, Mode mode, Measure measure, std::uint64_t payload,
                   Status status, std::string note) {
  Result result;
  result.transport = transport;
  result.mode = mode;
  result.measure = measure;
  result.payload = payload;
  result.status = status;
  result.note = std::move(note);
  return result;
}

const Result* Run::find(const RowKey& key, Measure measure) const {
  for (const Result& result : results) {
    if (result.transport == key.transport && result.mode == key.mode &&
        result.payload == key.payload && result.measure == measure) {
      return &result;
    }
  }
  return nullptr;
}

const Transport* Run::transport(const std::string& id) const {
  for (const Transport& candidate : transports) {
    if (candidate.id == id) return &candidate;
  }
  return nullptr;
}

}  // namespace cellink::bench::suite
