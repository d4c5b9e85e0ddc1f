// The static configuration of cells and links that the daemon serves.
//
// A configuration is TOML (spec: docs/config.md):
//
//   [[cell]]
//   name = "linux"
//
//   [[cell]]
//   name = "rt"
//
//   [[link]]
//   name = "rt-link"
//   cells = ["linux", "rt"]        # order gives peer ids 0, 1, ...
//   rw_section = "0"               # byte size with optional unit (KiB, MiB, GiB)
//   output_section = "64KiB"
//   vectors = 2
//   protocol = "cellink"           # or "undefined", "veth", or an integer
//   backing = "memfd"              # or an absolute path on /dev/shm or hugetlbfs
//
//   [[console]]                    # optional: a virtio console for a cell
//   cell = "rt"                    # whose console it is (the virtio front end)
//   link = "rt-console"            # a 2-peer virtio-front:console link; its other
//                                  # cell is the back end (`cellink console serve`)
//
// load_config() validates the whole file before returning anything: either a
// Config whose every link has a valid Layout, or every error found, each with
// file:line:col, the object it concerns and a remedy.
//
// Threading: plain values; no shared state.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "cellink/ivshmem/layout.hpp"

namespace cellink::hypervisor {

struct CellConfig {
  std::string name;
};

struct LinkBacking {
  enum class Kind : std::uint8_t { memfd, file };
  Kind kind = Kind::memfd;
  std::filesystem::path path;  // absolute; only for Kind::file
};

struct LinkConfig {
  std::string name;
  std::vector<std::string> cells;  // index = peer id
  std::uint64_t rw_section_size = 0;
  std::uint64_t output_section_size = 0;
  std::uint32_t vectors = 0;
  std::uint16_t protocol = 0;
  LinkBacking backing;
  ivshmem::Layout layout;  // computed from the above during validation

  // Peer id of `cell` on this link, or -1 when the cell is not on it.
  [[nodiscard]] int peer_id(std::string_view cell) const noexcept;
};

// A cell's virtual console (docs/console.md): a virtio console carried by a
// 2-peer link, served on the host by `cellink console serve`.
struct ConsoleConfig {
  // The smallest R/W section a console link may have: the header page plus
  // room for two small queues and their buffers.
  static constexpr std::uint64_t kMinRwSection = std::uint64_t{64} * 1024;

  std::string cell;          // the cell whose console this is (the virtio front end)
  std::string link;          // the link that carries it
  std::string backend_cell;  // the link's other cell: the back end's identity on the link
  std::uint64_t log_size = std::uint64_t{1} << 20;     // rotate the log at this size
  std::uint32_t log_files = 3;                         // the log plus the rotated ones kept
  std::uint64_t scrollback = std::uint64_t{64} << 10;  // replayed to each new viewer
};

struct Config {
  std::string source;  // file path, or "<embedded default>"
  std::vector<CellConfig> cells;
  std::vector<LinkConfig> links;
  std::vector<ConsoleConfig> consoles;

  [[nodiscard]] const LinkConfig* find_link(std::string_view name) const noexcept;
  [[nodiscard]] const CellConfig* find_cell(std::string_view name) const noexcept;
  // The console of `cell`, or null when it has none.
  [[nodiscard]] const ConsoleConfig* find_console(std::string_view cell) const noexcept;
};

// One validation problem. `message` already carries "file:line:col: " and
// names the object, e.g.
//   "rt.toml:12:18: link 'rt-link': output_section 3000 is not a multiple of
//    the 4096-byte page; use e.g. \"4KiB\" or \"64KiB\""
struct ConfigError {
  std::string message;
  std::uint32_t line = 0;  // 0 when the error has no position
  std::uint32_t column = 0;
};

struct ConfigResult {
  Config config;                    // meaningful only when errors is empty
  std::vector<ConfigError> errors;  // every problem found, in file order

  [[nodiscard]] bool ok() const noexcept { return errors.empty(); }
};

// Parses and validates TOML text. `source_name` is used in error positions.
[[nodiscard]] ConfigResult parse_config(std::string_view toml_text, std::string_view source_name);

// Reads and validates a file. An unreadable file is reported as an error.
[[nodiscard]] ConfigResult load_config(const std::filesystem::path& path);

// The embedded default: two cells ("host" and "guest") and one link ("demo").
[[nodiscard]] std::string_view default_config_text() noexcept;
[[nodiscard]] ConfigResult load_default_config();

// Parses "64KiB", "1MiB", "4096", "0"; units KiB, MiB, GiB (powers of 1024)
// and B. Returns false for anything else or on overflow.
[[nodiscard]] bool parse_size(std::string_view text, std::uint64_t& bytes) noexcept;

// Human-readable size: "64 KiB", "3 MiB", "4095 B".
[[nodiscard]] std::string format_size(std::uint64_t bytes);

// The protocol name used in configs and output ("cellink", "undefined",
// "veth", "virtio-front:console", ...), or "0x4123" for unnamed ids.
[[nodiscard]] std::string protocol_name(std::uint16_t protocol);

// What `cellink check` prints for a valid config: each link's layout, with
// the offset and size of every section, and the memory object size.
[[nodiscard]] std::string format_layouts(const Config& config);

}  // namespace cellink::hypervisor
