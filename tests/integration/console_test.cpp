// `cellink console serve` and `cellink console CELL` as real processes,
// with real PTYs: what an operator and a script see. The service runs in
// its --loopback TEST MODE (input echoed as output), since no guest is
// involved here.
#include <fcntl.h>
#include <poll.h>
#include <pty.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include <csignal>
#include <fstream>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "cellink/hypervisor/console_viewer_protocol.hpp"
#include "cellink/linux-uio/unix_socket.hpp"
#include "process.hpp"

namespace cellink::integration {
namespace {

namespace fs = std::filesystem;
namespace protocol = hypervisor::console_protocol;

class ConsoleCliTest : public ::testing::Test {
 protected:
  void TearDown() override {
    if (HasFailure() && serve_) std::cerr << serve_->transcript();
  }

  [[nodiscard]] fs::path runtime_dir() const { return temp_.path() / "run"; }
  [[nodiscard]] fs::path console_dir() const { return runtime_dir() / "console"; }

  Process& start_serve(std::vector<std::string> extra = {}) {
    std::vector<std::string> argv = {
        CELLINK_BIN, "console", "serve",  "--runtime-dir", runtime_dir().string(),
        "--cell",    "rt",      "--cell", "other",         "--loopback"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    serve_ = std::make_unique<Process>(argv);
    serve_->expect_line("console service ready", kEventTimeout, Stream::err);
    return *serve_;
  }

  std::vector<std::string> attach(const std::string& cell, std::vector<std::string> extra = {}) {
    std::vector<std::string> argv = {CELLINK_BIN, "console", cell, "--runtime-dir",
                                     runtime_dir().string()};
    argv.insert(argv.end(), extra.begin(), extra.end());
    return argv;
  }

  // `text` piped into `cellink console CELL`, run to its end.
  RunResult attach_with_input(const std::string& cell, const std::string& text,
                              std::vector<std::string> extra = {}) {
    const fs::path input = temp_.write_file("input-" + std::to_string(++inputs_), text);
    std::string command;
    for (const std::string& word : attach(cell, std::move(extra))) command += "'" + word + "' ";
    return run({"/bin/sh", "-c", command + "< '" + input.string() + "'"});
  }

  nlohmann::json status(const std::string& cell) {
    std::ifstream in(console_dir() / (cell + ".status.json"));
    return nlohmann::json::parse(in);
  }

  TempDir temp_;
  std::unique_ptr<Process> serve_;
  int inputs_ = 0;
};

TEST_F(ConsoleCliTest, PipedInputComesBackThroughTheLoopbackAndLandsInTheLog) {
  start_serve();
  const RunResult result = attach_with_input("rt", "echo $((6*7))\n");
  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_EQ(result.out, "echo $((6*7))\n");
  std::ifstream log(console_dir() / "rt.log");
  std::string line;
  std::getline(log, line);
  EXPECT_TRUE(std::regex_match(
      line, std::regex(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z echo \$\(\(6\*7\)\))")))
      << line;
  // A later viewer gets the same bytes from the scrollback.
  const RunResult replay = attach_with_input("rt", "", {"--read-only"});
  EXPECT_EQ(replay.exit_code, 0) << replay.err;
  EXPECT_EQ(replay.out, "echo $((6*7))\n");
}

TEST_F(ConsoleCliTest, ASecondWriterIsToldToUseReadOnlyAndAReadOnlyViewerWatches) {
  start_serve();
  Process writer(attach("rt"));
  serve_->expect_line("viewer attached, pid " + std::to_string(writer.pid()) + ", read-write",
                      kEventTimeout, Stream::err);
  const RunResult second = attach_with_input("rt", "typed\n");
  EXPECT_EQ(second.exit_code, 1);
  EXPECT_NE(second.err.find("already has a viewer that types"), std::string::npos) << second.err;
  EXPECT_NE(second.err.find("--read-only"), std::string::npos) << second.err;

  Process watcher(attach("rt", {"--read-only"}));
  serve_->expect_line("viewer attached, pid " + std::to_string(watcher.pid()) + ", read-only",
                      kEventTimeout, Stream::err);
  writer.send_line("from the writer");
  writer.expect_line("^from the writer$");
  watcher.expect_line("^from the writer$");
  watcher.send_line("from the watcher");  // read-only: never sent
  writer.send_line("second");
  watcher.expect_line("^second$");
  EXPECT_FALSE(watcher.saw_line("from the watcher"));
  EXPECT_EQ(status("rt")["viewers"].size(), 2u);
  writer.close_stdin();
  EXPECT_EQ(writer.wait_exit(), 0) << writer.transcript();
}

TEST_F(ConsoleCliTest, ConsolesComeFromTheConfigurationsConsoleTables) {
  serve_ = std::make_unique<Process>(std::vector<std::string>{
      CELLINK_BIN, "console", "serve", "--runtime-dir", runtime_dir().string(), "--config",
      std::string(CELLINK_CONFIG_FIXTURES) + "/good-console.toml", "--loopback"});
  serve_->expect_line("console service ready: 1 console", kEventTimeout, Stream::err);
  EXPECT_EQ(attach_with_input("guest", "hi\n").out, "hi\n");
  EXPECT_TRUE(fs::is_symlink(console_dir() / "guest.pty"));
}

TEST_F(ConsoleCliTest, TheLogRotatesAtTheGivenSizeKeepingTheGivenNumberOfFiles) {
  start_serve({"--log-size", "1KiB", "--log-files", "2"});
  std::string text;
  for (int line = 0; line < 200; ++line) text += "line " + std::to_string(line) + "\n";
  const RunResult result = attach_with_input("rt", text);
  ASSERT_EQ(result.out, text) << result.err;
  ASSERT_TRUE(fs::exists(console_dir() / "rt.log"));
  ASSERT_TRUE(fs::exists(console_dir() / "rt.log.1"));
  EXPECT_FALSE(fs::exists(console_dir() / "rt.log.2"));
  EXPECT_LE(fs::file_size(console_dir() / "rt.log"), 1024u);
  EXPECT_LE(fs::file_size(console_dir() / "rt.log.1"), 1024u);
  std::ifstream newest(console_dir() / "rt.log");
  std::string last;
  for (std::string line; std::getline(newest, line);) last = line;
  EXPECT_TRUE(std::regex_match(last, std::regex(R"(\d{4}-\d\d-\d\dT[0-9:.]{12}Z line 199)")))
      << last;
}

TEST_F(ConsoleCliTest, ErrorsSayWhatToDo) {
  RunResult none = attach_with_input("rt", "");
  EXPECT_EQ(none.exit_code, 1);
  EXPECT_NE(none.err.find("start `cellink console serve"), std::string::npos) << none.err;

  start_serve();
  RunResult unknown = attach_with_input("nope", "");
  EXPECT_EQ(unknown.exit_code, 1);
  EXPECT_NE(unknown.err.find("no console for cell 'nope'"), std::string::npos) << unknown.err;
  EXPECT_NE(unknown.err.find("rt"), std::string::npos) << unknown.err;

  serve_->kill(SIGKILL);  // leaves its socket behind
  serve_->wait_exit();
  RunResult stale = attach_with_input("rt", "");
  EXPECT_EQ(stale.exit_code, 1);
  EXPECT_NE(stale.err.find("is not running"), std::string::npos) << stale.err;

  // The next service takes the directory over from the dead one.
  start_serve();
  EXPECT_EQ(attach_with_input("rt", "back\n").out, "back\n");
}

TEST_F(ConsoleCliTest, ThePtySymlinkReachesTheSameConsole) {
  start_serve();
  Process watcher(attach("rt", {"--read-only"}));
  serve_->expect_line("viewer attached, pid " + std::to_string(watcher.pid()), kEventTimeout,
                      Stream::err);
  UniqueFd pty(::open((console_dir() / "rt.pty").c_str(), O_RDWR | O_NOCTTY));
  ASSERT_TRUE(pty);
  ASSERT_EQ(::write(pty.get(), "via pty\n", 8), 8);
  // The loopback's echo goes to every output: the PTY and the viewer.
  std::string echoed;
  while (echoed.size() < 8) {
    pollfd poll_fd{pty.get(), POLLIN, 0};
    ASSERT_EQ(::poll(&poll_fd, 1, 5000), 1) << "got '" << echoed << "'";
    char bytes[64];
    const ssize_t got = ::read(pty.get(), bytes, sizeof(bytes));
    ASSERT_GT(got, 0);
    echoed.append(bytes, static_cast<std::size_t>(got));
  }
  EXPECT_EQ(echoed, "via pty\n");
  watcher.expect_line("^via pty$");
}

// A viewer on the socket, driven by the test, so that it decides when to read.
class SocketViewer {
 public:
  SocketViewer(const fs::path& socket, protocol::ViewerMode mode) {
    int error = 0;
    fd_ = linux_uio::connect_unix(socket, error);
    if (!fd_) throw std::runtime_error("cannot connect to " + socket.string());
    send_raw(protocol::encode_hello({protocol::kViewerProtocolVersion, mode, {}}));
  }
  void send_raw(const std::string& bytes) {
    ASSERT_EQ(::send(fd_.get(), bytes.data(), bytes.size(), MSG_NOSIGNAL),
              static_cast<ssize_t>(bytes.size()));
  }
  // The next frame; nullopt at EOF or after kEventTimeout.
  std::optional<protocol::Frame> next() {
    for (;;) {
      if (auto frame = reader_.next()) return frame;
      pollfd poll_fd{fd_.get(), POLLIN, 0};
      if (::poll(&poll_fd, 1, static_cast<int>(kEventTimeout.count())) <= 0) return {};
      char bytes[65536];
      const ssize_t got = ::recv(fd_.get(), bytes, sizeof(bytes), 0);
      if (got <= 0) return {};
      reader_.feed(bytes, static_cast<std::size_t>(got));
    }
  }

 private:
  UniqueFd fd_;
  protocol::FrameReader reader_;
};

TEST_F(ConsoleCliTest, ASlowViewerIsDroppedWhileTheWriterGetsEveryByte) {
  start_serve({"--viewer-queue", "256KiB"});
  SocketViewer slow(console_dir() / "rt.sock", protocol::ViewerMode::read_only);
  SocketViewer writer(console_dir() / "rt.sock", protocol::ViewerMode::read_write);
  ASSERT_EQ(writer.next()->type, protocol::FrameType::welcome);

  // 4 MiB typed and echoed back by the loopback, 32 KiB at a time: the
  // writer reads each echo before typing on; the slow viewer reads nothing.
  std::string sent;
  std::string echoed;
  for (int chunk = 0; chunk < 128; ++chunk) {
    std::string text(std::size_t{32} * 1024, static_cast<char>('a' + chunk % 26));
    text.replace(0, 8, std::to_string(10000000 + chunk));
    writer.send_raw(
        protocol::encode_data(protocol::FrameType::input, std::as_bytes(std::span(text))));
    sent += text;
    while (echoed.size() < sent.size()) {
      auto frame = writer.next();
      ASSERT_TRUE(frame) << "the writer lost its connection at chunk " << chunk;
      ASSERT_EQ(frame->type, protocol::FrameType::output) << frame->payload;
      echoed += frame->payload;
    }
  }
  EXPECT_EQ(echoed, sent);
  serve_->expect_line("fell \\d+ bytes behind; disconnecting it", kEventTimeout, Stream::err);

  std::string seen;
  std::string refusal;
  while (auto frame = slow.next()) {
    if (frame->type == protocol::FrameType::output) seen += frame->payload;
    if (frame->type == protocol::FrameType::refused) refusal = frame->payload;
  }
  EXPECT_NE(refusal.find("fell more than 256 KiB behind"), std::string::npos) << refusal;
  EXPECT_EQ(seen, sent.substr(0, seen.size()));  // what it got came in order
  EXPECT_EQ(status("rt")["viewers_disconnected_slow"], 1);
}

TEST_F(ConsoleCliTest, StoppingTheServiceDetachesViewersAndRemovesItsFiles) {
  start_serve();
  Process viewer(attach("rt"));
  serve_->expect_line("viewer attached", kEventTimeout, Stream::err);
  serve_->kill(SIGTERM);
  EXPECT_EQ(serve_->wait_exit(), 0);
  EXPECT_EQ(viewer.wait_exit(), 1);
  viewer.expect_line("closed the connection", kEventTimeout, Stream::err);
  EXPECT_FALSE(fs::exists(console_dir() / "rt.sock"));
  EXPECT_FALSE(fs::exists(console_dir() / "rt.pty"));
  EXPECT_FALSE(fs::exists(console_dir() / "serve.lock"));
  EXPECT_TRUE(fs::exists(console_dir() / "rt.log"));
}

// `cellink console` on a real terminal: a PTY made here is its controlling
// terminal, as a person's would be.
class TerminalClient {
 public:
  TerminalClient(const std::vector<std::string>& argv, winsize size) {
    pid_ = ::forkpty(&master_fd_, nullptr, nullptr, &size);
    if (pid_ < 0) throw std::runtime_error("forkpty failed");
    if (pid_ == 0) {
      std::vector<char*> words;
      words.reserve(argv.size() + 1);
      for (const std::string& word : argv) words.push_back(const_cast<char*>(word.c_str()));
      words.push_back(nullptr);
      ::execv(words[0], words.data());
      ::_exit(127);
    }
    master_.reset(master_fd_);
  }
  ~TerminalClient() {
    if (pid_ > 0 && !exited_) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  // Reads the terminal until `text` shows up.
  ::testing::AssertionResult expect(const std::string& text) {
    const auto deadline = Clock::now() + kEventTimeout;
    while (screen_.find(text) == std::string::npos) {
      const auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now());
      pollfd poll_fd{master_.get(), POLLIN, 0};
      if (left.count() <= 0 || ::poll(&poll_fd, 1, static_cast<int>(left.count())) <= 0) {
        return ::testing::AssertionFailure() << "terminal shows: " << screen_;
      }
      char bytes[4096];
      const ssize_t got = ::read(master_.get(), bytes, sizeof(bytes));
      if (got <= 0) return ::testing::AssertionFailure() << "terminal closed; shows: " << screen_;
      screen_.append(bytes, static_cast<std::size_t>(got));
    }
    return ::testing::AssertionSuccess();
  }
  void type(const std::string& keys) {
    ASSERT_EQ(::write(master_.get(), keys.data(), keys.size()), static_cast<ssize_t>(keys.size()));
  }
  // The terminal's mode as the client left it (termios of the slave).
  [[nodiscard]] termios mode() const {
    termios current{};
    ::tcgetattr(master_.get(), &current);
    return current;
  }
  int wait_exit() {
    const auto deadline = Clock::now() + kEventTimeout;
    while (Clock::now() < deadline) {
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        exited_ = true;
        // Killed by a signal: 1000 + its number, never mistaken for an exit code.
        return WIFEXITED(status) ? WEXITSTATUS(status) : 1000 + WTERMSIG(status);
      }
      // Keep the terminal drained, so the client never blocks writing to it.
      pollfd poll_fd{master_.get(), POLLIN, 0};
      if (::poll(&poll_fd, 1, 10) == 1) {
        char bytes[4096];
        const ssize_t got = ::read(master_.get(), bytes, sizeof(bytes));
        if (got > 0) screen_.append(bytes, static_cast<std::size_t>(got));
        if (got <= 0) std::this_thread::sleep_for(milliseconds(10));
      }
    }
    return -1;
  }
  [[nodiscard]] pid_t pid() const { return pid_; }
  [[nodiscard]] int master() const { return master_.get(); }

 private:
  pid_t pid_ = -1;
  int master_fd_ = -1;
  UniqueFd master_;
  std::string screen_;
  bool exited_ = false;
};

TEST_F(ConsoleCliTest, OnATerminalItGoesRawFollowsTheWindowAndTheEscapeKeyDetaches) {
  start_serve();
  TerminalClient client(attach("rt"), winsize{24, 80, 0, 0});
  ASSERT_TRUE(client.expect("^] detaches"));
  EXPECT_EQ(client.mode().c_lflag & (ICANON | ECHO), 0u) << "not in raw mode";
  client.type("abc");  // raw: sent at once, no Enter needed, echoed by the loopback
  ASSERT_TRUE(client.expect("abc"));
  EXPECT_EQ(status("rt")["terminal_size"], (nlohmann::json{{"cols", 80}, {"rows", 24}}));

  winsize bigger{50, 132, 0, 0};
  ASSERT_EQ(::ioctl(client.master(), TIOCSWINSZ, &bigger), 0);  // the kernel sends SIGWINCH
  const auto deadline = Clock::now() + kEventTimeout;
  while (status("rt")["terminal_size"] != nlohmann::json{{"cols", 132}, {"rows", 50}}) {
    ASSERT_LT(Clock::now(), deadline) << status("rt").dump(2);
    std::this_thread::sleep_for(milliseconds(10));
  }

  client.type("\x1d");  // Ctrl-]
  EXPECT_EQ(client.wait_exit(), 0);
  EXPECT_NE(client.mode().c_lflag & ICANON, 0u) << "the terminal was left raw";
}

TEST_F(ConsoleCliTest, OnATerminalASignalStillRestoresTheMode) {
  start_serve();
  TerminalClient client(attach("rt"), winsize{24, 80, 0, 0});
  ASSERT_TRUE(client.expect("^] detaches"));
  EXPECT_EQ(client.mode().c_lflag & ICANON, 0u);
  ::kill(client.pid(), SIGTERM);
  EXPECT_EQ(client.wait_exit(), 128 + SIGTERM);
  EXPECT_NE(client.mode().c_lflag & ICANON, 0u) << "the terminal was left raw";
}

}  // namespace
}  // namespace cellink::integration
