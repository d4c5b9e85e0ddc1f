// `--report DIR`: report.md and report.html (the same document), bench.json,
// and three gnuplot plots (SVG): the latency CDF of every transport at 64 B,
// RTT p50 against payload size, and throughput against payload size. The
// tables come first in importance: without gnuplot the report says so and
// keeps every table.

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "peer_process.hpp"
#include "suite.hpp"

namespace cellink::bench::suite {
namespace {

constexpr std::uint64_t kCdfPayload = 64;

// The report as a list of blocks, written once as Markdown and once as HTML.
struct Block {
  enum class Kind : std::uint8_t { heading, paragraph, table, image };
  Kind kind;
  std::string text;                            // heading, paragraph, image caption
  std::vector<std::vector<std::string>> rows;  // table: the first row is the header
  std::string image;                           // file name in the report directory
};

class Document {
 public:
  void heading(std::string text) {
    blocks_.push_back({Block::Kind::heading, std::move(text), {}, {}});
  }
  void paragraph(std::string text) {
    blocks_.push_back({Block::Kind::paragraph, std::move(text), {}, {}});
  }
  void table(std::vector<std::vector<std::string>> rows) {
    blocks_.push_back({Block::Kind::table, {}, std::move(rows), {}});
  }
  void image(std::string caption, std::string file) {
    blocks_.push_back({Block::Kind::image, std::move(caption), {}, std::move(file)});
  }

  [[nodiscard]] std::string markdown(const std::string& title) const {
    std::string out = "# " + title + "\n";
    for (const Block& block : blocks_) {
      out += "\n";
      switch (block.kind) {
        case Block::Kind::heading: out += "## " + block.text + "\n"; break;
        case Block::Kind::paragraph: out += block.text + "\n"; break;
        case Block::Kind::image: out += "![" + block.text + "](" + block.image + ")\n"; break;
        case Block::Kind::table:
          for (std::size_t r = 0; r < block.rows.size(); ++r) {
            out += "|";
            for (const std::string& cell : block.rows[r]) out += " " + cell + " |";
            out += "\n";
            if (r == 0) {
              out += "|";
              for (std::size_t c = 0; c < block.rows[r].size(); ++c)
                out += c == 0 ? "---|" : "--:|";
              out += "\n";
            }
          }
          break;
      }
    }
    return out;
  }

  [[nodiscard]] std::string html(const std::string& title) const {
    std::string out =
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>" + escape(title) +
        "</title>\n<style>body{font-family:sans-serif;max-width:1200px;margin:2em auto;"
        "padding:0 1em}table{border-collapse:collapse;margin:1em 0;font-size:13px}"
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
        "td:first-child,th:first-child{text-align:left}th{background:#eee}"
        "img{max-width:100%;border:1px solid #ddd}</style></head><body>\n<h1>" +
        escape(title) + "</h1>\n";
    for (const Block& block : blocks_) {
      switch (block.kind) {
        case Block::Kind::heading: out += "<h2>" + escape(block.text) + "</h2>\n"; break;
        case Block::Kind::paragraph: out += "<p>" + inline_code(block.text) + "</p>\n"; break;
        case Block::Kind::image:
          out += "<p><img src=\"" + escape(block.image) + "\" alt=\"" + escape(block.text) +
                 "\"></p>\n";
          break;
        case Block::Kind::table:
          out += "<table>\n";
          for (std::size_t r = 0; r < block.rows.size(); ++r) {
            const char* cell = r == 0 ? "th" : "td";
            out += "<tr>";
            for (const std::string& text : block.rows[r]) {
              out += std::string("<") + cell + ">" + inline_code(text) + "</" + cell + ">";
            }
            out += "</tr>\n";
          }
          out += "</table>\n";
          break;
      }
    }
    return out + "</body></html>\n";
  }

 private:
  [[nodiscard]] static std::string escape(const std::string& text) {
    std::string out;
    for (const char c : text) {
      switch (c) {
        case '&': out += "&amp;"; break;
        case '<': out += "&lt;"; break;
        case '>': out += "&gt;"; break;
        case '"': out += "&quot;"; break;
        default: out += c;
      }
    }
    return out;
  }
  // Escapes, and turns Markdown's `code` into <code>.
  [[nodiscard]] static std::string inline_code(const std::string& text) {
    std::string out;
    bool open = false;
    for (const char c : escape(text)) {
      if (c == '`') {
        out += open ? "</code>" : "<code>";
        open = !open;
      } else {
        out += c;
      }
    }
    return out;
  }

  std::vector<Block> blocks_;
};

[[nodiscard]] std::string number(double value, int decimals) {
  char text[64];
  std::snprintf(text, sizeof text, "%.*f", decimals, value);
  return text;
}

[[nodiscard]] std::string series_name(const Run& run, const Result& row) {
  const Transport* transport = run.transport(row.transport);
  std::string label = transport != nullptr ? transport->label : row.transport;
  if (transport != nullptr && transport->modes.size() > 1)
    label += std::string(" ") + name(row.mode);
  return label;
}

// The measured rows of `measure`, grouped by transport and mode in the
// order they ran.
[[nodiscard]] std::vector<std::vector<const Result*>> series(const Run& run, Measure measure) {
  std::vector<std::vector<const Result*>> groups;
  std::map<std::string, std::size_t> index;
  for (const Result& row : run.results) {
    if (!row.measured() || row.measure != measure) continue;
    const std::string key = row.transport + "/" + name(row.mode);
    const auto [at, inserted] = index.emplace(key, groups.size());
    if (inserted) groups.emplace_back();
    groups[at->second].push_back(&row);
  }
  return groups;
}

[[nodiscard]] std::string quoted(const std::string& text) {
  std::string out = "\"";
  for (const char c : text) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

// One colour per transport, one dash pattern per mode (poll solid, block
// dashed, adaptive dash-dot), so that a line reads the same in every plot.
[[nodiscard]] std::string line_style(const Result& row, bool points) {
  static const std::map<std::string, const char*> kColours = {{"cache-line", "#000000"},
                                                              {"memcpy", "#000000"},
                                                              {"cellink-ring", "#1f77b4"},
                                                              {"cellink-channel", "#2ca02c"},
                                                              {"cellink-capnp", "#9467bd"},
                                                              {"cellink-daemon", "#17becf"},
                                                              {"cellink-channel-single", "#98df8a"},
                                                              {"pipe", "#d62728"},
                                                              {"unix-socket", "#ff7f0e"},
                                                              {"eventfd", "#8c564b"},
                                                              {"boost-spsc-shm", "#e377c2"},
                                                              {"rte-ring", "#7f7f7f"},
                                                              {"iceoryx", "#bcbd22"}};
  const auto colour = kColours.find(row.transport);
  const int dash = row.mode == Mode::block ? 2 : row.mode == Mode::adaptive ? 4 : 1;
  return std::string(points ? "lw 2 pt 7 ps 0.5" : "lw 2") + " lc rgb '" +
         (colour != kColours.end() ? colour->second : "#333333") + "' dt " + std::to_string(dash);
}

// Writes the data files (under data/) and returns the gnuplot script.
[[nodiscard]] std::string plot_script(const Run& run, const std::filesystem::path& dir,
                                      const std::vector<std::uint64_t>& sizes) {
  std::filesystem::create_directories(dir / "data");
  std::string script =
      "set terminal svg size 1000,600 dynamic noenhanced font 'sans,12' background '#ffffff'\n"
      "set grid\nset key outside right top\nset style data linespoints\n";
  // 1. Latency CDF at 64 B (eventfd carries no payload: its 8 B row).
  std::string plots;
  int file = 0;
  for (const auto& group : series(run, Measure::rtt)) {
    for (const Result* row : group) {
      const bool eventfd = row->transport == "eventfd";
      if (row->payload != (eventfd ? 8 : kCdfPayload) || !row->latency.histogram) continue;
      const std::string data = "data/cdf-" + std::to_string(++file) + ".dat";
      std::ofstream out(dir / data);
      const Histogram& histogram = *row->latency.histogram;
      std::uint64_t seen = 0;
      histogram.for_each_bucket([&](std::uint64_t ticks, std::uint64_t count) {
        seen += count;
        out << static_cast<double>(ticks) * run.ns_per_tick << " "
            << static_cast<double>(seen) / static_cast<double>(histogram.count()) << "\n";
      });
      plots += std::string(plots.empty() ? "plot " : ", \\\n     ") + quoted(data) +
               " using 1:2 with steps " + line_style(*row, false) + " title " +
               quoted(series_name(run, *row) + (eventfd ? " (8 B)" : ""));
    }
  }
  if (!plots.empty()) {
    script +=
        "set output 'latency-cdf.svg'\nset title 'Round-trip time CDF, 64 B payload'\n"
        "set logscale x\nunset logscale y\nset xlabel 'round-trip time, ns (log scale)'\n"
        "set ylabel 'fraction of round trips at or below'\nset yrange [0:1]\n" +
        plots + "\nset yrange [*:*]\n";
  }
  // 2. and 3. p50 RTT and throughput against the payload size.
  std::string xtics;
  for (const std::uint64_t size : sizes) {
    xtics += (xtics.empty() ? "(" : ", ") + quoted(size_label(size)) + " " + std::to_string(size);
  }
  xtics += ")";
  const auto against_size = [&](Measure measure, const char* output, const char* title,
                                const char* ylabel) {
    std::string lines;
    for (const auto& group : series(run, measure)) {
      if (group.size() < 2) continue;  // a single point is not a line
      const std::string data =
          std::string("data/") + name(measure) + "-" + std::to_string(++file) + ".dat";
      std::ofstream out(dir / data);
      for (const Result* row : group) {
        out << row->payload << " "
            << (measure == Measure::rtt ? row->latency.p50 : row->bytes_per_second() * 1e-9)
            << "\n";
      }
      lines += std::string(lines.empty() ? "plot " : ", \\\n     ") + quoted(data) + " using 1:2 " +
               line_style(*group.front(), true) + " title " +
               quoted(series_name(run, *group.front()));
    }
    if (lines.empty()) return;
    script += std::string("set output '") + output + "'\nset title '" + title +
              "'\nset logscale xy\nset xtics " + xtics +
              "\nset xlabel 'payload (log scale)'\nset ylabel '" + ylabel + "'\n" + lines + "\n";
  };
  against_size(Measure::rtt, "rtt-size.svg", "Round-trip time p50 against payload size",
               "RTT p50, ns (log scale)");
  against_size(Measure::throughput, "throughput-size.svg", "Throughput against payload size",
               "payload GB/s (1 GB = 1e9 B, log scale)");
  return script;
}

// Runs gnuplot on the script; empty on success, else what went wrong.
[[nodiscard]] std::string run_gnuplot(const std::string& gnuplot, const std::filesystem::path& dir,
                                      const std::string& script) {
  const std::filesystem::path script_file = dir / "plots.gp";
  std::ofstream(script_file) << "cd " << quoted(dir.string()) << "\n" << script;
  Child plot({{gnuplot, script_file.string()}, SIGKILL, (dir / "gnuplot.log").string(), -1});
  int status = 0;
  if (!plot.wait_exit(std::chrono::seconds(60), status)) return "gnuplot did not finish in 60 s";
  if (status != 0) return "gnuplot failed (" + describe_exit(status) + "), see gnuplot.log";
  return {};
}

void machine_section(const Run& run, Document& document) {
  const Machine& m = run.machine;
  std::string cpus = "not pinned";
  if (m.cpus_used.size() == 2) {
    cpus = std::to_string(m.cpus_used[0]) + " and " + std::to_string(m.cpus_used[1]);
  }
  document.heading("Machine");
  document.table(
      {{"", ""},
       {"CPU", m.cpu_model},
       {"CPUs online", std::to_string(m.online_cpus)},
       {"CPUs used (pinned)", cpus},
       {"kernel", m.kernel},
       {"virtualised", std::string(m.hypervisor_flag ? "yes" : "no") +
                           " (cpuinfo hypervisor flag " + (m.hypervisor_flag ? "set" : "clear") +
                           ", systemd-detect-virt: " + m.virtualisation + ")"},
       {"build", m.compiler + ", " + m.build_type},
       {"clock",
        m.clock + ", timer overhead p50 " + number(m.timer_overhead_ns, 1) + " ns (in every RTT)"},
       {"load average at the end", m.load_average}});
}

// "612 ns, 1.52x limit, 0.80x pipe": one cell of the ratio tables.
[[nodiscard]] std::string ratio_cell(const Run& run, const Result& row, const Result* limit,
                                     const Result* best) {
  const bool rtt = row.measure == Measure::rtt;
  const auto value = [rtt](const Result& r) {
    return rtt ? r.latency.p50 : r.bytes_per_second() * 1e-9;
  };
  std::string cell = rtt ? number(row.latency.p50, 0) + " ns" : number(value(row), 3) + " GB/s";
  if (limit != nullptr && limit->measured()) {
    cell += ", " + number(value(row) / value(*limit), 2) + "x limit";
  }
  if (best != nullptr) {
    const Transport* transport = run.transport(best->transport);
    cell += ", " + number(value(row) / value(*best), 2) + "x " +
            (transport != nullptr ? transport->label : best->transport);
  }
  return cell;
}

void ratio_section(const Run& run, Document& document, const std::vector<std::uint64_t>& sizes) {
  document.heading("Ratios to the physical limit and to the best baseline");
  document.paragraph(
      "Each cell: the cellink figure, then its ratio to the physical limit (RTT: the "
      "cache-line ping-pong, up to 64 B; throughput: memcpy on one CPU) and to the best "
      "baseline measured at that size that waits the same way (lowest RTT p50, highest "
      "throughput): block rows against the blocking baselines (pipe, UNIX socket, eventfd), "
      "poll and adaptive rows against the polling ones (boost spsc_queue, rte_ring, "
      "iceoryx). RTT ratios below 1 and throughput ratios above 1 favour cellink.");
  const auto table = [&](Measure measure) {
    std::vector<std::vector<std::string>> rows;
    std::vector<std::string> header = {measure == Measure::rtt ? "RTT p50" : "throughput"};
    for (const std::uint64_t size : sizes) header.push_back(size_label(size));
    rows.push_back(header);
    for (const auto& group : series(run, measure)) {
      const Transport* transport = run.transport(group.front()->transport);
      if (transport == nullptr || transport->role != Role::cellink) continue;
      std::vector<std::string> cells = {series_name(run, *group.front())};
      for (const std::uint64_t size : sizes) {
        const Result* row = nullptr;
        for (const Result* candidate : group) {
          if (candidate->payload == size) row = candidate;
        }
        if (row == nullptr) {
          cells.emplace_back("-");
          continue;
        }
        const Result* limit = measure == Measure::rtt
                                  ? run.find({"cache-line", Mode::poll, size}, Measure::rtt)
                                  : run.find({"memcpy", Mode::none, size}, Measure::throughput);
        cells.push_back(ratio_cell(run, *row, limit,
                                   best_baseline(run, measure, size, row->mode == Mode::block)));
      }
      rows.push_back(cells);
    }
    document.table(rows);
  };
  table(Measure::rtt);
  table(Measure::throughput);

  document.heading("Headline ratios");
  std::vector<std::vector<std::string>> rows = {{"ratio", "p50", "p99"}};
  for (const Ratio& ratio : run.ratios) {
    if (ratio.status == Status::ok) {
      rows.push_back({ratio.label, number(ratio.p50, 2) + "x", number(ratio.p99, 2) + "x"});
    } else {
      rows.push_back({ratio.label, std::string(name(ratio.status)) + ": " + ratio.note, ""});
    }
  }
  document.table(rows);
}

void results_section(const Run& run, Document& document) {
  document.heading("Round trips, ns (one-way = RTT / 2)");
  std::vector<std::vector<std::string>> rtt = {{"transport", "mode", "payload", "p50", "p90", "p99",
                                                "p99.9", "p99.99", "max", "one-way p50", "samples",
                                                "ctxsw"}};
  std::vector<std::vector<std::string>> rate = {
      {"transport", "mode", "payload", "Mmsg/s", "GB/s", "messages", "ctxsw"}};
  std::set<std::string> said;
  for (const Result& row : run.results) {
    const Transport* transport = run.transport(row.transport);
    const std::string label = transport != nullptr ? transport->label : row.transport;
    auto& table = row.measure == Measure::rtt ? rtt : rate;
    if (!row.measured()) {
      // The same reason for every size or mode is said once.
      if (!said.insert(row.transport + name(row.measure) + row.note).second) continue;
      std::vector<std::string> cells = {label, name(row.mode), size_label(row.payload),
                                        std::string(name(row.status)) + ": " + row.note};
      cells.resize(table.front().size());
      table.push_back(cells);
      continue;
    }
    if (row.measure == Measure::rtt) {
      const Latency& l = row.latency;
      rtt.push_back({label, name(row.mode), size_label(row.payload), number(l.p50, 1),
                     number(l.p90, 1), number(l.p99, 1), number(l.p999, 1), number(l.p9999, 1),
                     number(l.max, 1), number(l.p50 / 2, 1), std::to_string(row.samples),
                     std::to_string(row.switches)});
    } else {
      rate.push_back({label, name(row.mode), size_label(row.payload),
                      number(row.messages_per_second * 1e-6, 3),
                      number(row.bytes_per_second() * 1e-9, 3), std::to_string(row.samples),
                      std::to_string(row.switches)});
    }
  }
  document.table(rtt);
  document.heading("Throughput (timed on the receiver; 1 GB = 1e9 B of payload)");
  document.table(rate);
}

void transports_section(const Run& run, Document& document) {
  document.heading("Transports");
  std::vector<std::vector<std::string>> rows = {
      {"transport", "id", "role", "status", "detail", "what one message does"}};
  for (const Transport& t : run.transports) {
    rows.push_back({t.label, "`" + t.id + "`", name(t.role),
                    t.installed ? "measured" : "not installed", t.detail, t.description});
  }
  document.table(rows);
}

}  // namespace

bool write_report(const Run& run, const std::string& directory) {
  const std::filesystem::path dir = std::filesystem::absolute(directory);
  std::error_code error;
  std::filesystem::create_directories(dir, error);
  if (error) {
    std::fprintf(stderr, "cellink_bench: --report %s: %s\n", directory.c_str(),
                 error.message().c_str());
    return false;
  }
  std::vector<std::uint64_t> sizes;
  for (const Result& row : run.results) {
    if (std::find(sizes.begin(), sizes.end(), row.payload) == sizes.end())
      sizes.push_back(row.payload);
  }
  std::sort(sizes.begin(), sizes.end());

  Document document;
  document.paragraph("`" + run.command + "`: " + run.preset + " run, started " + run.started_utc +
                     ", " + number(run.wall_seconds, 1) +
                     " s. Every figure and ratio below comes from this run; all of them are in "
                     "`bench.json` beside this report (schema: docs/bench-json.md).");
  machine_section(run, document);
  document.heading("Plots");
  const std::string gnuplot = find_program("gnuplot");
  std::string plot_error;
  if (gnuplot.empty()) {
    plot_error =
        "gnuplot is not installed (apt-get install gnuplot-nox): no plots; the tables "
        "below hold every figure.";
  } else {
    plot_error = run_gnuplot(gnuplot, dir, plot_script(run, dir, sizes));
  }
  if (plot_error.empty()) {
    document.image("Round-trip time CDF at 64 B", "latency-cdf.svg");
    document.image("RTT p50 against payload size", "rtt-size.svg");
    document.image("Throughput against payload size", "throughput-size.svg");
  } else {
    document.paragraph(plot_error);
  }
  ratio_section(run, document, sizes);
  results_section(run, document);
  transports_section(run, document);

  const std::string title = "cellink bench report";
  std::ofstream(dir / "report.md") << document.markdown(title);
  std::ofstream(dir / "report.html") << document.html(title);
  std::ofstream(dir / "bench.json") << to_json(run);
  std::fprintf(stderr, "cellink_bench: report written to %s/report.md and report.html%s\n",
               dir.c_str(), plot_error.empty() ? "" : " (without plots)");
  return true;
}

}  // namespace cellink::bench::suite
