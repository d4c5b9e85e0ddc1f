// ConsoleService in-process, with real PTYs and real viewer sockets: what a
// back end and the viewers see. The service runs on its own thread; every
// back-end call is posted to it, as a real back end's would run there.
#include "cellink/hypervisor/console_service.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <future>
#include <mutex>
#include <string>
#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "cellink/linux-uio/unix_socket.hpp"

namespace cellink::hypervisor {
namespace {

namespace fs = std::filesystem;
namespace protocol = console_protocol;
using linux_uio::UniqueFd;
using Clock = std::chrono::steady_clock;
constexpr auto kTimeout = std::chrono::seconds(5);

std::span<const std::byte> bytes_of(std::string_view text) {
  return std::as_bytes(std::span(text.data(), text.size()));
}

// A viewer speaking the protocol directly, so tests control when it reads.
class RawViewer {
 public:
  RawViewer(const fs::path& socket, protocol::ViewerMode mode, protocol::TerminalSize size = {}) {
    int error = 0;
    fd_ = linux_uio::connect_unix(socket, error);
    if (!fd_) throw std::runtime_error("connect " + socket.string());
    const std::string hello =
        protocol::encode_hello({protocol::kViewerProtocolVersion, mode, size});
    send_raw(hello);
  }

  void send_raw(const std::string& bytes) {
    ASSERT_EQ(::send(fd_.get(), bytes.data(), bytes.size(), MSG_NOSIGNAL),
              static_cast<ssize_t>(bytes.size()));
  }
  void type(std::string_view keys) {
    send_raw(protocol::encode_data(protocol::FrameType::input, bytes_of(keys)));
  }

  // The next frame, or nullopt on EOF or timeout.
  std::optional<protocol::Frame> next(std::chrono::milliseconds timeout = kTimeout) {
    const auto deadline = Clock::now() + timeout;
    for (;;) {
      if (auto frame = reader_.next()) return frame;
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      pollfd poll_fd{fd_.get(), POLLIN, 0};
      if (left.count() <= 0 || ::poll(&poll_fd, 1, static_cast<int>(left.count())) <= 0) return {};
      char bytes[65536];
      const ssize_t got = ::recv(fd_.get(), bytes, sizeof(bytes), 0);
      if (got <= 0) return {};
      reader_.feed(bytes, static_cast<std::size_t>(got));
    }
  }

  // Reads frames until output totals `text` (returns true) or something
  // else (refused, EOF, timeout) comes.
  ::testing::AssertionResult expect_output(const std::string& text) {
    while (output_.size() < text.size() || output_.find(text) == std::string::npos) {
      auto frame = next();
      if (!frame)
        return ::testing::AssertionFailure() << "no more frames; output so far: " << output_;
      if (frame->type == protocol::FrameType::refused) {
        return ::testing::AssertionFailure() << "refused: " << frame->payload;
      }
      if (frame->type == protocol::FrameType::output) output_ += frame->payload;
    }
    return ::testing::AssertionSuccess();
  }

  // The welcome's mode, or the refusal text.
  std::variant<protocol::ViewerMode, std::string> answer() {
    auto frame = next();
    if (!frame) return std::string("<no answer>");
    if (frame->type == protocol::FrameType::refused) return frame->payload;
    return protocol::decode_welcome(frame->payload)->mode;
  }

  std::string& output() { return output_; }
  int fd() const { return fd_.get(); }

 private:
  UniqueFd fd_;
  protocol::FrameReader reader_;
  std::string output_;
};

class ConsoleServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = "/tmp/cellink-console-XXXXXX";
    ASSERT_NE(::mkdtemp(pattern.data()), nullptr);
    dir_ = pattern;
  }
  void TearDown() override {
    stop();
    std::error_code ignored;
    fs::remove_all(dir_, ignored);
  }

  void start(ConsoleServiceOptions options = {}) {
    options.runtime_dir = dir_ / "run";
    if (options.consoles.empty()) options.consoles = {{.cell = "rt"}, {.cell = "other"}};
    options.handle_signals = false;
    options.status_interval = std::chrono::milliseconds(20);
    service_ = std::make_unique<ConsoleService>(std::move(options));
    thread_ = std::thread([this] { service_->run(); });
  }
  void stop() {
    if (!service_) return;
    service_->request_stop();
    thread_.join();
    service_.reset();
  }

  // Runs `task` on the service's loop and returns its result.
  template <typename Task>
  auto on_loop(Task task) {
    std::packaged_task<decltype(task())()> packaged(std::move(task));
    auto result = packaged.get_future();
    service_->loop().post([&packaged] { packaged(); });
    EXPECT_EQ(result.wait_for(kTimeout), std::future_status::ready);
    return result.get();
  }
  void guest_output(const std::string& cell, std::string text) {
    on_loop([this, cell, text = std::move(text)] {
      service_->console(cell).guest_output(bytes_of(text));
      return 0;
    });
  }
  std::string take_input(const std::string& cell) {
    return on_loop([this, cell] {
      std::byte bytes[65536];
      const std::size_t got = service_->console(cell).take_input(bytes);
      return std::string(reinterpret_cast<const char*>(bytes), got);
    });
  }
  // Polls the back end until `text` was typed.
  ::testing::AssertionResult expect_input(const std::string& cell, const std::string& text) {
    std::string typed;
    const auto deadline = Clock::now() + kTimeout;
    while (Clock::now() < deadline) {
      typed += take_input(cell);
      if (typed.find(text) != std::string::npos) return ::testing::AssertionSuccess();
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return ::testing::AssertionFailure() << "the back end got '" << typed << "'";
  }
  nlohmann::json status(const std::string& cell) {
    std::ifstream in(console_dir() / (cell + ".status.json"));
    return nlohmann::json::parse(in);
  }
  // Waits until the status file satisfies `ready`.
  template <typename Predicate>
  ::testing::AssertionResult wait_status(const std::string& cell, Predicate ready) {
    const auto deadline = Clock::now() + kTimeout;
    nlohmann::json last;
    while (Clock::now() < deadline) {
      last = status(cell);
      if (ready(last)) return ::testing::AssertionSuccess();
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return ::testing::AssertionFailure() << "status never matched: " << last.dump(2);
  }
  fs::path console_dir() const { return dir_ / "run" / "console"; }
  fs::path socket(const std::string& cell) const { return console_dir() / (cell + ".sock"); }

  fs::path dir_;
  std::unique_ptr<ConsoleService> service_;
  std::thread thread_;
};

TEST_F(ConsoleServiceTest, ANewViewerGetsTheScrollbackThenLiveOutput) {
  start();
  guest_output("rt", "said while nobody watched\r\n");
  RawViewer viewer(socket("rt"), protocol::ViewerMode::read_only);
  ASSERT_EQ(std::get<protocol::ViewerMode>(viewer.answer()), protocol::ViewerMode::read_only);
  EXPECT_TRUE(viewer.expect_output("said while nobody watched\r\n"));
  guest_output("rt", "live\r\n");
  EXPECT_TRUE(viewer.expect_output("said while nobody watched\r\nlive\r\n"));
}

TEST_F(ConsoleServiceTest, OneViewerTypesASecondWriterIsRefusedAndReadOnlyViewersWatch) {
  start();
  RawViewer writer(socket("rt"), protocol::ViewerMode::read_write);
  ASSERT_EQ(std::get<protocol::ViewerMode>(writer.answer()), protocol::ViewerMode::read_write);
  RawViewer second(socket("rt"), protocol::ViewerMode::read_write);
  const auto refusal = second.answer();
  ASSERT_TRUE(std::holds_alternative<std::string>(refusal));
  EXPECT_NE(std::get<std::string>(refusal).find("--read-only"), std::string::npos)
      << std::get<std::string>(refusal);
  EXPECT_FALSE(second.next());  // closed after the refusal
  RawViewer watcher(socket("rt"), protocol::ViewerMode::read_only);
  ASSERT_EQ(std::get<protocol::ViewerMode>(watcher.answer()), protocol::ViewerMode::read_only);

  writer.type("ls\r");
  EXPECT_TRUE(expect_input("rt", "ls\r"));
  guest_output("rt", "file\r\n");
  EXPECT_TRUE(writer.expect_output("file\r\n"));
  EXPECT_TRUE(watcher.expect_output("file\r\n"));
  EXPECT_TRUE(wait_status("rt", [](const nlohmann::json& s) { return s["viewers"].size() == 2; }));
}

TEST_F(ConsoleServiceTest, InputFromAReadOnlyViewerIsRefusedAndNeverReachesTheGuest) {
  start();
  RawViewer watcher(socket("rt"), protocol::ViewerMode::read_only);
  ASSERT_EQ(std::get<protocol::ViewerMode>(watcher.answer()), protocol::ViewerMode::read_only);
  watcher.type("rm -rf /\r");
  for (;;) {
    auto frame = watcher.next();
    ASSERT_TRUE(frame) << "closed without a refusal";
    if (frame->type != protocol::FrameType::refused) continue;
    EXPECT_NE(frame->payload.find("read-only"), std::string::npos) << frame->payload;
    break;
  }
  EXPECT_EQ(take_input("rt"), "");
}

TEST_F(ConsoleServiceTest, WhenTheWriterDetachesTheNextViewerMayType) {
  start();
  {
    RawViewer writer(socket("rt"), protocol::ViewerMode::read_write);
    ASSERT_EQ(std::get<protocol::ViewerMode>(writer.answer()), protocol::ViewerMode::read_write);
  }
  const auto deadline = Clock::now() + kTimeout;
  for (;;) {
    RawViewer next(socket("rt"), protocol::ViewerMode::read_write);
    if (std::holds_alternative<protocol::ViewerMode>(next.answer())) break;
    ASSERT_LT(Clock::now(), deadline) << "the first writer's close was never noticed";
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

TEST_F(ConsoleServiceTest, ConnectionsBeyondTheLimitAreRefused) {
  start();
  std::vector<std::unique_ptr<RawViewer>> viewers;
  for (std::size_t i = 0; i < ConsoleViewers::kMaxViewers; ++i) {
    viewers.push_back(std::make_unique<RawViewer>(socket("rt"), protocol::ViewerMode::read_only));
    ASSERT_TRUE(std::holds_alternative<protocol::ViewerMode>(viewers.back()->answer())) << i;
  }
  RawViewer extra(socket("rt"), protocol::ViewerMode::read_only);
  const auto answer = extra.answer();
  ASSERT_TRUE(std::holds_alternative<std::string>(answer));
  EXPECT_NE(std::get<std::string>(answer).find("already has 64 viewers"), std::string::npos)
      << std::get<std::string>(answer);
  guest_output("rt", "still served\r\n");
  EXPECT_TRUE(viewers.front()->expect_output("still served\r\n"));
}

TEST_F(ConsoleServiceTest, ASlowViewerIsDisconnectedWithoutStallingTheGuestOrTheOthers) {
  ConsoleServiceOptions options;
  options.viewer_queue_limit = std::size_t{64} * 1024;
  start(std::move(options));
  RawViewer slow(socket("rt"), protocol::ViewerMode::read_only);
  RawViewer fast(socket("rt"), protocol::ViewerMode::read_only);
  ASSERT_TRUE(std::holds_alternative<protocol::ViewerMode>(fast.answer()));

  std::string sent;
  for (int chunk = 0; chunk < 128; ++chunk) {  // 4 MiB, far beyond any socket buffer
    std::string text(std::size_t{32} * 1024, static_cast<char>('a' + chunk % 26));
    text.replace(0, 8, std::to_string(10000000 + chunk));
    const auto started = Clock::now();
    guest_output("rt", text);
    EXPECT_LT(Clock::now() - started, std::chrono::seconds(1)) << "the guest was stalled";
    sent += text;
    ASSERT_TRUE(fast.expect_output(text)) << "chunk " << chunk;
  }
  EXPECT_EQ(fast.output(), sent);

  // The slow one finds some output, then why it was let go.
  std::string slow_output;
  std::string refusal;
  while (auto frame = slow.next()) {
    if (frame->type == protocol::FrameType::output) slow_output += frame->payload;
    if (frame->type == protocol::FrameType::refused) refusal = frame->payload;
  }
  EXPECT_NE(refusal.find("fell more than 64 KiB behind"), std::string::npos) << refusal;
  EXPECT_LT(slow_output.size(), sent.size());
  EXPECT_EQ(slow_output, sent.substr(0, slow_output.size()));  // in order, nothing skipped
  EXPECT_TRUE(wait_status("rt", [](const nlohmann::json& s) {
    return s["viewers_disconnected_slow"] == 1 && s["viewers"].size() == 1;
  }));
}

TEST_F(ConsoleServiceTest, ThePtyBehindTheSymlinkCarriesOutputAndInput) {
  start();
  const fs::path link = console_dir() / "rt.pty";
  ASSERT_TRUE(fs::is_symlink(link));
  const fs::path first_device = fs::read_symlink(link);
  EXPECT_TRUE(first_device.string().starts_with("/dev/pts/")) << first_device;
  UniqueFd pty(::open(link.c_str(), O_RDWR | O_NOCTTY));
  ASSERT_TRUE(pty);
  guest_output("rt", "login: ");
  char bytes[64] = {};
  pollfd poll_fd{pty.get(), POLLIN, 0};
  ASSERT_EQ(::poll(&poll_fd, 1, 5000), 1);
  ASSERT_EQ(::read(pty.get(), bytes, sizeof(bytes)), 7);
  EXPECT_EQ(std::string(bytes, 7), "login: ");
  ASSERT_EQ(::write(pty.get(), "root\r", 5), 5);
  EXPECT_TRUE(expect_input("rt", "root\r"));

  // The last program closes it: a fresh PTY behind the same link.
  pty.reset();
  ASSERT_TRUE(wait_status("rt", [](const nlohmann::json& s) { return s["pty_reopens"] == 1; }));
  EXPECT_NE(fs::read_symlink(link), first_device);
  UniqueFd again(::open(link.c_str(), O_RDWR | O_NOCTTY));
  ASSERT_TRUE(again);
  ASSERT_EQ(::write(again.get(), "x", 1), 1);
  EXPECT_TRUE(expect_input("rt", "x"));
}

TEST_F(ConsoleServiceTest, WithNobodyOnThePtyOutputIsDroppedThereOnlyAndKeptInLogAndScrollback) {
  ConsoleServiceOptions options;
  options.pty_pending_limit = 4096;
  start(std::move(options));
  std::string sent;
  for (int line = 0; line < 4000; ++line) sent += "boot message " + std::to_string(line) + "\r\n";
  guest_output("rt", sent);
  ASSERT_TRUE(wait_status("rt", [&](const nlohmann::json& s) {
    return s["pty_dropped_bytes"] > 0 && s["bytes_from_guest"] == sent.size();
  }));
  std::ifstream log(console_dir() / "rt.log");
  std::string lines;
  std::size_t count = 0;
  for (std::string line; std::getline(log, line); ++count) lines += line.substr(25) + "\n";
  EXPECT_EQ(count, 4000u);
  RawViewer viewer(socket("rt"), protocol::ViewerMode::read_only);
  EXPECT_TRUE(viewer.expect_output("boot message 3999\r\n"));
  EXPECT_EQ(viewer.output(), sent.substr(sent.size() - ConsoleScrollback::kDefaultCapacity));
}

TEST_F(ConsoleServiceTest, InputTheBackEndDoesNotTakeWaitsAndNothingTypedIsLost) {
  start();
  // 256 KiB typed into the PTY, four times what the service queues: the
  // writer blocks once the queue and the PTY are full, and resumes as the
  // back end takes input.
  std::string typed;
  for (int line = 0; typed.size() < 256 * 1024; ++line) typed += std::to_string(line) + "\r";
  UniqueFd pty(::open((console_dir() / "rt.pty").c_str(), O_RDWR | O_NOCTTY));
  ASSERT_TRUE(pty);
  std::thread writer([&] {
    for (std::size_t at = 0; at < typed.size();) {
      const ssize_t wrote = ::write(pty.get(), typed.data() + at, typed.size() - at);
      if (wrote <= 0) return;
      at += static_cast<std::size_t>(wrote);
    }
  });
  // EXPECT, not ASSERT: the loop below must drain the writer either way.
  EXPECT_TRUE(wait_status("rt", [](const nlohmann::json& s) {
    return s["input_pending"] >= Console::kInputLimit;  // full: the PTY is no longer read
  }));
  std::string taken;
  const auto deadline = Clock::now() + kTimeout;
  while (taken.size() < typed.size() && Clock::now() < deadline) {
    const std::string more = take_input("rt");
    if (more.empty()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    taken += more;
  }
  writer.join();
  EXPECT_EQ(taken.size(), typed.size());
  EXPECT_TRUE(taken == typed) << "typed input was reordered or changed";
}

TEST_F(ConsoleServiceTest, TheWritersTerminalSizeReachesTheBackEndAndThePty) {
  start();
  auto seen = std::make_shared<std::promise<protocol::TerminalSize>>();
  on_loop([this, seen] {
    service_->console("rt").on_resize(
        [seen](protocol::TerminalSize size) { seen->set_value(size); });
    return 0;
  });
  RawViewer writer(socket("rt"), protocol::ViewerMode::read_write, {100, 30});
  ASSERT_TRUE(std::holds_alternative<protocol::ViewerMode>(writer.answer()));
  auto future = seen->get_future();
  ASSERT_EQ(future.wait_for(kTimeout), std::future_status::ready);
  EXPECT_EQ(future.get(), (protocol::TerminalSize{100, 30}));
  EXPECT_EQ(on_loop([this] { return service_->console("rt").terminal_size(); }),
            (protocol::TerminalSize{100, 30}));
  UniqueFd pty(::open((console_dir() / "rt.pty").c_str(), O_RDWR | O_NOCTTY));
  winsize window{};
  ASSERT_EQ(::ioctl(pty.get(), TIOCGWINSZ, &window), 0);
  EXPECT_EQ(window.ws_col, 100);
  EXPECT_EQ(window.ws_row, 30);
}

TEST_F(ConsoleServiceTest, TheStatusFileShowsTheBackEndsState) {
  start();
  on_loop([this] {
    service_->console("other").set_state("broken: queue 1 descriptor 7 length 4294967295");
    return 0;
  });
  const nlohmann::json other = status("other");
  EXPECT_EQ(other["state"], "broken: queue 1 descriptor 7 length 4294967295");
  EXPECT_EQ(other["pty"], (console_dir() / "other.pty").string());
  EXPECT_EQ(status("rt")["state"], "no back end");
}

TEST_F(ConsoleServiceTest, ASecondServiceOnTheSameRuntimeDirIsRefusedAndStopCleansUp) {
  start();
  ConsoleServiceOptions second;
  second.runtime_dir = dir_ / "run";
  second.consoles = {{.cell = "rt"}};
  try {
    ConsoleService again(std::move(second));
    FAIL() << "a second service started";
  } catch (const std::runtime_error& error) {
    EXPECT_NE(std::string(error.what()).find("stop it first"), std::string::npos) << error.what();
  }
  EXPECT_TRUE(fs::exists(socket("rt")));  // the first one is unaffected
  stop();
  EXPECT_FALSE(fs::exists(socket("rt")));
  EXPECT_FALSE(fs::exists(console_dir() / "rt.pty"));
  EXPECT_FALSE(fs::exists(console_dir() / "rt.status.json"));
  EXPECT_TRUE(fs::exists(console_dir() / "rt.log"));
}

}  // namespace
}  // namespace cellink::hypervisor
