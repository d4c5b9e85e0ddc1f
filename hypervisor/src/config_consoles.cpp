// Reading the [[console]] tables of the configuration (spec: docs/config.md,
// "[[console]]"). A console belongs to one cell and is carried by a 2-peer
// link whose protocol is virtio-front:console; the link's other cell is the
// back end, where `cellink console serve` attaches. The checks run after
// every [[cell]] and [[link]] has been read, so a console can name both.
#include <array>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>

#include <fmt/format.h>
#include <toml++/toml.h>

#include "cellink/hypervisor/config.hpp"
#include "cellink/ivshmem/protocol.hpp"
#include "config_errors.hpp"
#include "config_values.hpp"

namespace cellink::hypervisor::detail {
namespace {

constexpr std::array<std::string_view, 5> kConsoleKeys{"cell", "link", "log_size", "log_files",
                                                       "scrollback"};
constexpr std::uint16_t kConsoleProtocol =
    ivshmem::protocol::kVirtioFrontBase + ivshmem::protocol::kVirtioDeviceConsole;

struct SizeLimits {
  std::uint64_t min;
  std::uint64_t max;
};
constexpr SizeLimits kLogSizeLimits{std::uint64_t{4} << 10, std::uint64_t{1} << 30};
constexpr SizeLimits kScrollbackLimits{std::uint64_t{4} << 10, std::uint64_t{64} << 20};
constexpr std::int64_t kMaxLogFiles = 100;

class ConsoleReader {
 public:
  ConsoleReader(Config& config, ErrorSink& errors) : config_(config), errors_(errors) {}

  void read(const toml::table& table, std::size_t index);

 private:
  void check_keys(const toml::table& table, std::string_view object);
  // A required string key; empty when missing or not a string (reported).
  std::string read_string(const toml::table& table, std::string_view key, std::string_view object,
                          std::string_view example);
  void read_size(const toml::table& table, std::string_view key, std::string_view object,
                 SizeLimits limits, std::uint64_t& bytes);
  void read_log_files(const toml::table& table, std::string_view object, ConsoleConfig& console);
  // Checks the link against the console's needs and fills backend_cell.
  void check_link(const toml::table& table, std::string_view object, ConsoleConfig& console);

  Config& config_;
  ErrorSink& errors_;
  std::map<std::string, toml::source_position, std::less<>> cells_seen_;
  std::map<std::string, toml::source_position, std::less<>> links_seen_;
};

void ConsoleReader::read(const toml::table& table, std::size_t index) {
  ConsoleConfig console;
  std::string object = fmt::format("console #{}", index + 1);
  console.cell = read_string(table, "cell", object, "cell = \"guest\"");
  if (!console.cell.empty()) object = fmt::format("console of cell {}", in_quotes(console.cell));
  check_keys(table, object);
  console.link = read_string(table, "link", object, "link = \"guest-console\"");
  read_size(table, "log_size", object, kLogSizeLimits, console.log_size);
  read_log_files(table, object, console);
  read_size(table, "scrollback", object, kScrollbackLimits, console.scrollback);

  if (!console.cell.empty()) {
    const toml::source_position where = table.get("cell")->source().begin;
    if (config_.find_cell(console.cell) == nullptr) {
      errors_.add(where,
                  fmt::format("{}: {} is not a declared cell; add a [[cell]] with name = "
                              "{} or fix the name",
                              object, in_quotes(console.cell), in_quotes(console.cell, '"')));
    }
    const auto [first, inserted] = cells_seen_.emplace(console.cell, where);
    if (!inserted) {
      errors_.add(where, fmt::format("{}: the cell already has a console at {}; a cell has at "
                                     "most one console",
                                     object, errors_.at(first->second)));
    }
  }
  if (!console.link.empty()) check_link(table, object, console);
  config_.consoles.push_back(std::move(console));
}

void ConsoleReader::check_keys(const toml::table& table, std::string_view object) {
  for (auto&& [key, value] : table) {
    if (std::find(kConsoleKeys.begin(), kConsoleKeys.end(), key.str()) != kConsoleKeys.end()) {
      continue;
    }
    errors_.add(key.source().begin,
                fmt::format("{}: unknown key {}{}; valid keys are {}", object, in_quotes(key.str()),
                            key_suggestion(key.str(), kConsoleKeys), join(kConsoleKeys)));
  }
}

std::string ConsoleReader::read_string(const toml::table& table, std::string_view key,
                                       std::string_view object, std::string_view example) {
  const toml::node* node = table.get(key);
  if (node == nullptr) {
    errors_.add(table.source().begin, fmt::format("{}: missing required key {}; add e.g. {}",
                                                  object, in_quotes(key), example));
    return {};
  }
  const auto* text = node->as_string();
  if (text == nullptr || text->get().empty()) {
    errors_.add(
        node->source().begin,
        fmt::format("{}: {} must be a non-empty string, not {}; write e.g. {}", object, key,
                    text == nullptr ? type_name(node->type()) : "an empty string", example));
    return {};
  }
  return text->get();
}

void ConsoleReader::read_size(const toml::table& table, std::string_view key,
                              std::string_view object, SizeLimits limits, std::uint64_t& bytes) {
  const toml::node* node = table.get(key);
  if (node == nullptr) return;
  const toml::source_position where = node->source().begin;
  std::uint64_t value = 0;
  bool parsed = false;
  if (const auto* integer = node->as_integer()) {
    parsed = integer->get() >= 0;
    value = static_cast<std::uint64_t>(integer->get());
  } else if (const auto* text = node->as_string()) {
    parsed = parse_size_checked(text->get(), value) == SizeParse::ok;
  }
  if (!parsed) {
    errors_.add(where, fmt::format("{}: {} is not a size; write a whole number of bytes with an "
                                   "optional unit B, KiB, MiB or GiB, e.g. {} = \"1MiB\"",
                                   object, key, key));
    return;
  }
  if (value < limits.min || value > limits.max) {
    errors_.add(where,
                fmt::format("{}: {} {} is outside {} to {}; pick a size in that range", object, key,
                            format_size(value), format_size(limits.min), format_size(limits.max)));
    return;
  }
  bytes = value;
}

void ConsoleReader::read_log_files(const toml::table& table, std::string_view object,
                                   ConsoleConfig& console) {
  const toml::node* node = table.get("log_files");
  if (node == nullptr) return;
  const auto* integer = node->as_integer();
  if (integer == nullptr || integer->get() < 1 || integer->get() > kMaxLogFiles) {
    errors_.add(node->source().begin,
                fmt::format("{}: log_files must be an integer 1 to {} (the current log plus the "
                            "rotated ones kept), e.g. log_files = 3",
                            object, kMaxLogFiles));
    return;
  }
  console.log_files = static_cast<std::uint32_t>(integer->get());
}

void ConsoleReader::check_link(const toml::table& table, std::string_view object,
                               ConsoleConfig& console) {
  const toml::source_position where = table.get("link")->source().begin;
  const LinkConfig* link = config_.find_link(console.link);
  if (link == nullptr) {
    errors_.add(where, fmt::format("{}: link {} is not a declared link; declare a 2-peer [[link]] "
                                   "with protocol = \"virtio-front:console\" for it",
                                   object, in_quotes(console.link)));
    return;
  }
  const auto [first, inserted] = links_seen_.emplace(console.link, where);
  if (!inserted) {
    errors_.add(where, fmt::format("{}: link {} already carries the console at {}; give each "
                                   "console its own link",
                                   object, in_quotes(console.link), errors_.at(first->second)));
  }
  if (link->cells.size() != 2) {
    errors_.add(where,
                fmt::format("{}: link {} has {} cells, but a console link joins exactly 2 "
                            "(the back end and the cell); give the console a link of its own",
                            object, in_quotes(console.link), link->cells.size()));
    return;
  }
  const int peer = link->peer_id(console.cell);
  if (!console.cell.empty() && peer < 0) {
    errors_.add(where, fmt::format("{}: link {} does not include cell {}; list it in the link's "
                                   "cells",
                                   object, in_quotes(console.link), in_quotes(console.cell)));
    return;
  }
  if (link->protocol != kConsoleProtocol) {
    errors_.add(where, fmt::format("{}: link {} carries protocol {}; a console link needs "
                                   "protocol = \"virtio-front:console\"",
                                   object, in_quotes(console.link), protocol_name(link->protocol)));
  }
  if (link->rw_section_size < ConsoleConfig::kMinRwSection) {
    errors_.add(where,
                fmt::format("{}: link {} has rw_section {}, but the virtio console keeps "
                            "its header, queues and buffers there; use at least {} "
                            "(\"1MiB\" recommended)",
                            object, in_quotes(console.link), format_size(link->rw_section_size),
                            format_size(ConsoleConfig::kMinRwSection)));
  }
  if (peer >= 0) console.backend_cell = link->cells[peer == 0 ? 1 : 0];
}

}  // namespace

void read_consoles(const toml::table& root, Config& config, ErrorSink& errors) {
  const toml::node* node = root.get("console");
  if (node == nullptr) return;
  const toml::array* array = node->as_array();
  if (array == nullptr) {
    errors.add(node->source().begin,
               fmt::format("'console' must be an array of tables, not {}; write each one as "
                           "[[console]] (double brackets)",
                           type_name(node->type())));
    return;
  }
  ConsoleReader reader(config, errors);
  for (std::size_t i = 0; i < array->size(); ++i) {
    if (const toml::table* table = (*array)[i].as_table()) {
      reader.read(*table, i);
    } else {
      errors.add((*array)[i].source().begin,
                 fmt::format("console #{}: must be a table, not {}; write it as [[console]] "
                             "followed by its keys",
                             i + 1, type_name((*array)[i].type())));
    }
  }
}

}  // namespace cellink::hypervisor::detail
