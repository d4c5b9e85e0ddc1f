// The `cellink` command line as an operator uses it: check, daemon start-up
// and shutdown, status, qemu-args and demo.
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "fixture.hpp"

namespace cellink::integration {
namespace {

namespace fs = std::filesystem;

class CliTest : public IntegrationTest {};

std::vector<fs::path> fixtures(const std::string& prefix) {
  std::vector<fs::path> found;
  for (const fs::directory_entry& entry : fs::directory_iterator(CELLINK_CONFIG_FIXTURES)) {
    const std::string name = entry.path().filename().string();
    if (name.starts_with(prefix) && name.ends_with(".toml")) found.push_back(entry.path());
  }
  std::sort(found.begin(), found.end());
  return found;
}

std::string escape_regex(const std::string& text) {
  static const std::regex special(R"([.^$|()\[\]{}*+?\\])");
  return std::regex_replace(text, special, R"(\$&)");
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::size_t start = 0;
  for (std::size_t end; (end = text.find('\n', start)) != std::string::npos; start = end + 1) {
    lines.push_back(text.substr(start, end - start));
  }
  if (start < text.size()) lines.push_back(text.substr(start));
  return lines;
}

// The lines of `text` that match `pattern`, joined with " | ".
std::string lines_matching(const std::string& text, const std::string& pattern) {
  std::string found;
  for (const std::string& line : lines_of(text)) {
    if (std::regex_search(line, std::regex(pattern))) found += (found.empty() ? "" : " | ") + line;
  }
  return found;
}

std::vector<std::string> entries(const fs::path& dir) {
  std::vector<std::string> names;
  for (const fs::directory_entry& entry : fs::recursive_directory_iterator(dir)) {
    names.push_back(fs::relative(entry.path(), dir).string());
  }
  return names;
}

// Every live process whose command line mentions `text`.
std::vector<std::string> processes_mentioning(const std::string& text) {
  std::vector<std::string> found;
  for (const fs::directory_entry& entry : fs::directory_iterator("/proc")) {
    const std::string pid = entry.path().filename().string();
    if (!std::all_of(pid.begin(), pid.end(), ::isdigit)) continue;
    std::ifstream file(entry.path() / "cmdline");
    std::string command((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
    std::replace(command.begin(), command.end(), '\0', ' ');
    if (command.find(text) != std::string::npos) found.push_back(pid + ": " + command);
  }
  return found;
}

TEST_F(CliTest, CheckRejectsEveryBadFixtureNamingFileLineAndProblem) {
  const std::vector<fs::path> bad = fixtures("bad-");
  ASSERT_FALSE(bad.empty()) << "no bad-*.toml in " << CELLINK_CONFIG_FIXTURES;
  for (const fs::path& fixture : bad) {
    SCOPED_TRACE(fixture.filename().string());
    std::ifstream file(fixture);
    std::string first_line;
    std::getline(file, first_line);
    const std::string marker = "# expect: ";
    ASSERT_TRUE(first_line.starts_with(marker)) << "the fixture's first line is not '# expect: '";
    const std::string expected = first_line.substr(marker.size());

    const RunResult result = run({CELLINK_BIN, "check", fixture.string()});

    EXPECT_EQ(result.exit_code, 1);
    const std::vector<std::string> errors = lines_of(result.err);
    const auto line = std::find_if(errors.begin(), errors.end(), [&](const std::string& each) {
      return each.find(expected) != std::string::npos;
    });
    ASSERT_NE(line, errors.end()) << "expected: " << expected << "\nstderr:\n" << result.err;
    EXPECT_TRUE(std::regex_search(
        *line, std::regex("^" + escape_regex(fixture.string()) + ":\\d+:\\d+: \\S")))
        << *line;
  }
}

TEST_F(CliTest, CheckAcceptsEveryGoodFixtureAndPrintsItsLayout) {
  const std::vector<fs::path> good = fixtures("good-");
  ASSERT_FALSE(good.empty()) << "no good-*.toml in " << CELLINK_CONFIG_FIXTURES;
  for (const fs::path& fixture : good) {
    SCOPED_TRACE(fixture.filename().string());

    const RunResult result = run({CELLINK_BIN, "check", fixture.string()});

    EXPECT_EQ(result.exit_code, 0) << result.err;
    EXPECT_TRUE(std::regex_search(result.out, std::regex("state table +0x0+ "))) << result.out;
    EXPECT_NE(result.out.find(fixture.string() + ": ok"), std::string::npos) << result.out;
  }
}

TEST_F(CliTest, CheckPrintsTheOffsetAndSizeOfEverySection) {
  const fs::path config = write_config(link_config("bus", {"a", "b", "c"}, 2));

  const RunResult result = run({CELLINK_BIN, "check", config.string()});

  ASSERT_EQ(result.exit_code, 0) << result.err;
  for (const char* row : {"state table +0x000000 +4 KiB", "output 0 \\(a\\) +0x001000 +4 KiB",
                          "output 1 \\(b\\) +0x002000 +4 KiB", "output 2 \\(c\\) +0x003000 +4 KiB",
                          "memory object 16 KiB"}) {
    EXPECT_TRUE(std::regex_search(result.out, std::regex(row))) << row << "\n" << result.out;
  }
}

TEST_F(CliTest, SigtermRemovesEverySocketLinkDirAndTheLock) {
  const fs::path config = write_config(
      "[[cell]]\nname = \"a\"\n[[cell]]\nname = \"b\"\n[[cell]]\nname = \"c\"\n"
      "[[link]]\nname = \"one\"\ncells = [\"a\", \"b\"]\n"
      "[[link]]\nname = \"two\"\ncells = [\"b\", \"c\"]\n");
  start_daemon(config);
  Agent& attached = start_agent("one", "a");
  ASSERT_TRUE(fs::exists(runtime_dir() / "two" / "c.sock"));

  EXPECT_EQ(daemon().terminate(), 0);

  EXPECT_EQ(entries(runtime_dir()), std::vector<std::string>{});
  (void)attached.expect_event("daemon_lost");
}

TEST_F(CliTest, SecondDaemonOnTheSameRuntimeDirExitsOneNamingTheLiveDaemon) {
  start_daemon(std::nullopt);

  const RunResult second = run({CELLINK_BIN, "daemon", "--runtime-dir", runtime_dir().string()});

  EXPECT_EQ(second.exit_code, 1);
  const std::string said = second.out + second.err;
  EXPECT_NE(said.find("live daemon"), std::string::npos) << said;
  EXPECT_NE(said.find("pid " + std::to_string(daemon().pid())), std::string::npos) << said;
}

TEST_F(CliTest, FirstDaemonKeepsServingAfterASecondWasRefused) {
  start_daemon(std::nullopt);
  ASSERT_EQ(run({CELLINK_BIN, "daemon", "--runtime-dir", runtime_dir().string()}).exit_code, 1);

  EXPECT_EQ(daemon().status_json().at("daemon").at("pid"), daemon().pid());
  Agent& host = start_agent("demo", "host");
  Agent& guest = start_agent("demo", "guest");
  host.ring(guest.id(), 1, 1);
  EXPECT_EQ(guest.await_doorbells(1, 1), 1U);
}

TEST_F(CliTest, StatusJsonListsLinksAndPeersWithTheAttachedAgentsPid) {
  start_daemon(std::nullopt);
  Agent& host = start_agent("demo", "host");

  const RunResult result =
      run({CELLINK_BIN, "status", "--json", "--runtime-dir", runtime_dir().string()});

  ASSERT_EQ(result.exit_code, 0) << result.err;
  const nlohmann::json status = nlohmann::json::parse(result.out);
  EXPECT_EQ(status.at("daemon").at("pid"), daemon().pid());
  const nlohmann::json& link = status.at("links").at(0);
  EXPECT_EQ(link.at("name"), "demo");
  const nlohmann::json& peers = link.at("peers");
  ASSERT_EQ(peers.size(), 2U);
  EXPECT_EQ(peers.at(0).at("cell"), "host");
  EXPECT_EQ(peers.at(0).at("connected"), true);
  EXPECT_EQ(peers.at(0).at("pid"), host.pid());
  EXPECT_EQ(peers.at(0).at("client"), "process");
  EXPECT_EQ(peers.at(1).at("cell"), "guest");
  EXPECT_EQ(peers.at(1).at("connected"), false);
}

TEST_F(CliTest, StatusPrintsATableWithTheAttachedAgentsPid) {
  start_daemon(std::nullopt);
  Agent& host = start_agent("demo", "host");

  const RunResult result = run({CELLINK_BIN, "status", "--runtime-dir", runtime_dir().string()});

  ASSERT_EQ(result.exit_code, 0) << result.err;
  EXPECT_NE(result.out.find("link 'demo'"), std::string::npos) << result.out;
  EXPECT_TRUE(
      std::regex_search(result.out, std::regex("0 +host +pid " + std::to_string(host.pid()) + " ")))
      << result.out;
  EXPECT_TRUE(std::regex_search(result.out, std::regex("1 +guest +not connected"))) << result.out;
}

TEST_F(CliTest, StatusWithoutADaemonExitsOneSayingNoDaemonAnswers) {
  const RunResult result = run({CELLINK_BIN, "status", "--runtime-dir", runtime_dir().string()});

  EXPECT_EQ(result.exit_code, 1);
  EXPECT_NE(result.err.find("no daemon answers on " + (runtime_dir() / "control.sock").string()),
            std::string::npos)
      << result.err;
  EXPECT_EQ(result.out, "");
}

TEST_F(CliTest, QemuArgsForTheDefaultGuestArePrintedExactly) {
  const std::string dir = runtime_dir().string();

  const RunResult result = run({CELLINK_BIN, "qemu-args", "guest", "--runtime-dir", dir});

  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_EQ(result.out, "-chardev socket,path=" + dir +
                            "/demo/guest.sock,id=cellink-demo -device "
                            "ivshmem-doorbell,chardev=cellink-demo,vectors=2\n");
}

TEST_F(CliTest, QemuArgsForAnUnknownCellExitsOne) {
  const RunResult result = run({CELLINK_BIN, "qemu-args", "nosuchcell"});

  EXPECT_EQ(result.exit_code, 1);
  EXPECT_NE(result.err.find("no cell 'nosuchcell'"), std::string::npos) << result.err;
  EXPECT_EQ(result.out, "");
}

// The demo's acts 1-3 take a few seconds (more under ASan); act 4 boots a
// Linux guest under TCG, 3-5 s idle, far more on a loaded 2-CPU machine;
// act 5 boots a bare-metal inmate, under a second. Below the 120 s ctest
// TIMEOUT of the integration tests.
constexpr milliseconds kDemoTimeout{110000};
constexpr const char* kGuestSkipped = "\\[demo  \\] skipping the Linux guest: ";
constexpr const char* kInmateSkipped = "\\[demo  \\] skipping the bare-metal inmate: ";

bool qemu_on_path() {
  const char* path = std::getenv("PATH");
  std::istringstream dirs(path != nullptr ? path : "");
  for (std::string dir; std::getline(dirs, dir, ':');) {
    if (::access((fs::path(dir.empty() ? "." : dir) / "qemu-system-x86_64").c_str(), X_OK) == 0) {
      return true;
    }
  }
  return false;
}

// Why the demo cannot boot its Linux guest here, or empty when it must. The
// build puts the image in <build>/guest, beside <build>/tools/cellink.
std::string guest_act_unavailable() {
  if (!qemu_on_path()) return "no qemu-system-x86_64 on PATH";
  const fs::path image = fs::path(CELLINK_BIN).parent_path().parent_path() / "guest";
  if (fs::exists(image / "unavailable.txt")) {
    return "the build recorded why in " + (image / "unavailable.txt").string();
  }
  if (!fs::exists(image / "vmlinuz") || !fs::exists(image / "initramfs.cpio.gz")) {
    return "no guest image in " + image.string();
  }
  return {};
}

// Act 5, the bare-metal inmate: with QEMU it must run (the build makes the
// ELF with cellink, in <build>/inmates beside <build>/tools/cellink).
void expect_inmate_act(const std::string& out) {
  if (!qemu_on_path()) {
    EXPECT_TRUE(std::regex_search(
        out, std::regex(std::string(kInmateSkipped) +
                        "QEMU is not installed .*: apt install qemu-system-x86\\n")))
        << out;
    return;
  }
  if (!fs::exists(fs::path(CELLINK_BIN).parent_path().parent_path() / "inmates" /
                  "inmate-echo.elf")) {
    EXPECT_TRUE(std::regex_search(out, std::regex(std::string(kInmateSkipped) + "no inmate image")))
        << out;
    return;
  }
  std::smatch qemu_pid;
  ASSERT_TRUE(std::regex_search(
      out, qemu_pid, std::regex("\\[inmate\\] booting inmate-echo\\.elf .*\\(pid (\\d+)\\)")))
      << out;
  for (const char* line :
       {"\\[inmate\\] +[0-9.]+ s  echo: ready: peer 1 of 2, channel 'demo'\\n",
        "\\[host  \\] the inmate booted to its ready line in [0-9.]+ s; channel 'demo' "
        "connected\\n",
        "\\[host  \\] 100 messages .* echoed and checked byte for byte\\n",
        "\\[host  \\] round trips .*: min [0-9]+ us, p50 [0-9]+ us, max [0-9]+ us\\n",
        "\\[inmate\\] +[0-9.]+ s  echo: echoed 100 messages \\(100453 bytes\\), 0 not echoed\\n",
        "\\[inmate\\] +[0-9.]+ s  echo: interrupts: [0-9]+ doorbell",
        "\\[inmate\\] +[0-9.]+ s  echo: peer 0 reset", "\\[inmate\\] QEMU stopped"}) {
    EXPECT_TRUE(std::regex_search(out, std::regex(line))) << line << "\n" << out;
  }
  EXPECT_FALSE(fs::exists("/proc/" + qemu_pid[1].str())) << "the demo's inmate QEMU still runs";
}

TEST_F(CliTest, DemoSucceedsAndLeavesNoProcessAndNoRuntimeDir) {
  const RunResult result = run({CELLINK_BIN, "demo"}, kDemoTimeout);

  EXPECT_EQ(result.exit_code, 0) << result.out << result.err;
  EXPECT_NE(result.out.find("cellink demo: ok"), std::string::npos) << result.out;
  std::smatch dir;
  ASSERT_TRUE(std::regex_search(result.out, dir, std::regex("private runtime dir (\\S+)")))
      << result.out;
  EXPECT_FALSE(fs::exists(dir[1].str())) << dir[1];
  EXPECT_EQ(processes_mentioning(dir[1].str()), std::vector<std::string>{});
  std::smatch daemon_pid;
  ASSERT_TRUE(std::regex_search(result.out, daemon_pid, std::regex("\\[daemon\\] pid (\\d+)")));
  EXPECT_FALSE(fs::exists("/proc/" + daemon_pid[1].str())) << "the demo's daemon still runs";
  std::smatch guest_pid;
  ASSERT_TRUE(
      std::regex_search(result.out, guest_pid, std::regex("\\[guest +\\].*\\(pid (\\d+)\\)")));
  EXPECT_FALSE(fs::exists("/proc/" + guest_pid[1].str())) << "the demo's guest still runs";
  expect_inmate_act(result.out);

  // Act 4, the Linux guest: it must run wherever it can.
  const std::string unavailable = guest_act_unavailable();
  if (!unavailable.empty()) {
    EXPECT_TRUE(std::regex_search(result.out, std::regex(kGuestSkipped))) << result.out;
    std::cout << "note: the demo skipped its Linux guest act (" << unavailable
              << "); it said: " << lines_matching(result.out, kGuestSkipped) << "\n";
    return;
  }
  std::smatch qemu_pid;
  ASSERT_TRUE(std::regex_search(result.out, qemu_pid,
                                std::regex("\\[linux \\] booting Linux guest .*\\(pid (\\d+)\\)")))
      << result.out;
  EXPECT_FALSE(fs::exists("/proc/" + qemu_pid[1].str())) << "the demo's QEMU still runs";
  for (const char* text :
       {"hello, Linux guest", "ping over ivshmem", "doorbells cross the VM boundary", "bye"}) {
    EXPECT_TRUE(std::regex_search(
        result.out, std::regex("\\[host  \\] sent '" + escape_regex(text) +
                               "', got 'guest echo: " + escape_regex(text) + "' in [0-9]+ us")))
        << text << "\n"
        << result.out;
    EXPECT_TRUE(std::regex_search(result.out, std::regex("\\[linux \\] .*CELLINK-GUEST: got '" +
                                                         escape_regex(text) + "', sent back")))
        << text << "\n"
        << result.out;
  }
  EXPECT_TRUE(std::regex_search(
      result.out, std::regex("\\[linux \\] .*CELLINK-GUEST-RESULT: ok echo messages=4\\n")))
      << result.out;
  EXPECT_TRUE(std::regex_search(result.out, std::regex("\\[linux \\] QEMU exited \\(status 0\\)")))
      << result.out;
}

TEST_F(CliTest, DemoWithNoGuestSkipsTheLinuxGuestAndSucceeds) {
  const RunResult result = run({CELLINK_BIN, "demo", "--no-guest"}, kDemoTimeout);

  EXPECT_EQ(result.exit_code, 0) << result.out << result.err;
  EXPECT_TRUE(std::regex_search(result.out,
                                std::regex(std::string(kGuestSkipped) + "--no-guest was given\\n")))
      << result.out;
  EXPECT_EQ(result.out.find("[linux ]"), std::string::npos) << result.out;
  expect_inmate_act(result.out);
  EXPECT_NE(result.out.find("cellink demo: ok"), std::string::npos) << result.out;
}

TEST_F(CliTest, DemoWithNoInmateSkipsTheInmateAndSucceeds) {
  const RunResult result = run({CELLINK_BIN, "demo", "--no-guest", "--no-inmate"}, kDemoTimeout);

  EXPECT_EQ(result.exit_code, 0) << result.out << result.err;
  EXPECT_TRUE(std::regex_search(
      result.out, std::regex(std::string(kInmateSkipped) + "--no-inmate was given\\n")))
      << result.out;
  EXPECT_EQ(result.out.find("[inmate]"), std::string::npos) << result.out;
  EXPECT_NE(result.out.find("cellink demo: ok"), std::string::npos) << result.out;
}

TEST_F(CliTest, DemoWithoutQemuOnPathSaysHowToInstallItAndSucceeds) {
  // The demo starts everything else by absolute path.
  const RunResult result =
      run({"/usr/bin/env", "PATH=/nonexistent", CELLINK_BIN, "demo"}, kDemoTimeout);

  EXPECT_EQ(result.exit_code, 0) << result.out << result.err;
  EXPECT_TRUE(std::regex_search(
      result.out, std::regex(std::string(kGuestSkipped) +
                             "QEMU is not installed .*: apt install qemu-system-x86\\n")))
      << result.out;
  EXPECT_TRUE(std::regex_search(
      result.out, std::regex(std::string(kInmateSkipped) +
                             "QEMU is not installed .*: apt install qemu-system-x86\\n")))
      << result.out;
  EXPECT_EQ(result.out.find("[linux ]"), std::string::npos) << result.out;
  EXPECT_EQ(result.out.find("[inmate]"), std::string::npos) << result.out;
  EXPECT_NE(result.out.find("cellink demo: ok"), std::string::npos) << result.out;
}

TEST_F(CliTest, DaemonLogsToStderrAndKeepsStdoutEmpty) {
  start_daemon(std::nullopt);
  (void)daemon().status_json();

  EXPECT_EQ(daemon().terminate(), 0);

  EXPECT_TRUE(daemon().process().saw_line("cellink daemon ready", Stream::err))
      << daemon().process().transcript();
  EXPECT_EQ(daemon().process().output(Stream::out), "");
}

}  // namespace
}  // namespace cellink::integration
