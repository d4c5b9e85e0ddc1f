// The value grammars of the configuration (sizes, protocol ids, backing
// paths), key suggestions, and the layout report that `cellink check`
// prints. Spec: docs/config.md.
#include "config_values.hpp"

#include <algorithm>
#include <array>
#include <cstddef>
#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "cellink/hypervisor/config.hpp"
#include "cellink/ivshmem/protocol.hpp"

namespace cellink::hypervisor {
namespace {

namespace proto = ivshmem::protocol;

struct NamedProtocol {
  std::string_view name;
  std::uint16_t id;
};

// Order is the order error messages list them in: the common ones first.
constexpr std::array kNamedProtocols{
    NamedProtocol{"cellink", proto::kCellink},
    NamedProtocol{"undefined", proto::kUndefined},
    NamedProtocol{"veth", proto::kVirtualEthernet},
    NamedProtocol{"virtio-front:net", proto::kVirtioFrontBase + proto::kVirtioDeviceNet},
    NamedProtocol{"virtio-back:net", proto::kVirtioBackBase + proto::kVirtioDeviceNet},
    NamedProtocol{"virtio-front:block", proto::kVirtioFrontBase + proto::kVirtioDeviceBlock},
    NamedProtocol{"virtio-back:block", proto::kVirtioBackBase + proto::kVirtioDeviceBlock},
    NamedProtocol{"virtio-front:console", proto::kVirtioFrontBase + proto::kVirtioDeviceConsole},
    NamedProtocol{"virtio-back:console", proto::kVirtioBackBase + proto::kVirtioDeviceConsole},
};

struct SizeUnit {
  std::string_view suffix;
  std::uint64_t bytes;
};

// What parse_size() accepts after the number. Bare "KB"/"MB" are left out on
// purpose: they are ambiguous between 1000 and 1024.
constexpr std::array kSizeUnits{
    SizeUnit{"", 1},
    SizeUnit{"B", 1},
    SizeUnit{"KiB", std::uint64_t{1} << 10},
    SizeUnit{"MiB", std::uint64_t{1} << 20},
    SizeUnit{"GiB", std::uint64_t{1} << 30},
};

// What format_size() prints; exact multiples only, so nothing is rounded.
constexpr std::array<std::string_view, 7> kPrintedUnits{"B",   "KiB", "MiB", "GiB",
                                                        "TiB", "PiB", "EiB"};

int hex_digit(char c) noexcept {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Levenshtein distance, for key suggestions; keys are a few characters long.
std::size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<std::size_t> row(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t diagonal = row[0];
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      const std::size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = above;
    }
  }
  return row[b.size()];
}

struct LayoutRow {
  std::string label;
  ivshmem::Section section;
};

std::string describe_link(const LinkConfig& link) {
  std::string peers;
  for (std::size_t peer = 0; peer < link.cells.size(); ++peer) {
    peers += fmt::format("{}{}={}", peer == 0 ? "" : ", ", link.cells[peer], peer);
  }
  const std::string name = protocol_name(link.protocol);
  const std::string protocol =
      name.starts_with("0x") ? name : fmt::format("{} ({:#06x})", name, link.protocol);
  const std::string backing =
      link.backing.kind == LinkBacking::Kind::memfd ? "memfd" : link.backing.path.string();
  return fmt::format("link '{}': {} peers ({}), {} vector{}, protocol {}, backing {}\n", link.name,
                     link.cells.size(), peers, link.vectors, link.vectors == 1 ? "" : "s", protocol,
                     backing);
}

std::string format_layout(const LinkConfig& link) {
  const ivshmem::Layout& layout = link.layout;
  std::vector<LayoutRow> rows{{"state table", layout.state_table()},
                              {"R/W section", layout.rw_section()}};
  for (std::uint32_t peer = 0; peer < layout.peers() && peer < link.cells.size(); ++peer) {
    rows.push_back(
        {fmt::format("output {} ({})", peer, link.cells[peer]), layout.output_section(peer)});
  }

  // Offsets get at least six hex digits and as many as the largest needs, so
  // every row of one link lines up.
  std::size_t hex_digits = 6;
  while (hex_digits < 16 && (layout.used_size() >> (4 * hex_digits)) != 0) ++hex_digits;
  std::size_t label_width = std::string_view{"section"}.size();
  std::size_t size_width = std::string_view{"size"}.size();
  for (const LayoutRow& row : rows) {
    label_width = std::max(label_width, row.label.size());
    size_width = std::max(size_width, format_size(row.section.size).size());
  }
  const std::size_t offset_width = hex_digits + 2;

  std::string out = describe_link(link);
  out += fmt::format("  {:<{}}  {:>{}}  {:>{}}\n", "section", label_width, "offset", offset_width,
                     "size", size_width);
  for (const LayoutRow& row : rows) {
    out += fmt::format("  {:<{}}  0x{:0{}x}  {:>{}}\n", row.label, label_width, row.section.offset,
                       hex_digits, format_size(row.section.size), size_width);
  }
  out += fmt::format("  used {}; memory object {} (the next power of two, mapped whole by QEMU)\n",
                     format_size(layout.used_size()), format_size(layout.memory_size()));
  return out;
}

}  // namespace

namespace detail {

SizeParse parse_size_checked(std::string_view text, std::uint64_t& bytes) noexcept {
  std::size_t digits = 0;
  std::uint64_t count = 0;
  bool overflow = false;
  while (digits < text.size() && text[digits] >= '0' && text[digits] <= '9') {
    const auto digit = static_cast<std::uint64_t>(text[digits] - '0');
    overflow = overflow || __builtin_mul_overflow(count, std::uint64_t{10}, &count) ||
               __builtin_add_overflow(count, digit, &count);
    ++digits;
  }
  if (digits == 0) return SizeParse::malformed;

  std::string_view suffix = text.substr(digits);
  if (suffix.starts_with(' ')) {
    suffix.remove_prefix(1);
    if (suffix.empty()) return SizeParse::malformed;  // "4096 " has a space but no unit
  }
  const auto* unit = std::find_if(kSizeUnits.begin(), kSizeUnits.end(),
                                  [suffix](const SizeUnit& u) { return u.suffix == suffix; });
  if (unit == kSizeUnits.end()) return SizeParse::malformed;

  std::uint64_t total = 0;
  if (overflow || __builtin_mul_overflow(count, unit->bytes, &total)) return SizeParse::overflow;
  bytes = total;
  return SizeParse::ok;
}

bool parse_protocol(std::string_view text, std::uint16_t& protocol) noexcept {
  for (const NamedProtocol& named : kNamedProtocols) {
    if (named.name == text) {
      protocol = named.id;
      return true;
    }
  }
  if (!text.starts_with("0x") || text.size() < 3 || text.size() > 6) return false;
  std::uint16_t value = 0;
  for (const char c : text.substr(2)) {
    const int digit = hex_digit(c);
    if (digit < 0) return false;
    value = static_cast<std::uint16_t>(value * 16 + digit);
  }
  protocol = value;
  return true;
}

// " (did you mean 'x'?)" for a near miss such as a typo, a plural or another
// suffix on the same first word ("output_size"), else "".
std::string key_suggestion(std::string_view key, std::span<const std::string_view> valid) {
  constexpr std::size_t kNearMiss = 2;
  std::string_view best;
  std::size_t best_distance = kNearMiss + 1;
  for (const std::string_view candidate : valid) {
    const std::size_t underscore = candidate.find('_');
    const bool same_first_word = underscore != std::string_view::npos &&
                                 key.starts_with(candidate.substr(0, underscore + 1));
    const std::size_t distance = same_first_word ? kNearMiss : edit_distance(key, candidate);
    if (distance < best_distance) {
      best = candidate;
      best_distance = distance;
    }
  }
  return best.empty() ? std::string{} : fmt::format(" (did you mean '{}'?)", best);
}

std::optional<std::string> backing_path_problem(std::string_view text) {
  constexpr std::string_view kRemedy =
      "use \"memfd\", a file directly in /dev/shm, or a file under /dev/hugepages/ or "
      "/mnt/huge*";
  if (!text.starts_with('/')) {
    return fmt::format("is neither \"memfd\" nor an absolute path; {}", kRemedy);
  }
  const std::filesystem::path path{text};
  if (path.lexically_normal().string() != text || !path.has_filename()) {
    return std::string{"is not a plain path; write it without '.', '..', '//' or a trailing '/'"};
  }
  std::vector<std::string> parts;  // the components below "/"
  for (const auto& part : path.relative_path()) parts.push_back(part.string());
  const bool in_dev_shm = path.parent_path() == "/dev/shm";
  const bool on_hugepages = parts.size() >= 3 && parts[0] == "dev" && parts[1] == "hugepages";
  const bool on_mnt_huge = parts.size() >= 3 && parts[0] == "mnt" && parts[1].starts_with("huge");
  const bool in_tmp = parts.size() >= 2 && parts[0] == "tmp";  // for tests
  if (in_dev_shm || on_hugepages || on_mnt_huge || in_tmp) return std::nullopt;
  return fmt::format("is not on /dev/shm or a hugetlbfs mount; {}", kRemedy);
}

std::string protocol_names() {
  std::string names;
  for (const NamedProtocol& named : kNamedProtocols) {
    names += fmt::format("{}\"{}\"", names.empty() ? "" : ", ", named.name);
  }
  return names;
}

}  // namespace detail

bool parse_size(std::string_view text, std::uint64_t& bytes) noexcept {
  return detail::parse_size_checked(text, bytes) == detail::SizeParse::ok;
}

std::string format_size(std::uint64_t bytes) {
  std::size_t unit = 0;
  while (bytes != 0 && bytes % 1024 == 0 && unit + 1 < kPrintedUnits.size()) {
    bytes /= 1024;
    ++unit;
  }
  return fmt::format("{} {}", bytes, kPrintedUnits[unit]);
}

std::string protocol_name(std::uint16_t protocol) {
  for (const NamedProtocol& named : kNamedProtocols) {
    if (named.id == protocol) return std::string{named.name};
  }
  return fmt::format("{:#06x}", protocol);
}

std::string format_layouts(const Config& config) {
  std::string out;
  for (const LinkConfig& link : config.links) {
    if (!out.empty()) out += '\n';
    out += format_layout(link);
  }
  for (const ConsoleConfig& console : config.consoles) {
    out += fmt::format(
        "\nconsole of cell '{}': link '{}', back end cell '{}'; log rotated at {}, {} files; "
        "scrollback {}\n",
        console.cell, console.link, console.backend_cell, format_size(console.log_size),
        console.log_files, format_size(console.scrollback));
  }
  return out;
}

}  // namespace cellink::hypervisor
