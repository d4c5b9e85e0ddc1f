// The JSON document of a run; docs/bench-json.md is its schema.
#include <nlohmann/json.hpp>

#include "suite.hpp"

namespace cellink::bench::suite {
namespace {

using nlohmann::json;

[[nodiscard]] json percentiles(const Latency& latency, double scale) {
  return {{"p50", latency.p50 * scale},      {"p90", latency.p90 * scale},
          {"p99", latency.p99 * scale},      {"p99.9", latency.p999 * scale},
          {"p99.99", latency.p9999 * scale}, {"max", latency.max * scale},
          {"mean", latency.mean * scale}};
}

[[nodiscard]] json key(const RowKey& row) {
  return {{"transport", row.transport}, {"mode", name(row.mode)}, {"payload_bytes", row.payload}};
}

[[nodiscard]] json machine(const Machine& info) {
  return {{"cpu_model", info.cpu_model},
          {"online_cpus", info.online_cpus},
          {"cpus_used", info.cpus_used},
          {"kernel", info.kernel},
          {"virtualised", info.hypervisor_flag ||
                              (info.virtualisation != "none" && info.virtualisation != "unknown")},
          {"hypervisor_flag", info.hypervisor_flag},
          {"virtualisation", info.virtualisation},
          {"load_average", info.load_average},
          {"compiler", info.compiler},
          {"build_type", info.build_type},
          {"clock", info.clock},
          {"timer_overhead_ns", info.timer_overhead_ns}};
}

[[nodiscard]] json result(const Result& row) {
  json out = {{"transport", row.transport},    {"mode", name(row.mode)},
              {"workload", name(row.measure)}, {"payload_bytes", row.payload},
              {"status", name(row.status)},    {"note", row.note}};
  if (!row.measured()) return out;
  out["ctxsw"] = row.switches;
  if (row.measure == Measure::rtt) {
    out["samples"] = row.samples;
    out["rtt_ns"] = percentiles(row.latency, 1.0);
    out["one_way_ns"] = percentiles(row.latency, 0.5);
  } else {
    out["messages"] = row.samples;
    out["messages_per_second"] = row.messages_per_second;
    out["bytes_per_second"] = row.bytes_per_second();
  }
  return out;
}

}  // namespace

std::string to_json(const Run& run) {
  json document = {{"schema", "cellink-bench/1"},      {"preset", run.preset},
                   {"command", run.command},           {"started_utc", run.started_utc},
                   {"wall_seconds", run.wall_seconds}, {"machine", machine(run.machine)}};
  json& transports = document["transports"] = json::array();
  for (const Transport& transport : run.transports) {
    json modes = json::array();
    for (const Mode mode : transport.modes) modes.push_back(name(mode));
    transports.push_back({{"id", transport.id},
                          {"label", transport.label},
                          {"role", name(transport.role)},
                          {"modes", modes},
                          {"description", transport.description},
                          {"status", transport.installed ? "measured" : "not installed"},
                          {"detail", transport.detail}});
  }
  json& results = document["results"] = json::array();
  for (const Result& row : run.results) results.push_back(result(row));
  json& ratios = document["ratios"] = json::array();
  json& flat = document["ratio"] = json::object();
  for (const Ratio& ratio : run.ratios) {
    json entry = {{"id", ratio.id},
                  {"label", ratio.label},
                  {"numerator", key(ratio.numerator)},
                  {"denominator", key(ratio.denominator)},
                  {"status", name(ratio.status)},
                  {"note", ratio.note}};
    if (ratio.status == Status::ok) {
      entry["p50"] = ratio.p50;
      entry["p99"] = ratio.p99;
      flat[ratio.id] = ratio.p50;
    } else {
      flat[ratio.id] = name(ratio.status);
    }
    ratios.push_back(std::move(entry));
  }
  return document.dump(2) + "\n";
}

}  // namespace cellink::bench::suite
