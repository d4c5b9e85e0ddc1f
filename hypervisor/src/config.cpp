// Reading and validating the TOML configuration (spec: docs/config.md).
//
// Validation never stops at the first problem: each check reports into an
// ErrorSink and carries on, so one run shows every mistake in the file. A
// link's Layout is computed only when its peer count and sizes passed, so a
// bad value is reported once, not again as a layout failure.
#include "cellink/hypervisor/config.hpp"

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdio>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <toml++/toml.h>

#include "cellink/ivshmem/protocol.hpp"
#include "config_errors.hpp"
#include "config_values.hpp"

namespace cellink::hypervisor {
namespace {

using detail::ErrorSink;
using detail::in_quotes;
using detail::join;
using detail::type_name;

// Names become socket file names and must fit the 32-byte descriptor name.
constexpr std::size_t kMaxNameLength = 31;

constexpr std::array<std::string_view, 3> kTopLevelKeys{"cell", "link", "console"};
constexpr std::array<std::string_view, 1> kCellKeys{"name"};
constexpr std::array<std::string_view, 7> kLinkKeys{
    "name", "cells", "rw_section", "output_section", "vectors", "protocol", "backing"};

constexpr std::uint64_t kDefaultOutputSection = std::uint64_t{64} * 1024;
constexpr std::uint32_t kDefaultVectors = 2;

constexpr std::string_view kDefaultConfig =
    R"(# cellink's embedded default: two cells and one link between them.
[[cell]]
name = "host"

[[cell]]
name = "guest"

[[link]]
name = "demo"
cells = ["host", "guest"]
rw_section = "0"
output_section = "64KiB"
vectors = 2
protocol = "cellink"
backing = "memfd"
)";

// Where each name was first declared, to report duplicates.
using NameMap = std::map<std::string, toml::source_position, std::less<>>;

// A [[cell]] or [[link]] name as found, and what messages call the object.
struct NameField {
  std::string text;    // as written; empty when missing or not a string
  std::string object;  // "cell 'rt'", or "cell #3" when the name is unusable
};

class Validator {
 public:
  Validator(std::string_view source, ErrorSink& errors) : errors_(errors) {
    config_.source = std::string{source};
  }

  Config validate(const toml::table& root);

 private:
  void check_keys(const toml::table& table, std::string_view object,
                  std::span<const std::string_view> valid);
  const toml::array* table_array(const toml::table& root, std::string_view key);
  void report_missing_sections(const toml::table& root);
  NameField read_name(const toml::table& table, std::string_view kind, std::size_t index,
                      NameMap& seen);
  void read_cell(const toml::table& table, std::size_t index);
  void read_link(const toml::table& table, std::size_t index);
  bool read_link_cells(const toml::table& table, std::string_view object, LinkConfig& link);
  bool read_size(const toml::table& table, std::string_view key, std::string_view object,
                 std::uint64_t& bytes);
  void read_vectors(const toml::table& table, std::string_view object, LinkConfig& link);
  void read_protocol(const toml::table& table, std::string_view object, LinkConfig& link);
  void read_backing(const toml::table& table, std::string_view object, LinkConfig& link);
  void compute_layout(const toml::table& table, std::string_view object, LinkConfig& link);
  void wrong_type(const toml::node& node, std::string_view object, std::string_view key,
                  std::string_view expected, std::string_view example);

  ErrorSink& errors_;
  Config config_;
  // Every string cell name, valid or not, so a link naming a cell whose
  // name was rejected is not reported a second time as "not declared".
  NameMap cell_names_;
  NameMap link_names_;
  struct BackingUse {
    std::string object;
    toml::source_position where;
  };
  std::map<std::string, BackingUse, std::less<>> backing_paths_;
};

Config Validator::validate(const toml::table& root) {
  check_keys(root, "", kTopLevelKeys);
  if (const toml::array* cells = table_array(root, "cell")) {
    for (std::size_t i = 0; i < cells->size(); ++i) {
      if (const toml::table* table = (*cells)[i].as_table()) read_cell(*table, i);
    }
  }
  if (const toml::array* links = table_array(root, "link")) {
    for (std::size_t i = 0; i < links->size(); ++i) {
      if (const toml::table* table = (*links)[i].as_table()) read_link(*table, i);
    }
  }
  report_missing_sections(root);
  detail::read_consoles(root, config_, errors_);
  return std::move(config_);
}

void Validator::check_keys(const toml::table& table, std::string_view object,
                           std::span<const std::string_view> valid) {
  for (auto&& [key, value] : table) {
    if (std::find(valid.begin(), valid.end(), key.str()) != valid.end()) continue;
    if (object.empty()) {
      errors_.add(key.source().begin,
                  fmt::format("unknown top-level key {}{}; the top level holds only [[cell]], "
                              "[[link]] and [[console]] tables",
                              in_quotes(key.str()), detail::key_suggestion(key.str(), valid)));
    } else {
      errors_.add(
          key.source().begin,
          fmt::format("{}: unknown key {}{}; valid keys are {}", object, in_quotes(key.str()),
                      detail::key_suggestion(key.str(), valid), join(valid)));
    }
  }
}

// The [[cell]] or [[link]] array, or null when it is absent or malformed.
const toml::array* Validator::table_array(const toml::table& root, std::string_view key) {
  const toml::node* node = root.get(key);
  if (node == nullptr) return nullptr;
  const toml::array* array = node->as_array();
  if (array == nullptr) {
    errors_.add(node->source().begin,
                fmt::format("'{0}' must be an array of tables, not {1}; write each one as "
                            "[[{0}]] (double brackets)",
                            key, type_name(node->type())));
    return nullptr;
  }
  for (std::size_t i = 0; i < array->size(); ++i) {
    const toml::node& entry = (*array)[i];
    if (!entry.is_table()) {
      errors_.add(entry.source().begin,
                  fmt::format("{} #{}: must be a table, not {}; write it as [[{}]] followed by "
                              "its keys",
                              key, i + 1, type_name(entry.type()), key));
    }
  }
  return array;
}

void Validator::report_missing_sections(const toml::table& root) {
  const auto* cells = root.get_as<toml::array>("cell");
  const auto* links = root.get_as<toml::array>("link");
  const bool no_cells = !root.contains("cell") || (cells != nullptr && cells->empty());
  const bool no_links = !root.contains("link") || (links != nullptr && links->empty());
  const toml::source_position top{1, 1};
  if (no_cells && no_links) {
    errors_.add(top,
                "the configuration declares no cells and no links; a minimal file has two cells "
                "and a link: [[cell]] name = \"host\", [[cell]] name = \"guest\", [[link]] name "
                "= \"demo\" cells = [\"host\", \"guest\"], each table and key on its own line "
                "(see docs/config.md)");
  } else if (no_cells) {
    errors_.add(top,
                "no [[cell]] tables; declare each cell a link connects as [[cell]] with "
                "name = \"...\"");
  } else if (no_links) {
    const std::string first = config_.cells.empty() ? "a" : config_.cells.front().name;
    const std::string second = config_.cells.size() < 2 ? "b" : config_.cells[1].name;
    errors_.add(top, fmt::format("no [[link]] tables, so nothing connects the cells; add one "
                                 "such as [[link]] name = \"demo\" cells = [\"{}\", \"{}\"]",
                                 first, second));
  }
}

NameField Validator::read_name(const toml::table& table, std::string_view kind, std::size_t index,
                               NameMap& seen) {
  const std::string unnamed = fmt::format("{} #{}", kind, index + 1);
  NameField name{{}, unnamed};
  const toml::node* node = table.get("name");
  if (node == nullptr) {
    errors_.add(table.source().begin,
                fmt::format("{}: missing required key 'name'; add name = \"...\" using 1 to {} "
                            "letters, digits, '_' or '-'",
                            unnamed, kMaxNameLength));
    return name;
  }
  if (!node->is_string()) {
    wrong_type(*node, unnamed, "name", "a string", "name = \"...\"");
    return name;
  }
  name.text = node->as_string()->get();
  const auto bad = std::find_if_not(name.text.begin(), name.text.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-';
  });
  if (name.text.empty()) {
    errors_.add(node->source().begin,
                fmt::format("{}: name is empty; use 1 to {} letters, digits, '_' or '-'", unnamed,
                            kMaxNameLength));
  } else if (name.text.size() > kMaxNameLength) {
    errors_.add(node->source().begin,
                fmt::format("{}: name {} is {} characters long; shorten it to at most {} (it must "
                            "fit a 32-byte descriptor field with its NUL)",
                            unnamed, in_quotes(name.text), name.text.size(), kMaxNameLength));
  } else if (bad != name.text.end()) {
    errors_.add(node->source().begin,
                fmt::format("{}: name {} contains {}; use only letters, digits, '_' and '-' (the "
                            "name becomes a socket file name)",
                            unnamed, in_quotes(name.text), in_quotes(std::string_view{&*bad, 1})));
  } else {
    name.object = fmt::format("{} '{}'", kind, name.text);
  }
  const auto [first, inserted] = seen.emplace(name.text, node->source().begin);
  if (!inserted) {
    errors_.add(node->source().begin,
                fmt::format("{}: duplicate {} name; the first {} {} is at {}; give each {} a "
                            "unique name",
                            name.object, kind, kind, in_quotes(name.text),
                            errors_.at(first->second), kind));
  }
  return name;
}

void Validator::read_cell(const toml::table& table, std::size_t index) {
  const NameField name = read_name(table, "cell", index, cell_names_);
  check_keys(table, name.object, kCellKeys);
  config_.cells.push_back({name.text});
}

void Validator::read_link(const toml::table& table, std::size_t index) {
  LinkConfig link;
  link.output_section_size = kDefaultOutputSection;
  link.vectors = kDefaultVectors;
  link.protocol = ivshmem::protocol::kCellink;

  const NameField name = read_name(table, "link", index, link_names_);
  link.name = name.text;
  const std::string& object = name.object;
  check_keys(table, object, kLinkKeys);

  const bool peers_ok = read_link_cells(table, object, link);
  const bool rw_ok = read_size(table, "rw_section", object, link.rw_section_size);
  const bool output_ok = read_size(table, "output_section", object, link.output_section_size);
  bool sizes_ok = rw_ok && output_ok;
  if (sizes_ok && link.rw_section_size == 0 && link.output_section_size == 0) {
    const toml::node* node = table.get("output_section");
    if (node == nullptr) node = table.get("rw_section");
    errors_.add(node != nullptr ? node->source().begin : table.source().begin,
                fmt::format("{}: rw_section and output_section are both 0, so the link cannot "
                            "carry data; set output_section = \"64KiB\" or a non-zero "
                            "rw_section",
                            object));
    sizes_ok = false;
  }
  read_vectors(table, object, link);
  read_protocol(table, object, link);
  read_backing(table, object, link);
  if (peers_ok && sizes_ok) compute_layout(table, object, link);
  config_.links.push_back(std::move(link));
}

// Fills link.cells; false when the peer count makes a layout impossible.
bool Validator::read_link_cells(const toml::table& table, std::string_view object,
                                LinkConfig& link) {
  const toml::node* node = table.get("cells");
  if (node == nullptr) {
    errors_.add(table.source().begin,
                fmt::format("{}: missing required key 'cells'; list the cells it connects in "
                            "peer-id order, e.g. cells = [\"host\", \"guest\"]",
                            object));
    return false;
  }
  const toml::array* list = node->as_array();
  if (list == nullptr) {
    wrong_type(*node, object, "cells", "an array of cell names", "cells = [\"host\", \"guest\"]");
    return false;
  }
  for (std::size_t peer = 0; peer < list->size(); ++peer) {
    const toml::node& entry = (*list)[peer];
    const auto* cell = entry.as_string();
    if (cell == nullptr) {
      wrong_type(entry, object, fmt::format("cells[{}]", peer), "a cell name string",
                 "cells = [\"host\", \"guest\"]");
      link.cells.emplace_back();
      continue;
    }
    const std::string& cell_name = cell->get();
    const auto earlier = std::find(link.cells.begin(), link.cells.end(), cell_name);
    if (earlier != link.cells.end()) {
      errors_.add(entry.source().begin,
                  fmt::format("{}: cell {} is listed twice in cells (as peer {} and peer {}); "
                              "list each cell once",
                              object, in_quotes(cell_name), earlier - link.cells.begin(), peer));
    } else if (!cell_names_.empty() && !cell_names_.contains(cell_name)) {
      // With no cells at all, the one "no [[cell]] tables" error says it all.
      errors_.add(entry.source().begin,
                  fmt::format("{}: cells[{}] {} is not a declared cell; declare it with [[cell]] "
                              "name = {} or fix the spelling",
                              object, peer, in_quotes(cell_name), in_quotes(cell_name, '"')));
    }
    link.cells.push_back(cell_name);
  }
  if (list->size() < ivshmem::kMinPeers) {
    errors_.add(
        node->source().begin,
        fmt::format("{}: cells lists {} cell{}, but a link needs at least {}; add the "
                    "cells it connects",
                    object, list->size(), list->size() == 1 ? "" : "s", ivshmem::kMinPeers));
    return false;
  }
  if (list->size() > ivshmem::kMaxPeers) {
    errors_.add(node->source().begin,
                fmt::format("{}: cells lists {} cells, but cellink supports at most {} peers per "
                            "link; split it into several links",
                            object, list->size(), ivshmem::kMaxPeers));
    return false;
  }
  return true;
}

// Reads an optional size; `bytes` holds the default on entry. False when the
// value is unusable (it has been reported).
bool Validator::read_size(const toml::table& table, std::string_view key, std::string_view object,
                          std::uint64_t& bytes) {
  const toml::node* node = table.get(key);
  if (node == nullptr) return true;
  const toml::source_position where = node->source().begin;
  std::string shown;  // the value as the messages below quote it
  if (const auto* integer = node->as_integer()) {
    if (integer->get() < 0) {
      errors_.add(where, fmt::format("{}: {} {} is negative; a size is a byte count of 0 or more, "
                                     "e.g. \"64KiB\"",
                                     object, key, integer->get()));
      return false;
    }
    bytes = static_cast<std::uint64_t>(integer->get());
    shown = fmt::format("{}", bytes);
  } else if (const auto* text = node->as_string()) {
    switch (detail::parse_size_checked(text->get(), bytes)) {
      case detail::SizeParse::ok: break;
      case detail::SizeParse::malformed:
        errors_.add(where, fmt::format("{}: {} {} is not a size; write a whole number of bytes "
                                       "with an optional unit B, KiB, MiB or GiB, e.g. \"64KiB\"",
                                       object, key, in_quotes(text->get(), '"')));
        return false;
      case detail::SizeParse::overflow:
        errors_.add(where, fmt::format("{}: {} {} does not fit in 64 bits; use a smaller size",
                                       object, key, in_quotes(text->get(), '"')));
        return false;
    }
    const bool plain_number = fmt::format("{}", bytes) == text->get();
    shown = plain_number ? text->get()
                         : fmt::format("{} ({} bytes)", in_quotes(text->get(), '"'), bytes);
  } else {
    wrong_type(*node, object, key, "a size string or an integer",
               fmt::format("{} = \"64KiB\"", key));
    return false;
  }
  if (bytes % ivshmem::kPageSize != 0) {
    errors_.add(where, fmt::format("{}: {} {} is not a multiple of the {}-byte page; use a "
                                   "multiple of 4KiB such as \"64KiB\"",
                                   object, key, shown, ivshmem::kPageSize));
    return false;
  }
  return true;
}

void Validator::read_vectors(const toml::table& table, std::string_view object, LinkConfig& link) {
  const toml::node* node = table.get("vectors");
  if (node == nullptr) return;
  const auto* integer = node->as_integer();
  if (integer == nullptr) {
    wrong_type(*node, object, "vectors", "an integer", "vectors = 2");
    return;
  }
  const std::int64_t vectors = integer->get();
  const toml::source_position where = node->source().begin;
  if (vectors < 0) {
    errors_.add(where, fmt::format("{}: vectors {} is negative; use 1 to {}, e.g. vectors = 2",
                                   object, vectors, ivshmem::kMaxVectors));
  } else if (vectors == 0) {
    errors_.add(where, fmt::format("{}: vectors 0 leaves the link without an interrupt vector; "
                                   "use 1 to {}, e.g. vectors = 2",
                                   object, ivshmem::kMaxVectors));
  } else if (vectors > ivshmem::kMaxVectors) {
    errors_.add(where, fmt::format("{}: vectors {} exceeds QEMU's ivshmem limit of {} vectors per "
                                   "peer; use 1 to {}",
                                   object, vectors, ivshmem::kMaxVectors, ivshmem::kMaxVectors));
  } else {
    link.vectors = static_cast<std::uint32_t>(vectors);
  }
}

void Validator::read_protocol(const toml::table& table, std::string_view object, LinkConfig& link) {
  const toml::node* node = table.get("protocol");
  if (node == nullptr) return;
  const toml::source_position where = node->source().begin;
  if (const auto* text = node->as_string()) {
    if (!detail::parse_protocol(text->get(), link.protocol)) {
      errors_.add(where,
                  fmt::format("{}: protocol {} is not a known protocol name; use one of "
                              "{}, or an integer 0 to 0xffff",
                              object, in_quotes(text->get(), '"'), detail::protocol_names()));
    }
  } else if (const auto* integer = node->as_integer()) {
    if (integer->get() < 0 || integer->get() > 0xffff) {
      errors_.add(where, fmt::format("{}: protocol {} is outside the 16-bit protocol id range; use "
                                     "an integer 0 to 0xffff or a name such as \"cellink\"",
                                     object, integer->get()));
    } else {
      link.protocol = static_cast<std::uint16_t>(integer->get());
    }
  } else {
    wrong_type(*node, object, "protocol", "a protocol name or an integer",
               "protocol = \"cellink\"");
  }
}

void Validator::read_backing(const toml::table& table, std::string_view object, LinkConfig& link) {
  const toml::node* node = table.get("backing");
  if (node == nullptr) return;
  const auto* text = node->as_string();
  if (text == nullptr) {
    wrong_type(*node, object, "backing", "a string", "backing = \"memfd\"");
    return;
  }
  const std::string& backing = text->get();
  if (backing == "memfd") return;
  const toml::source_position where = node->source().begin;
  if (const auto problem = detail::backing_path_problem(backing)) {
    errors_.add(where, fmt::format("{}: backing {} {}", object, in_quotes(backing), *problem));
    return;
  }
  const auto [first, inserted] =
      backing_paths_.emplace(backing, BackingUse{std::string{object}, where});
  if (!inserted) {
    errors_.add(where, fmt::format("{}: backing {} is already used by {} at {}; give each link "
                                   "its own backing file",
                                   object, in_quotes(backing), first->second.object,
                                   errors_.at(first->second.where)));
    return;
  }
  link.backing = {LinkBacking::Kind::file, std::filesystem::path{backing}};
}

void Validator::compute_layout(const toml::table& table, std::string_view object,
                               LinkConfig& link) {
  const ivshmem::LayoutRequest request{static_cast<std::uint32_t>(link.cells.size()),
                                       link.rw_section_size, link.output_section_size};
  const ivshmem::LayoutError result = ivshmem::Layout::compute(request, link.layout);
  if (result == ivshmem::LayoutError::ok) return;
  const toml::node* node = table.get("output_section");
  if (node == nullptr) node = table.get("rw_section");
  const toml::source_position where = node != nullptr ? node->source().begin : table.source().begin;
  if (result == ivshmem::LayoutError::overflow) {
    errors_.add(where, fmt::format("{}: the layout overflows: state table + rw_section {} + {} x "
                                   "output_section {} exceeds the {} (2^62-byte) limit of one "
                                   "memory object; use smaller sections or fewer cells",
                                   object, format_size(link.rw_section_size), request.peers,
                                   format_size(link.output_section_size),
                                   format_size(ivshmem::Layout::kMaxMemorySize)));
  } else {
    // The checks above should make this unreachable; report rather than hide it.
    errors_.add(where, fmt::format("{}: {}; fix the link's sizes and cells", object,
                                   ivshmem::describe(result)));
  }
}

void Validator::wrong_type(const toml::node& node, std::string_view object, std::string_view key,
                           std::string_view expected, std::string_view example) {
  errors_.add(node.source().begin, fmt::format("{}: {} must be {}, not {}; write e.g. {}", object,
                                               key, expected, type_name(node.type()), example));
}

// Reads the whole file; on failure returns the errno value.
int read_file(const std::filesystem::path& path, std::string& text) {
  struct Closer {
    void operator()(std::FILE* file) const noexcept { std::fclose(file); }
  };
  const std::unique_ptr<std::FILE, Closer> file{std::fopen(path.c_str(), "rb")};
  if (!file) return errno;
  std::array<char, 4096> chunk{};
  std::size_t got = 0;
  while ((got = std::fread(chunk.data(), 1, chunk.size(), file.get())) > 0) {
    text.append(chunk.data(), got);
  }
  return std::ferror(file.get()) != 0 ? errno : 0;
}

}  // namespace

int LinkConfig::peer_id(std::string_view cell) const noexcept {
  const auto found = std::find(cells.begin(), cells.end(), cell);
  return found == cells.end() ? -1 : static_cast<int>(found - cells.begin());
}

const LinkConfig* Config::find_link(std::string_view name) const noexcept {
  const auto found = std::find_if(links.begin(), links.end(),
                                  [name](const LinkConfig& link) { return link.name == name; });
  return found == links.end() ? nullptr : &*found;
}

const CellConfig* Config::find_cell(std::string_view name) const noexcept {
  const auto found = std::find_if(cells.begin(), cells.end(),
                                  [name](const CellConfig& cell) { return cell.name == name; });
  return found == cells.end() ? nullptr : &*found;
}

const ConsoleConfig* Config::find_console(std::string_view cell) const noexcept {
  const auto found =
      std::find_if(consoles.begin(), consoles.end(),
                   [cell](const ConsoleConfig& console) { return console.cell == cell; });
  return found == consoles.end() ? nullptr : &*found;
}

ConfigResult parse_config(std::string_view toml_text, std::string_view source_name) {
  ConfigResult result;
  ErrorSink errors(source_name);
  try {
    const toml::table root = toml::parse(toml_text, source_name);
    result.config = Validator(source_name, errors).validate(root);
  } catch (const toml::parse_error& error) {
    result.config.source = std::string{source_name};
    errors.add(
        error.source().begin,
        fmt::format("invalid TOML: {}; fix the syntax at this position", error.description()));
  }
  result.errors = errors.take();
  return result;
}

ConfigResult load_config(const std::filesystem::path& path) {
  std::string text;
  if (const int error = read_file(path, text); error != 0) {
    ConfigResult result;
    result.config.source = path.string();
    result.errors.push_back(
        {fmt::format("{}: cannot read: {}", path.string(), std::system_category().message(error)),
         0, 0});
    return result;
  }
  return parse_config(text, path.string());
}

std::string_view default_config_text() noexcept {
  return kDefaultConfig;
}

ConfigResult load_default_config() {
  return parse_config(kDefaultConfig, "<embedded default>");
}

}  // namespace cellink::hypervisor
