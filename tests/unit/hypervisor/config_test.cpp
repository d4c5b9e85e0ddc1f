// The TOML configuration: values, validation, error positions and the
// layout report (spec: docs/config.md).
//
// Fixtures live in configs/. Each bad-*.toml starts with
//   # expect: <file>:<line>:<col>: <object>: <what is wrong>
// and must produce exactly one error that contains that text; the CLI tests
// reuse the same line to check `cellink check` output. good-*.toml must load.
#include "cellink/hypervisor/config.hpp"

#include <algorithm>
#include <array>
#include <cctype>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <string_view>
#include <vector>

#include <gtest/gtest.h>

#include "cellink/ivshmem/layout.hpp"
#include "cellink/ivshmem/protocol.hpp"

namespace cellink::hypervisor {
namespace {

namespace fs = std::filesystem;

const fs::path kConfigDir{CELLINK_TEST_CONFIG_DIR};

// Two cells on lines 1-4, so with_link() puts [[link]] on line 5, its name on
// line 6 and the given keys from line 7.
constexpr std::string_view kTwoCells =
    "[[cell]]\n"
    "name = \"linux\"\n"
    "[[cell]]\n"
    "name = \"rt\"\n";

// A link between the two cells, to append after more [[cell]] tables.
constexpr std::string_view kLinkOfTwo = "[[link]]\nname = \"l\"\ncells = [\"linux\", \"rt\"]\n";

std::string with_link(std::string_view link_keys) {
  return std::string{kTwoCells} + "[[link]]\nname = \"rt-link\"\n" + std::string{link_keys};
}

ConfigResult parse(std::string_view text) {
  return parse_config(text, "t.toml");
}

std::string messages(const ConfigResult& result) {
  std::string all;
  for (const ConfigError& error : result.errors) all += "\n  " + error.message;
  return all.empty() ? "\n  (no errors)" : all;
}

// Exactly one error, containing `text`, at line:column (column 0: any).
testing::AssertionResult HasOnlyError(const ConfigResult& result, std::string_view text,
                                      std::uint32_t line, std::uint32_t column = 0) {
  if (result.errors.size() != 1) {
    return testing::AssertionFailure()
           << "expected exactly one error containing \"" << text << "\", got:" << messages(result);
  }
  const ConfigError& error = result.errors.front();
  if (error.message.find(text) == std::string::npos || error.line != line ||
      (column != 0 && error.column != column)) {
    return testing::AssertionFailure()
           << "expected \"" << text << "\" at " << line << ":" << column << ", got " << error.line
           << ":" << error.column << ":" << messages(result);
  }
  return testing::AssertionSuccess();
}

// ---------------------------------------------------------------- defaults

TEST(Config, EmbeddedDefaultHasHostAndGuestOnLinkDemo) {
  const ConfigResult result = load_default_config();
  ASSERT_TRUE(result.ok()) << messages(result);
  const Config& config = result.config;
  EXPECT_EQ(config.source, "<embedded default>");
  ASSERT_EQ(config.cells.size(), 2U);
  EXPECT_EQ(config.cells[0].name, "host");
  EXPECT_EQ(config.cells[1].name, "guest");
  ASSERT_EQ(config.links.size(), 1U);
  const LinkConfig& demo = config.links[0];
  EXPECT_EQ(demo.name, "demo");
  EXPECT_EQ(demo.cells, (std::vector<std::string>{"host", "guest"}));
  EXPECT_EQ(demo.rw_section_size, 0U);
  EXPECT_EQ(demo.output_section_size, 64U * 1024);
  EXPECT_EQ(demo.vectors, 2U);
  EXPECT_EQ(demo.protocol, ivshmem::protocol::kCellink);
  EXPECT_EQ(demo.backing.kind, LinkBacking::Kind::memfd);
}

TEST(Config, EmbeddedDefaultLayoutIsStateTableThenTwo64KiBOutputs) {
  const ConfigResult result = load_default_config();
  ASSERT_TRUE(result.ok()) << messages(result);
  const ivshmem::Layout& layout = result.config.links.at(0).layout;
  EXPECT_EQ(layout.peers(), 2U);
  EXPECT_EQ(layout.state_table(), (ivshmem::Section{0, 4096}));
  EXPECT_EQ(layout.rw_section(), (ivshmem::Section{0x1000, 0}));
  EXPECT_EQ(layout.output_section(0), (ivshmem::Section{0x1000, 64 * 1024U}));
  EXPECT_EQ(layout.output_section(1), (ivshmem::Section{0x11000, 64 * 1024U}));
  EXPECT_EQ(layout.used_size(), 132U * 1024);
  EXPECT_EQ(layout.memory_size(), 256U * 1024);
}

TEST(Config, EmbeddedDefaultTextParsesLikeAnyOtherFile) {
  const ConfigResult from_text = parse_config(default_config_text(), "default.toml");
  ASSERT_TRUE(from_text.ok()) << messages(from_text);
  EXPECT_EQ(from_text.config.links.at(0).layout, load_default_config().config.links.at(0).layout);
}

TEST(Config, AppliesDefaultsToOptionalLinkKeys) {
  const ConfigResult result = parse(with_link("cells = [\"linux\", \"rt\"]\n"));
  ASSERT_TRUE(result.ok()) << messages(result);
  const LinkConfig& link = result.config.links.at(0);
  EXPECT_EQ(link.rw_section_size, 0U);
  EXPECT_EQ(link.output_section_size, 64U * 1024);
  EXPECT_EQ(link.vectors, 2U);
  EXPECT_EQ(link.protocol, ivshmem::protocol::kCellink);
  EXPECT_EQ(link.backing.kind, LinkBacking::Kind::memfd);
}

// ---------------------------------------------------------------- accepted

TEST(Config, AcceptsThreeCellLinkWithPeerIdsInListedOrder) {
  const ConfigResult result = load_config(kConfigDir / "good-three-peers.toml");
  ASSERT_TRUE(result.ok()) << messages(result);
  const LinkConfig* link = result.config.find_link("telemetry");
  ASSERT_NE(link, nullptr);
  EXPECT_EQ(link->peer_id("rt"), 0);
  EXPECT_EQ(link->peer_id("linux"), 1);
  EXPECT_EQ(link->peer_id("logger"), 2);
  EXPECT_EQ(link->peer_id("nobody"), -1);
  EXPECT_EQ(link->layout.peers(), 3U);
  EXPECT_EQ(link->layout.output_section(2), (ivshmem::Section{0x22000, 64 * 1024U}));
}

TEST(Config, AcceptsSixteenCellLink) {
  const ConfigResult result = load_config(kConfigDir / "good-sixteen-peers.toml");
  ASSERT_TRUE(result.ok()) << messages(result);
  const LinkConfig& link = result.config.links.at(0);
  EXPECT_EQ(link.cells.size(), ivshmem::kMaxPeers);
  EXPECT_EQ(link.vectors, ivshmem::kMaxVectors);
  EXPECT_EQ(link.layout.output_section(15), (ivshmem::Section{0x1f000, 8192}));
}

TEST(Config, FindsCellsAndLinksByName) {
  const ConfigResult result = load_default_config();
  ASSERT_TRUE(result.ok()) << messages(result);
  ASSERT_NE(result.config.find_cell("guest"), nullptr);
  EXPECT_EQ(result.config.find_cell("guest")->name, "guest");
  EXPECT_EQ(result.config.find_cell("demo"), nullptr);
  ASSERT_NE(result.config.find_link("demo"), nullptr);
  EXPECT_EQ(result.config.find_link("host"), nullptr);
}

TEST(Config, AcceptsIntegerSizesAndSizeStringsWithASpace) {
  const ConfigResult result = parse(
      with_link("cells = [\"linux\", \"rt\"]\nrw_section = 8192\noutput_section = \"1 MiB\"\n"));
  ASSERT_TRUE(result.ok()) << messages(result);
  EXPECT_EQ(result.config.links.at(0).rw_section_size, 8192U);
  EXPECT_EQ(result.config.links.at(0).output_section_size, 1U << 20);
}

TEST(Config, AcceptsBackingFilesOnSharedMemoryMounts) {
  for (const std::string_view path :
       {"/dev/shm/cellink-a", "/dev/hugepages/a", "/dev/hugepages/x/a", "/mnt/huge/a",
        "/mnt/hugepages-1G/a", "/tmp/a", "/tmp/x/a"}) {
    const ConfigResult result =
        parse(with_link("cells = [\"linux\", \"rt\"]\nbacking = \"" + std::string{path} + "\"\n"));
    ASSERT_TRUE(result.ok()) << path << messages(result);
    EXPECT_EQ(result.config.links.at(0).backing.kind, LinkBacking::Kind::file);
    EXPECT_EQ(result.config.links.at(0).backing.path, fs::path{path});
  }
}

TEST(Config, RejectsBackingFilesElsewhere) {
  for (const std::string_view path :
       {"/dev/shm/dir/a", "/dev/shm", "/dev/hugepages", "/mnt/huge", "/mnt/data/a", "/tmp",
        "/etc/passwd", "/tmp/a/", "/tmp//a", "/tmp/./a", "dev/shm/a", "", "memfd:x"}) {
    const ConfigResult result =
        parse(with_link("cells = [\"linux\", \"rt\"]\nbacking = \"" + std::string{path} + "\"\n"));
    EXPECT_TRUE(HasOnlyError(result, "link 'rt-link': backing '" + std::string{path} + "'", 8, 11))
        << path;
  }
}

// ---------------------------------------------------------------- rejected

TEST(Config, RejectsNonPageOutputSectionWithLineNumber) {
  const ConfigResult result =
      parse(with_link("cells = [\"linux\", \"rt\"]\noutput_section = 3000\n"));
  ASSERT_EQ(result.errors.size(), 1U) << messages(result);
  EXPECT_EQ(result.errors[0].message,
            "t.toml:8:18: link 'rt-link': output_section 3000 is not a multiple of the 4096-byte "
            "page; use a multiple of 4KiB such as \"64KiB\"");
  EXPECT_EQ(result.errors[0].line, 8U);
  EXPECT_EQ(result.errors[0].column, 18U);
}

TEST(Config, ShowsTheBytesOfANonPageSizeWrittenWithAUnit) {
  const ConfigResult result =
      parse(with_link("cells = [\"linux\", \"rt\"]\nrw_section = \"3KiB\"\n"));
  EXPECT_TRUE(HasOnlyError(
      result, "rw_section \"3KiB\" (3072 bytes) is not a multiple of the 4096-byte page", 8, 14));
}

TEST(Config, RejectsLayoutOverflowFromTheRwSection) {
  const ConfigResult result =
      parse(with_link("cells = [\"linux\", \"rt\"]\nrw_section = \"4611686018427387904\"\n"));
  EXPECT_TRUE(HasOnlyError(result, "link 'rt-link': the layout overflows", 8, 14));
}

TEST(Config, RejectsWrongValueTypesForEveryKey) {
  struct Case {
    std::string_view keys;  // from line 7
    std::string_view expected;
    std::uint32_t line;
  };
  const std::array cases{
      Case{"cells = \"linux\"\n", "cells must be an array of cell names, not a string", 7},
      Case{"cells = [\"linux\", 3]\n", "cells[1] must be a cell name string, not an integer", 7},
      Case{"cells = [\"linux\", \"rt\"]\nrw_section = 1.5\n",
           "rw_section must be a size string or an integer, not a floating-point number", 8},
      Case{"cells = [\"linux\", \"rt\"]\noutput_section = true\n",
           "output_section must be a size string or an integer, not a boolean", 8},
      Case{"cells = [\"linux\", \"rt\"]\nvectors = [2]\n",
           "vectors must be an integer, not an array", 8},
      Case{"cells = [\"linux\", \"rt\"]\nprotocol = 1.0\n",
           "protocol must be a protocol name or an integer, not a floating-point number", 8},
      Case{"cells = [\"linux\", \"rt\"]\nbacking = { path = \"/dev/shm/a\" }\n",
           "backing must be a string, not a table", 8},
  };
  for (const Case& c : cases) {
    EXPECT_TRUE(HasOnlyError(parse(with_link(c.keys)), c.expected, c.line)) << c.keys;
  }
  EXPECT_TRUE(
      HasOnlyError(parse(std::string{kTwoCells} + "[[cell]]\nname = 7\n" + std::string{kLinkOfTwo}),
                   "cell #3: name must be a string, not an integer", 6, 8));
}

TEST(Config, RejectsNegativeVectorsAndProtocols) {
  EXPECT_TRUE(HasOnlyError(parse(with_link("cells = [\"linux\", \"rt\"]\nvectors = -1\n")),
                           "link 'rt-link': vectors -1 is negative", 8, 11));
  EXPECT_TRUE(HasOnlyError(parse(with_link("cells = [\"linux\", \"rt\"]\nprotocol = -1\n")),
                           "link 'rt-link': protocol -1 is outside the 16-bit protocol id range", 8,
                           12));
}

TEST(Config, RejectsAnEmptyName) {
  EXPECT_TRUE(HasOnlyError(
      parse(std::string{kTwoCells} + "[[cell]]\nname = \"\"\n" + std::string{kLinkOfTwo}),
      "cell #3: name is empty", 6, 8));
}

TEST(Config, ReportsSyntaxErrorsAtTheirPosition) {
  EXPECT_TRUE(HasOnlyError(parse("[[cell]]\nname = \"a\nbroken\n"), "t.toml:2:", 2));
  EXPECT_TRUE(HasOnlyError(parse("[[cell]]\nname = \"a\"\nname = \"b\"\n"), "invalid TOML: ", 3));
}

TEST(Config, SuggestsTheNearestValidKey) {
  // A misspelt required key is also reported as missing, at the [[link]] header.
  const ConfigResult result = parse(with_link("cell = [\"linux\", \"rt\"]\n"));
  ASSERT_EQ(result.errors.size(), 2U) << messages(result);
  EXPECT_NE(result.errors[0].message.find("missing required key 'cells'"), std::string::npos);
  EXPECT_NE(result.errors[1].message.find("unknown key 'cell' (did you mean 'cells'?)"),
            std::string::npos);
  EXPECT_TRUE(HasOnlyError(parse(with_link("cells = [\"linux\", \"rt\"]\nvector = 2\n")),
                           "unknown key 'vector' (did you mean 'vectors'?)", 8, 1));
  EXPECT_TRUE(HasOnlyError(parse(std::string{kTwoCells} + std::string{kLinkOfTwo} + "[links]\n"),
                           "unknown top-level key 'links' (did you mean 'link'?)", 8, 2));
}

TEST(Config, NamesAnObjectWithABadNameByItsPosition) {
  const ConfigResult result = parse(std::string{kTwoCells} +
                                    "[[link]]\nname = \"rt link\"\ncells = [\"linux\", \"rt\"]\n"
                                    "vectors = 0\n");
  ASSERT_EQ(result.errors.size(), 2U) << messages(result);
  EXPECT_NE(result.errors[0].message.find("t.toml:6:8: link #1: name 'rt link' contains ' '"),
            std::string::npos);
  EXPECT_NE(result.errors[1].message.find("t.toml:8:11: link #1: vectors 0"), std::string::npos);
}

TEST(Config, ReportsEveryErrorInFileOrder) {
  const ConfigResult result = parse(R"([[cell]]
name = "linux"
cpus = 4
[[cell]]
name = "rt"
[[cell]]
name = "rt"
[[link]]
name = "a"
cells = ["linux", "rt", "ghost"]
output_section = "1.5MiB"
vectors = 0
backing = "/dev/shm/x"
[[link]]
name = "b"
cells = ["rt", "linux"]
protocol = "smoke-signals"
backing = "/dev/shm/x"
)");
  const std::array<std::string_view, 7> expected{
      "t.toml:3:1: cell 'linux': unknown key 'cpus'",
      "t.toml:7:8: cell 'rt': duplicate cell name",
      "t.toml:10:25: link 'a': cells[2] 'ghost' is not a declared cell",
      "t.toml:11:18: link 'a': output_section \"1.5MiB\" is not a size",
      "t.toml:12:11: link 'a': vectors 0 leaves the link without an interrupt vector",
      "t.toml:17:12: link 'b': protocol \"smoke-signals\" is not a known protocol name",
      "t.toml:18:11: link 'b': backing '/dev/shm/x' is already used by link 'a' at t.toml:13:11",
  };
  ASSERT_EQ(result.errors.size(), expected.size()) << messages(result);
  for (std::size_t i = 0; i < expected.size(); ++i) {
    EXPECT_TRUE(result.errors[i].message.starts_with(expected[i])) << result.errors[i].message;
  }
}

TEST(Config, EveryFixtureErrorEndsWithARemedyAfterASemicolon) {
  for (const fs::directory_entry& entry : fs::directory_iterator(kConfigDir)) {
    if (!entry.path().filename().string().starts_with("bad-")) continue;
    for (const ConfigError& error : load_config(entry.path()).errors) {
      EXPECT_NE(error.message.find("; "), std::string::npos) << error.message;
    }
  }
}

TEST(LoadConfig, ReportsAMissingFileWithTheSystemReason) {
  const fs::path missing = kConfigDir / "no-such-file.toml";
  const ConfigResult result = load_config(missing);
  ASSERT_EQ(result.errors.size(), 1U) << messages(result);
  EXPECT_EQ(result.errors[0].message,
            missing.string() + ": cannot read: No such file or directory");
  EXPECT_EQ(result.errors[0].line, 0U);
}

TEST(LoadConfig, ReportsADirectoryAsUnreadable) {
  const ConfigResult result = load_config(kConfigDir);
  ASSERT_EQ(result.errors.size(), 1U) << messages(result);
  EXPECT_EQ(result.errors[0].message, kConfigDir.string() + ": cannot read: Is a directory");
}

// ---------------------------------------------------------------- values

TEST(ParseSize, AcceptsBytesAndBinaryUnits) {
  struct Case {
    std::string_view text;
    std::uint64_t bytes;
  };
  const std::array cases{
      Case{"0", 0},
      Case{"4096", 4096},
      Case{"4096B", 4096},
      Case{"4096 B", 4096},
      Case{"64KiB", 64 << 10},
      Case{"64 KiB", 64 << 10},
      Case{"1MiB", 1 << 20},
      Case{"2GiB", std::uint64_t{2} << 30},
      Case{"007KiB", 7 << 10},
      Case{"17179869183GiB", (std::uint64_t{17179869183}) << 30},
      Case{"18446744073709551615", std::numeric_limits<std::uint64_t>::max()},
  };
  for (const Case& c : cases) {
    std::uint64_t bytes = 1;
    EXPECT_TRUE(parse_size(c.text, bytes)) << c.text;
    EXPECT_EQ(bytes, c.bytes) << c.text;
  }
}

TEST(ParseSize, RejectsMalformedTextAndLeavesTheOutputAlone) {
  for (const std::string_view text :
       {"", " ", "-4096", "+4096", "1.5MiB", "64KB", "64kib", "64K", "64 ", " 64", "64  KiB", "KiB",
        "0x1000", "1TiB", "4096 B ", "1e6", "64 KiB\n"}) {
    std::uint64_t bytes = 77;
    EXPECT_FALSE(parse_size(text, bytes)) << '"' << text << '"';
    EXPECT_EQ(bytes, 77U) << text;
  }
}

TEST(ParseSize, RejectsValuesThatOverflow64Bits) {
  for (const std::string_view text :
       {"18446744073709551616", "99999999999999999999999", "17179869184GiB", "18014398509481984KiB",
        "17592186044416MiB"}) {
    std::uint64_t bytes = 77;
    EXPECT_FALSE(parse_size(text, bytes)) << text;
    EXPECT_EQ(bytes, 77U) << text;
  }
}

TEST(FormatSize, UsesTheLargestExactUnit) {
  struct Case {
    std::uint64_t bytes;
    std::string_view text;
  };
  const std::array cases{
      Case{0, "0 B"},
      Case{1, "1 B"},
      Case{4095, "4095 B"},
      Case{4096, "4 KiB"},
      Case{64 << 10, "64 KiB"},
      Case{1536 << 10, "1536 KiB"},
      Case{1 << 20, "1 MiB"},
      Case{3 << 20, "3 MiB"},
      Case{std::uint64_t{1} << 30, "1 GiB"},
      Case{std::uint64_t{1} << 62, "4 EiB"},
      Case{std::numeric_limits<std::uint64_t>::max(), "18446744073709551615 B"},
  };
  for (const Case& c : cases) EXPECT_EQ(format_size(c.bytes), c.text) << c.bytes;
}

TEST(FormatSize, ParsesBackForSizesUpToGiBUnits) {
  for (std::uint64_t bytes = 1; bytes < (std::uint64_t{1} << 40); bytes = bytes * 3 + 1024) {
    for (const std::uint64_t value : {bytes, bytes & ~std::uint64_t{4095}, bytes << 10}) {
      std::uint64_t parsed = 0;
      if (format_size(value).ends_with("TiB")) continue;
      ASSERT_TRUE(parse_size(format_size(value), parsed)) << format_size(value);
      EXPECT_EQ(parsed, value);
    }
  }
}

TEST(ProtocolName, NamesRoundTripThroughAConfig) {
  namespace p = ivshmem::protocol;
  const std::array<std::pair<std::string_view, std::uint16_t>, 9> names{{
      {"cellink", p::kCellink},
      {"undefined", p::kUndefined},
      {"veth", p::kVirtualEthernet},
      {"virtio-front:net", 0x8001},
      {"virtio-back:net", 0xc001},
      {"virtio-front:block", 0x8002},
      {"virtio-back:block", 0xc002},
      {"virtio-front:console", 0x8003},
      {"virtio-back:console", 0xc003},
  }};
  for (const auto& [name, id] : names) {
    EXPECT_EQ(protocol_name(id), name);
    const ConfigResult result =
        parse(with_link("cells = [\"linux\", \"rt\"]\nprotocol = \"" + std::string{name} + "\"\n"));
    ASSERT_TRUE(result.ok()) << name << messages(result);
    EXPECT_EQ(result.config.links.at(0).protocol, id) << name;
  }
}

TEST(ProtocolName, UnnamedIdsPrintAsHexAndParseBack) {
  EXPECT_EQ(protocol_name(0x4123), "0x4123");
  EXPECT_EQ(protocol_name(0x0005), "0x0005");
  EXPECT_EQ(protocol_name(0xffff), "0xffff");
  for (std::uint32_t id = 0; id <= 0xffff; id += 251) {
    const auto protocol = static_cast<std::uint16_t>(id);
    const std::string keys =
        "cells = [\"linux\", \"rt\"]\nprotocol = \"" + protocol_name(protocol) + "\"\n";
    const ConfigResult by_name = parse(with_link(keys));
    ASSERT_TRUE(by_name.ok()) << protocol_name(protocol) << messages(by_name);
    EXPECT_EQ(by_name.config.links.at(0).protocol, protocol);
    const ConfigResult by_number =
        parse(with_link("cells = [\"linux\", \"rt\"]\nprotocol = " + std::to_string(id) + "\n"));
    ASSERT_TRUE(by_number.ok()) << id << messages(by_number);
    EXPECT_EQ(by_number.config.links.at(0).protocol, protocol);
  }
}

// ---------------------------------------------------------------- report

TEST(FormatLayouts, PrintsEverySectionOfTheDefaultWithHexOffsets) {
  const ConfigResult result = load_default_config();
  ASSERT_TRUE(result.ok()) << messages(result);
  EXPECT_EQ(
      format_layouts(result.config),
      "link 'demo': 2 peers (host=0, guest=1), 2 vectors, protocol cellink (0x4c11), "
      "backing memfd\n"
      "  section             offset    size\n"
      "  state table       0x000000   4 KiB\n"
      "  R/W section       0x001000     0 B\n"
      "  output 0 (host)   0x001000  64 KiB\n"
      "  output 1 (guest)  0x011000  64 KiB\n"
      "  used 132 KiB; memory object 256 KiB (the next power of two, mapped whole by QEMU)\n");
}

TEST(FormatLayouts, SeparatesLinksAndShowsFileBackingAndUnnamedProtocols) {
  const ConfigResult result = load_config(kConfigDir / "good-file-backing.toml");
  ASSERT_TRUE(result.ok()) << messages(result);
  const std::string report = format_layouts(result.config);
  EXPECT_NE(report.find("64 KiB\n  used 132 KiB; memory object 256 KiB (the next power of two, "
                        "mapped whole by QEMU)\n\nlink 'net':"),
            std::string::npos)
      << report;
  EXPECT_NE(
      report.find("protocol virtio-back:console (0xc003), backing /dev/shm/cellink-console\n"),
      std::string::npos)
      << report;
  EXPECT_NE(report.find("1 vector, protocol 0x4123, backing /mnt/huge/cellink-bulk\n"),
            std::string::npos)
      << report;
  EXPECT_NE(report.find("  output 1 (rt)     0x201000  2 MiB\n"), std::string::npos) << report;
}

// ---------------------------------------------------------------- consoles

TEST(Config, ReadsAConsoleAndNamesTheLinksOtherCellAsItsBackEnd) {
  const ConfigResult result = load_config(kConfigDir / "good-console.toml");
  ASSERT_TRUE(result.ok()) << messages(result);
  ASSERT_EQ(result.config.consoles.size(), 1U);
  const ConsoleConfig* console = result.config.find_console("guest");
  ASSERT_NE(console, nullptr);
  EXPECT_EQ(console->link, "guest-console");
  EXPECT_EQ(console->backend_cell, "console");
  EXPECT_EQ(console->log_size, 256U * 1024U);
  EXPECT_EQ(console->log_files, 5U);
  EXPECT_EQ(console->scrollback, 16U * 1024U);
  EXPECT_EQ(result.config.find_console("console"), nullptr);
  EXPECT_NE(format_layouts(result.config)
                .find("console of cell 'guest': link 'guest-console', back end cell 'console'"),
            std::string::npos)
      << format_layouts(result.config);
}

TEST(Config, AConsoleWithoutOptionalKeysGetsTheDefaults) {
  const ConfigResult result = parse_config(R"(
[[cell]]
name = "a"
[[cell]]
name = "b"
[[link]]
name = "l"
cells = ["b", "a"]
protocol = "virtio-front:console"
rw_section = "64KiB"
output_section = "0"
[[console]]
cell = "b"
link = "l"
)",
                                           "inline");
  ASSERT_TRUE(result.ok()) << messages(result);
  const ConsoleConfig& console = result.config.consoles.at(0);
  EXPECT_EQ(console.backend_cell, "a");
  EXPECT_EQ(console.log_size, 1024U * 1024U);
  EXPECT_EQ(console.log_files, 3U);
  EXPECT_EQ(console.scrollback, 64U * 1024U);
}

// ---------------------------------------------------------------- fixtures

constexpr std::array<std::string_view, 42> kBadFixtures{
    "bad-backing-dot-dot.toml",
    "bad-backing-location.toml",
    "bad-backing-relative.toml",
    "bad-cell-twice-in-link.toml",
    "bad-console-cell-not-on-link.toml",
    "bad-console-log-size.toml",
    "bad-console-missing-cell.toml",
    "bad-console-small-rw-section.toml",
    "bad-console-three-peers.toml",
    "bad-console-twice.toml",
    "bad-console-unknown-key.toml",
    "bad-console-unknown-link.toml",
    "bad-console-wrong-protocol.toml",
    "bad-duplicate-backing.toml",
    "bad-duplicate-cell.toml",
    "bad-duplicate-link.toml",
    "bad-empty.toml",
    "bad-missing-cells.toml",
    "bad-missing-name.toml",
    "bad-name-charset.toml",
    "bad-name-too-long.toml",
    "bad-negative-size.toml",
    "bad-no-cells.toml",
    "bad-no-data-sections.toml",
    "bad-no-links.toml",
    "bad-non-page-size.toml",
    "bad-one-peer.toml",
    "bad-overflow.toml",
    "bad-protocol-out-of-range.toml",
    "bad-single-bracket-table.toml",
    "bad-size-syntax.toml",
    "bad-size-too-big.toml",
    "bad-syntax.toml",
    "bad-too-many-peers.toml",
    "bad-too-many-vectors.toml",
    "bad-unknown-cell-key.toml",
    "bad-unknown-cell.toml",
    "bad-unknown-key.toml",
    "bad-unknown-protocol.toml",
    "bad-unknown-top-level-key.toml",
    "bad-wrong-type.toml",
    "bad-zero-vectors.toml",
};

constexpr std::array<std::string_view, 5> kGoodFixtures{
    "good-console.toml", "good-default.toml", "good-file-backing.toml", "good-sixteen-peers.toml",
    "good-three-peers.toml"};

// The fixture's "# expect:" line, split into its position and its text.
struct Expectation {
  std::string text;  // "<file>:<line>:<col>: <message start>"
  std::string core;  // the text after "<file>:<line>:<col>: "
  std::uint32_t line = 0;
  std::uint32_t column = 0;
};

Expectation read_expectation(std::string_view fixture) {
  std::ifstream file(kConfigDir / fixture);
  std::string first;
  std::getline(file, first);
  constexpr std::string_view kPrefix = "# expect: ";
  Expectation expectation;
  if (!first.starts_with(kPrefix)) return expectation;
  expectation.text = first.substr(kPrefix.size());
  const std::string position = expectation.text.substr(0, expectation.text.find(": "));
  const std::size_t column_colon = position.rfind(':');
  const std::size_t line_colon = position.rfind(':', column_colon - 1);
  if (!position.starts_with(fixture) || line_colon != fixture.size()) return expectation;
  expectation.line = static_cast<std::uint32_t>(std::stoul(position.substr(line_colon + 1)));
  expectation.column = static_cast<std::uint32_t>(std::stoul(position.substr(column_colon + 1)));
  expectation.core = expectation.text.substr(position.size() + 2);
  return expectation;
}

std::string test_name(std::string_view fixture) {
  std::string name;
  bool upper = true;
  for (const char c : fixture.substr(0, fixture.find('.'))) {
    if (c == '-') {
      upper = true;
    } else {
      name += upper ? static_cast<char>(std::toupper(static_cast<unsigned char>(c))) : c;
      upper = false;
    }
  }
  return name;
}

class BadFixture : public testing::TestWithParam<std::string_view> {};

TEST_P(BadFixture, ReportsOnlyItsExpectedErrorOnItsLine) {
  const Expectation expectation = read_expectation(GetParam());
  ASSERT_NE(expectation.line, 0U) << "first line must be '# expect: " << GetParam()
                                  << ":LINE:COL: message'";
  const fs::path path = kConfigDir / GetParam();
  const ConfigResult result = load_config(path);
  EXPECT_TRUE(HasOnlyError(result, expectation.text, expectation.line, expectation.column));
  ASSERT_FALSE(result.errors.empty());
  EXPECT_TRUE(result.errors[0].message.starts_with(path.string() + ":")) << messages(result);
}

INSTANTIATE_TEST_SUITE_P(Config, BadFixture, testing::ValuesIn(kBadFixtures),
                         [](const auto& info) { return test_name(info.param); });

class GoodFixture : public testing::TestWithParam<std::string_view> {};

TEST_P(GoodFixture, LoadsWithoutErrors) {
  const ConfigResult result = load_config(kConfigDir / GetParam());
  EXPECT_TRUE(result.ok()) << messages(result);
  EXPECT_FALSE(format_layouts(result.config).empty());
}

INSTANTIATE_TEST_SUITE_P(Config, GoodFixture, testing::ValuesIn(kGoodFixtures),
                         [](const auto& info) { return test_name(info.param); });

TEST(ConfigFixtures, EveryFixtureInTheFolderIsListed) {
  for (const fs::directory_entry& entry : fs::directory_iterator(kConfigDir)) {
    const std::string name = entry.path().filename().string();
    const bool listed =
        std::find(kBadFixtures.begin(), kBadFixtures.end(), name) != kBadFixtures.end() ||
        std::find(kGoodFixtures.begin(), kGoodFixtures.end(), name) != kGoodFixtures.end();
    EXPECT_TRUE(listed) << name << " is not in kBadFixtures or kGoodFixtures";
  }
}

TEST(ConfigFixtures, EachExpectedMessageAppearsInNoOtherFixture) {
  for (const std::string_view fixture : kBadFixtures) {
    const Expectation expectation = read_expectation(fixture);
    ASSERT_FALSE(expectation.core.empty()) << fixture;
    for (const std::string_view other : kBadFixtures) {
      if (other == fixture) continue;
      for (const ConfigError& error : load_config(kConfigDir / other).errors) {
        EXPECT_EQ(error.message.find(expectation.core), std::string::npos)
            << fixture << "'s message also appears for " << other << ": " << error.message;
      }
    }
  }
}

TEST(ConfigFixtures, GoodDefaultMatchesTheEmbeddedDefault) {
  const ConfigResult file = load_config(kConfigDir / "good-default.toml");
  const ConfigResult embedded = load_default_config();
  ASSERT_TRUE(file.ok()) << messages(file);
  EXPECT_EQ(format_layouts(file.config), format_layouts(embedded.config));
}

}  // namespace
}  // namespace cellink::hypervisor
