// Real QEMU as a cell: `qemu-system-x86_64 -accel tcg -S` with the options
// `cellink qemu-args` prints. QEMU aborts on any ivshmem-server protocol
// error, so a guest that stays up through joins and leaves is the proof that
// the daemon speaks the protocol exactly. The guest's CPU never starts (-S):
// the device is realised, and its chardev served, by QEMU's main loop.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>

#include <gtest/gtest.h>

#include "fixture.hpp"
#include "qemu_binary.hpp"

namespace cellink::integration {
namespace {

constexpr milliseconds kQemuStartTimeout{30000};

class QemuClient : public IntegrationTest {
 protected:
  void SetUp() override {
    qemu_binary_ = find_qemu();
    if (qemu_binary_.empty()) GTEST_SKIP() << kNoQemuReason;
  }

  void TearDown() override {
    if (HasFailure() && qemu_) std::cerr << qemu_->transcript();
    IntegrationTest::TearDown();
  }

  // Starts QEMU as `cell`, with the monitor on stdio, and waits until the
  // daemon logged it attached as a QEMU client.
  Process& start_qemu(const std::string& cell, const std::filesystem::path& config) {
    const RunResult printed = run({CELLINK_BIN, "qemu-args", cell, "--config", config.string(),
                                   "--runtime-dir", runtime_dir().string()});
    EXPECT_EQ(printed.exit_code, 0) << printed.err;
    std::vector<std::string> argv = {qemu_binary_,  "-accel", "tcg", "-S",       "-display", "none",
                                     "-nodefaults", "-m",     "64",  "-monitor", "stdio"};
    for (std::string& word : split_words(printed.out)) argv.push_back(std::move(word));
    qemu_ = std::make_unique<Process>(argv);
    daemon().expect_log(
        "cell '" + cell + "' \\(peer [0-9]+\\) attached: qemu pid " + std::to_string(qemu_->pid()),
        kQemuStartTimeout);
    return *qemu_;
  }

  // Proves QEMU's main loop is alive and its ivshmem device realised.
  void expect_qemu_serving() {
    qemu_->send_line("info pci");
    qemu_->expect_line("1af4:1110", kQemuStartTimeout);
  }

  std::string qemu_binary_;
  std::unique_ptr<Process> qemu_;
};

TEST_F(QemuClient, AttachesThroughQemuArgsSurvivesJoinsAndLeavesAndIsResetWhenKilled) {
  const std::filesystem::path backing = temp_.path() / "link.shm";
  const std::filesystem::path config =
      write_config(link_config("vm", {"host", "guest", "spare"}, 2, backing.string()));
  start_daemon(config);
  Agent& host = start_agent("vm", "host");
  Process& qemu = start_qemu("guest", config);

  host.expect_event("peer_joined", "peer=1");
  const nlohmann::json status = daemon().status_json();
  const nlohmann::json& guest = peer_status(status, "vm", "guest");
  EXPECT_TRUE(guest["connected"].get<bool>());
  EXPECT_EQ(guest["client"], "qemu");
  EXPECT_EQ(guest["pid"].get<pid_t>(), qemu.pid());

  // A join and a leave reach QEMU as protocol messages; it must take both.
  Agent& spare = start_agent("vm", "spare");
  spare.quit();
  host.expect_event("peer_left", "peer=2");
  EXPECT_EQ(host.doorbell(1, 0), "ok");
  EXPECT_EQ(host.doorbell(1, 1), "ok");
  expect_qemu_serving();
  ASSERT_FALSE(qemu.reaped()) << "QEMU exited: the daemon broke the ivshmem-server protocol";

  // Stand in for the guest driver, which would have published its state.
  const std::uint32_t running = 0x103;
  const int fd = ::open(backing.c_str(), O_RDWR | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::pwrite(fd, &running, sizeof(running), 4), 4);
  ::close(fd);
  EXPECT_EQ(host.peer_state(1), running);

  qemu.kill(SIGKILL);
  (void)qemu.wait_exit();
  host.expect_event("peer_left", "peer=1");
  host.expect_event("doorbell", "vector=0");
  EXPECT_EQ(host.peer_state(1), 0U);
  const nlohmann::json after = daemon().status_json();
  const nlohmann::json& gone = peer_status(after, "vm", "guest");
  EXPECT_FALSE(gone["connected"].get<bool>());
  EXPECT_EQ(gone["state"]["raw"].get<std::uint32_t>(), 0U);
}

TEST_F(QemuClient, SecondQemuForAnAttachedCellIsRefusedAndTheFirstStaysUp) {
  const std::filesystem::path config = write_config(link_config("vm", {"host", "guest"}, 1));
  start_daemon(config);
  Agent& host = start_agent("vm", "host");
  (void)start_qemu("guest", config);
  host.expect_event("peer_joined", "peer=1");
  std::unique_ptr<Process> kept = std::move(qemu_);

  const RunResult printed = run({CELLINK_BIN, "qemu-args", "guest", "--config", config.string(),
                                 "--runtime-dir", runtime_dir().string()});
  std::vector<std::string> argv = {qemu_binary_, "-accel",      "tcg", "-S", "-display",
                                   "none",       "-nodefaults", "-m",  "64"};
  for (std::string& word : split_words(printed.out)) argv.push_back(std::move(word));
  Process second(argv);
  EXPECT_EQ(second.wait_exit(kQemuStartTimeout), 1) << "a second QEMU for the cell must fail";
  second.expect_line("server sent version -2, expecting 0", kEventTimeout, Stream::err);
  daemon().expect_log("refusing a second connection");

  qemu_ = std::move(kept);
  expect_qemu_serving();
  EXPECT_EQ(host.doorbell(1, 0), "ok");
  EXPECT_TRUE(host.take_events("peer_left").empty()) << "the first guest must not have left";
}

}  // namespace
}  // namespace cellink::integration
