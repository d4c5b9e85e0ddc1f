// The virtio-console back end of `cellink console serve`, as a real process
// on a real daemon, against front ends in this process: the transport's
// driver half (what inmates run) over HostDevice, and a hostile one that
// writes the register window by hand. What they show (docs/console.md):
//   - guest output reaches the PTY and the log, typed keys reach the guest;
//   - a malformed register write breaks only that console, with a
//     diagnostic in its status, while the other console and the daemon go on;
//   - a restarted back end is a device reset the front end recovers from;
//   - a front end that leaves and returns gets a fresh device.
#include <chrono>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <memory>
#include <regex>
#include <sstream>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "cellink/linux-uio/unique_fd.hpp"
#include "cellink/transports/virtio_ivshmem_format.hpp"
#include "console_frontend.hpp"
#include "console_service.hpp"
#include "fixture.hpp"
#include "process.hpp"

namespace cellink::integration {
namespace {

namespace fs = std::filesystem;
using std::chrono::milliseconds;

constexpr milliseconds kStep{20000};

constexpr const char* kTwoConsoles = R"([[cell]]
name = "console"

[[cell]]
name = "g1"

[[cell]]
name = "g2"

[[link]]
name = "g1-console"
cells = ["console", "g1"]
protocol = "virtio-front:console"
rw_section = "256KiB"
output_section = "0"

[[link]]
name = "g2-console"
cells = ["console", "g2"]
protocol = "virtio-front:console"
rw_section = "256KiB"
output_section = "0"

[[console]]
cell = "g1"
link = "g1-console"

[[console]]
cell = "g2"
link = "g2-console"
)";

class ConsoleBackendTest : public IntegrationTest {
 protected:
  void SetUp() override {
    config_ = write_config(kTwoConsoles);
    start_daemon(config_);
    service_ = std::make_unique<ConsoleServiceProcess>(config_, runtime_dir());
    start_service();
  }

  void TearDown() override {
    if (HasFailure() && service_->started()) std::cerr << service_->process().transcript();
    IntegrationTest::TearDown();
  }

  void start_service() {
    service_->start({"g1", "g2"}, kStep);
    (void)service_->wait_for_state("g1", "waiting for the guest's driver", kStep);
    (void)service_->wait_for_state("g2", "waiting for the guest's driver", kStep);
  }

  std::unique_ptr<ConsoleFrontEnd> start_front_end(const std::string& cell) {
    auto front = std::make_unique<ConsoleFrontEnd>(runtime_dir(), cell + "-console", cell);
    std::string why;
    EXPECT_TRUE(front->start(kStep, why))
        << "the front end of " << cell << " did not come up: " << why;
    return front;
  }

  fs::path config_;
  std::unique_ptr<ConsoleServiceProcess> service_;
};

TEST_F(ConsoleBackendTest, GuestOutputReachesThePtyAndTheLogAndTypedKeysReachTheGuest) {
  const linux_uio::UniqueFd pty = service_->open_pty("g1");
  PtyReader reader(pty.get());
  auto front = start_front_end("g1");
  (void)service_->wait_for_state("g1", "running", kStep);

  ASSERT_TRUE(front->write("hello from g1\n", kStep));
  EXPECT_TRUE(reader.wait_for("hello from g1", kStep)) << reader.seen();
  const std::string log = read_whole_file(service_->log_path("g1"));
  EXPECT_NE(log.find("hello from g1"), std::string::npos) << log;

  const std::string keys = "echo $((6*7))\r";
  ASSERT_TRUE(reader.type(keys));
  EXPECT_NE(front->read_until(keys, kStep).find(keys), std::string::npos);
  // The status file counts the bytes within its refresh interval.
  const auto deadline = std::chrono::steady_clock::now() + kStep;
  std::uint64_t to_guest = 0;
  while (to_guest < keys.size() && std::chrono::steady_clock::now() < deadline) {
    const nlohmann::json doc = service_->status("g1");
    if (doc.is_object()) to_guest = doc.value("bytes_to_guest", std::uint64_t{0});
    std::this_thread::sleep_for(milliseconds{20});
  }
  EXPECT_EQ(to_guest, keys.size());
}

TEST_F(ConsoleBackendTest, AMalformedRegisterWriteBreaksOnlyThatConsoleWithADiagnostic) {
  // The hostile front end: g2's cell, writing the register window by hand.
  linux_uio::HostDeviceOptions options;
  options.runtime_dir = runtime_dir();
  options.link = "g2-console";
  options.cell = "g2";
  const auto hostile = linux_uio::HostDevice::connect(options);
  const std::uint32_t back_end = 1 - hostile->id();
  const auto deadline = std::chrono::steady_clock::now() + kStep;
  while (hostile->peer_state(back_end) != transports::virtio_peer_state::kReady &&
         std::chrono::steady_clock::now() < deadline) {
    (void)hostile->wait(milliseconds{20});
  }
  ASSERT_EQ(hostile->peer_state(back_end), transports::virtio_peer_state::kReady);
  hostile->set_state(transports::virtio_peer_state::kReady);
  // 0x2a lies inside queue_desc: no field starts there.
  auto* header = reinterpret_cast<transports::VirtioIvshmemHeader*>(hostile->rw_section().data());
  std::atomic_ref<std::uint32_t>{header->write_transaction}.store(0x2a, std::memory_order_release);
  ASSERT_EQ(hostile->doorbell(back_end, 0), ivshmem::DoorbellStatus::ok);

  const std::string state = service_->wait_for_state("g2", "broken:", kStep);
  EXPECT_NE(state.find("write_transaction"), std::string::npos) << state;
  EXPECT_NE(state.find("0x2a"), std::string::npos) << state;

  // The other console, the service and the daemon carry on.
  const linux_uio::UniqueFd pty = service_->open_pty("g1");
  PtyReader reader(pty.get());
  auto front = start_front_end("g1");
  ASSERT_TRUE(front->write("g1 still works\n", kStep));
  EXPECT_TRUE(reader.wait_for("g1 still works", kStep)) << reader.seen();
  EXPECT_FALSE(service_->process().reaped());
  const RunResult daemon_status =
      run({CELLINK_BIN, "status", "--runtime-dir", runtime_dir().string()});
  EXPECT_EQ(daemon_status.exit_code, 0) << daemon_status.err;
  // `cellink status` shows the diagnostic beside the daemon's view, and the
  // virtio links' raw peer states.
  EXPECT_TRUE(std::regex_search(daemon_status.out, std::regex("\n  g2 +broken: .*0x2a")))
      << daemon_status.out;
  EXPECT_TRUE(std::regex_search(daemon_status.out, std::regex("\n  g1 +running: ")))
      << daemon_status.out;
  EXPECT_NE(daemon_status.out.find("READY (virtio)"), std::string::npos) << daemon_status.out;
}

TEST_F(ConsoleBackendTest, ARestartedBackEndIsSeenAsADeviceResetAndTheFrontEndProbesAgain) {
  auto front = start_front_end("g1");
  ASSERT_TRUE(front->write("before the restart\n", kStep));

  service_->process().kill(SIGTERM);
  ASSERT_EQ(service_->process().wait_exit(kStep), 0) << service_->process().transcript();
  // The back end's state went to 0: the front end sees the device reset.
  const auto deadline = std::chrono::steady_clock::now() + kStep;
  bool reset = false;
  while (!reset && std::chrono::steady_clock::now() < deadline) {
    (void)front->device().wait(milliseconds{20});
    reset = front->driver().handle_events().reset;
  }
  ASSERT_TRUE(reset) << "the front end did not notice the back end leaving";

  start_service();
  const linux_uio::UniqueFd pty = service_->open_pty("g1");
  PtyReader reader(pty.get());
  std::string why;
  ASSERT_TRUE(front->start(kStep, why)) << why;
  ASSERT_TRUE(front->write("after the restart\n", kStep));
  EXPECT_TRUE(reader.wait_for("after the restart", kStep)) << reader.seen();
  const std::string log = read_whole_file(service_->log_path("g1"));
  EXPECT_NE(log.find("before the restart"), std::string::npos) << log;
  EXPECT_NE(log.find("after the restart"), std::string::npos) << log;
}

TEST_F(ConsoleBackendTest, AFrontEndThatLeavesAndComesBackGetsAFreshDevice) {
  const linux_uio::UniqueFd pty = service_->open_pty("g1");
  PtyReader reader(pty.get());
  {
    auto first = start_front_end("g1");
    ASSERT_TRUE(first->write("first boot\n", kStep));
  }
  // The first front end's connection closed: the daemon reset its state,
  // and the back end forgot its queues.
  (void)service_->wait_for_state("g1", "waiting for the guest's driver", kStep);
  auto second = start_front_end("g1");
  ASSERT_TRUE(second->write("second boot\n", kStep));
  EXPECT_TRUE(reader.wait_for("second boot", kStep)) << reader.seen();
  EXPECT_LT(reader.seen().find("first boot"), reader.seen().find("second boot")) << reader.seen();
}

// A daemon that runs another configuration than the service: its link has
// no R/W section, so it cannot carry a console. The service says so, once,
// instead of joining and leaving the link for ever.
TEST(ConsoleBackendConfig, ALinkThatCannotCarryAConsoleIsReportedNotRetried) {
  TempDir temp;
  const fs::path runtime_dir = temp.path() / "run";
  const fs::path daemon_config = temp.write_file("daemon.toml", R"([[cell]]
name = "console"

[[cell]]
name = "g1"

[[link]]
name = "g1-console"
cells = ["console", "g1"]
rw_section = "0"
output_section = "64KiB"
)");
  Daemon daemon(DaemonSettings{runtime_dir, daemon_config, std::nullopt});
  const fs::path service_config = temp.write_file("service.toml", kTwoConsoles);
  ConsoleServiceProcess service(service_config, runtime_dir);
  service.start({"g1"}, kStep);
  const std::string state = service.wait_for_state("g1", "cannot serve link 'g1-console'", kStep);
  EXPECT_NE(state.find("same --config"), std::string::npos) << state;
  // One attempt: the daemon saw the service's cell attach once, not again at
  // each of the two retry intervals that pass here.
  std::this_thread::sleep_for(milliseconds{600});
  const std::string log = daemon.transcript();
  const std::string attached = "cell 'console' (peer 0) attached";
  const std::size_t first = log.find(attached);
  EXPECT_NE(first, std::string::npos) << log;
  EXPECT_EQ(log.find(attached, first + 1), std::string::npos) << log;
}

}  // namespace
}  // namespace cellink::integration
