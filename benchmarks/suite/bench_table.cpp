// The human table: the header with the machine, every round trip and
// throughput row in transport order, then the ratios. A transport whose
// rows of one kind are all unavailable for the same reason gets one line.
#include <string>

#include "suite.hpp"

namespace cellink::bench::suite {
namespace {

void print_header(const Run& run, std::FILE* out) {
  const Machine& machine = run.machine;
  std::fprintf(out, "cellink bench: %s run, started %s, %.1f s\n", run.preset.c_str(),
               run.started_utc.c_str(), run.wall_seconds);
  std::string cpus = "NOT pinned (fewer than two CPUs allowed): the figures mean little";
  if (machine.cpus_used.size() == 2) {
    cpus = "pinned to CPUs " + std::to_string(machine.cpus_used[0]) + " and " +
           std::to_string(machine.cpus_used[1]);
  }
  std::fprintf(out, "machine: %s, %u CPUs online, %s\n", machine.cpu_model.c_str(),
               machine.online_cpus, cpus.c_str());
  std::fprintf(out,
               "kernel: %s; virtualised: %s (cpuinfo hypervisor flag %s, systemd-detect-virt %s)\n",
               machine.kernel.c_str(),
               machine.hypervisor_flag || machine.virtualisation != "none" ? "yes" : "no",
               machine.hypervisor_flag ? "set" : "clear", machine.virtualisation.c_str());
  std::fprintf(out, "build: %s, %s; clock: %s, timer overhead p50 %.1f ns (in every RTT)\n",
               machine.compiler.c_str(), machine.build_type.c_str(), machine.clock.c_str(),
               machine.timer_overhead_ns);
  std::fprintf(out, "load average: %s at the end\n", machine.load_average.c_str());
}

// True (and prints one line) when every row of `transport` and `measure` is
// unavailable for one and the same reason.
bool print_collapsed(const Run& run, const Transport& transport, Measure measure, std::FILE* out) {
  const Result* first = nullptr;
  for (const Result& row : run.results) {
    if (row.transport != transport.id || row.measure != measure) continue;
    if (row.measured() || (first != nullptr && row.note != first->note)) return false;
    if (first == nullptr) first = &row;
  }
  if (first == nullptr) return false;
  std::fprintf(out, "  %-28s %-9s %-8s %s: %s\n", transport.label.c_str(), "-", "all",
               name(first->status), first->note.c_str());
  return true;
}

void print_unavailable(const Transport& transport, const Result& row, std::FILE* out) {
  std::fprintf(out, "  %-28s %-9s %-8s %s: %s\n", transport.label.c_str(), name(row.mode),
               size_label(row.payload).c_str(), name(row.status), row.note.c_str());
}

// Every row of `measure` in transport order: print_row() for the measured
// ones, the reason for the others.
template <typename PrintRow>
void print_rows(const Run& run, Measure measure, std::FILE* out, PrintRow print_row) {
  for (const Transport& transport : run.transports) {
    if (print_collapsed(run, transport, measure, out)) continue;
    for (const Result& row : run.results) {
      if (row.transport != transport.id || row.measure != measure) continue;
      if (row.measured()) {
        print_row(transport, row);
      } else {
        print_unavailable(transport, row, out);
      }
    }
  }
}

void print_rtt(const Run& run, std::FILE* out) {
  std::fprintf(out, "\n== Round-trip time (RTT), ns; one-way = RTT / 2 ==\n");
  std::fprintf(out, "  %-28s %-9s %-8s %9s %9s %9s %9s %9s %10s %9s %6s\n", "transport", "mode",
               "payload", "p50", "p90", "p99", "p99.9", "p99.99", "max", "1-way p50", "ctxsw");
  print_rows(run, Measure::rtt, out, [out](const Transport& transport, const Result& row) {
    const Latency& l = row.latency;
    std::fprintf(out, "  %-28s %-9s %-8s %9.1f %9.1f %9.1f %9.1f %9.1f %10.1f %9.1f %6llu\n",
                 transport.label.c_str(), name(row.mode), size_label(row.payload).c_str(), l.p50,
                 l.p90, l.p99, l.p999, l.p9999, l.max, l.p50 / 2,
                 static_cast<unsigned long long>(row.switches));
  });
}

void print_throughput(const Run& run, std::FILE* out) {
  std::fprintf(out, "\n== Throughput, timed on the receiver; GB/s of payload, 1 GB = 1e9 B ==\n");
  std::fprintf(out, "  %-28s %-9s %-8s %12s %10s %10s %6s\n", "transport", "mode", "payload",
               "Mmsg/s", "GB/s", "messages", "ctxsw");
  print_rows(run, Measure::throughput, out, [out](const Transport& transport, const Result& row) {
    std::fprintf(out, "  %-28s %-9s %-8s %12.3f %10.3f %10llu %6llu\n", transport.label.c_str(),
                 name(row.mode), size_label(row.payload).c_str(), row.messages_per_second * 1e-6,
                 row.bytes_per_second() * 1e-9, static_cast<unsigned long long>(row.samples),
                 static_cast<unsigned long long>(row.switches));
  });
}

void print_ratios(const Run& run, std::FILE* out) {
  std::fprintf(out, "\n== Ratios (two RTT rows of this run; below 1: cellink is faster) ==\n");
  for (const Ratio& ratio : run.ratios) {
    if (ratio.status == Status::ok) {
      std::fprintf(out, "ratio %-72s: p50 %.2fx  p99 %.2fx\n", ratio.label.c_str(), ratio.p50,
                   ratio.p99);
    } else {
      std::fprintf(out, "ratio %-72s: %s (%s)\n", ratio.label.c_str(), name(ratio.status),
                   ratio.note.c_str());
    }
  }
}

}  // namespace

void print_table(const Run& run, std::FILE* out) {
  print_header(run, out);
  print_rtt(run, out);
  print_throughput(run, out);
  print_ratios(run, out);
}

}  // namespace cellink::bench::suite
