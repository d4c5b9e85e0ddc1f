// A real Linux guest as a cell: QEMU under TCG boots the Debian cloud kernel
// with the initramfs of tests/qemu/guest (docs/guests.md), on the ivshmem-
// doorbell device that `cellink qemu-args` describes. In the guest,
// uio_ivshmem.ko binds the device and cellink-guest-probe drives it through
// /dev/uioN, printing "CELLINK-GUEST..." lines on the serial console, which
// is QEMU's stdout here.
//
// Skips, saying why, when QEMU is missing or the kernel packages could not
// be downloaded at build time (guest/unavailable.txt). A failed test prints
// the guest's whole console.
#include <cctype>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "cellink/ivshmem/peer_state.hpp"
#include "fixture.hpp"
#include "qemu_binary.hpp"

namespace cellink::integration {
namespace {

// TCG boots the guest to /init in about 3 s on an idle machine; these leave
// room for a loaded CI machine with 2 cores.
constexpr milliseconds kBootTimeout{120000};
constexpr milliseconds kGuestStepTimeout{60000};
// The guest's own limit for the host's doorbell, passed on its command line.
constexpr int kGuestHostWaitMs = 60000;

// Any of these ends the guest's story early; waiting for a later marker
// would only hit the timeout.
constexpr const char* kGuestEnded =
    "CELLINK-GUEST-RESULT: fail|Kernel panic|reboot: Power down|cellink-guest-probe exited";

class GuestBoot : public IntegrationTest {
 protected:
  void SetUp() override {
    qemu_binary_ = find_qemu();
    if (qemu_binary_.empty()) GTEST_SKIP() << kNoQemuReason;
    const std::filesystem::path image = CELLINK_GUEST_IMAGE_DIR;
    if (std::ifstream reason_file{image / "unavailable.txt"}) {
      std::stringstream reason;
      reason << reason_file.rdbuf();
      std::string text = reason.str();
      while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back())))
        text.pop_back();
      GTEST_SKIP() << "no guest image, the build could not get the Debian kernel packages: "
                   << text;
    }
    kernel_ = image / "vmlinuz";
    initramfs_ = image / "initramfs.cpio.gz";
    ASSERT_TRUE(std::filesystem::exists(kernel_) && std::filesystem::exists(initramfs_))
        << "the guest image is missing from " << image
        << ": build the target guest_image (tools/guest/build-guest-image.sh)";
  }

  void TearDown() override {
    if (HasFailure() && guest_) {
      std::cerr << "===== guest console (QEMU stdout) =====\n"
                << guest_->output(Stream::out) << "\n===== QEMU stderr =====\n"
                << guest_->output(Stream::err) << "\n";
    }
    IntegrationTest::TearDown();
  }

  // Boots the guest as `cell`; `append` extends the kernel command line.
  void boot(const std::string& cell, const std::filesystem::path& config,
            const std::string& append) {
    const RunResult printed = run({CELLINK_BIN, "qemu-args", cell, "--config", config.string(),
                                   "--runtime-dir", runtime_dir().string()});
    ASSERT_EQ(printed.exit_code, 0) << printed.err;
    std::vector<std::string> argv = {qemu_binary_,
                                     "-accel",
                                     "tcg",
                                     "-machine",
                                     "q35",
                                     "-m",
                                     "256M",
                                     "-smp",
                                     "1",
                                     "-nographic",
                                     "-no-reboot",
                                     "-nic",
                                     "none",
                                     "-kernel",
                                     kernel_.string(),
                                     "-initrd",
                                     initramfs_.string(),
                                     "-append",
                                     "console=ttyS0 quiet panic=-1 " + append};
    for (std::string& word : split_words(printed.out)) argv.push_back(std::move(word));
    booted_at_ = Clock::now();
    guest_ = std::make_unique<Process>(argv);
  }

  // Waits for a console line matching `pattern`; fails at once, with the
  // line, when the guest reports a failure or stops first.
  std::string expect_guest(const std::string& pattern, milliseconds timeout) {
    std::string line =
        guest_->expect_line("(" + pattern + ")|" + kGuestEnded, timeout, Stream::out);
    if (!std::regex_search(line, std::regex(pattern))) {
      throw ExpectationFailed("the guest stopped before printing '" + pattern + "': " + line);
    }
    return line;
  }

  [[nodiscard]] double seconds_since_boot() const {
    return std::chrono::duration<double>(Clock::now() - booted_at_).count();
  }

  std::string qemu_binary_;
  std::filesystem::path kernel_;
  std::filesystem::path initramfs_;
  std::unique_ptr<Process> guest_;
  Clock::time_point booted_at_;
};

TEST_F(GuestBoot, UioIvshmemDeliversSelfAndHostDoorbellsToAGuestProcess) {
  const std::filesystem::path config = write_config(link_config("vm", {"host", "guest"}, 2));
  start_daemon(config);
  Agent& host = start_agent("vm", "host");
  boot("guest", config,
       "cellink.run=cellink-guest-probe cellink.arg=--host-peer=0 " +
           std::string("cellink.arg=--host-wait-ms=") + std::to_string(kGuestHostWaitMs));

  // The module loaded and bound the device, which the probe found in sysfs.
  expect_guest("CELLINK-GUEST: module uio_ivshmem loaded", kBootTimeout);
  expect_guest("CELLINK-GUEST: found ivshmem 1af4:1110 .* driver uio_ivshmem", kGuestStepTimeout);
  // Map 1 is the daemon's whole memory object.
  const nlohmann::json status = daemon().status_json();
  const auto memory_size = status["links"][0]["memory_size"].get<std::uint64_t>();
  expect_guest(
      "uio[0-9]+: map 0 registers 256 bytes, map 1 shmem " + std::to_string(memory_size) + " bytes",
      kGuestStepTimeout);
  // Its own doorbell came back as an MSI-X interrupt through read() on
  // /dev/uioN; masked through irqcontrol, a doorbell was held, not lost.
  expect_guest("CELLINK-GUEST-SELF: ok irq=1 ivposition=1 vector=1", kGuestStepTimeout);
  expect_guest("doorbell rung while masked arrived after unmask", kGuestStepTimeout);
  const double self_doorbell_at = seconds_since_boot();

  // Guest to host: its state-table write through the UIO map, announced on
  // vector 0 as the state-change protocol says.
  host.expect_event("doorbell", "vector=0", kGuestStepTimeout);
  EXPECT_EQ(host.peer_state(1), (ivshmem::PeerState{ivshmem::Phase::init, 1}.encode()));

  // Host to guest: the daemon's eventfd becomes an MSI-X interrupt in QEMU,
  // then a UIO event in the guest process.
  ASSERT_EQ(host.doorbell(1, 1), "ok");
  expect_guest("CELLINK-GUEST-RESULT: ok uio irq=1 ivposition=1 masked-held=ok host-doorbell=ok",
               kGuestStepTimeout);
  guest_->expect_line("cellink-guest-probe exited with status 0", kGuestStepTimeout);
  guest_->expect_line("CELLINK-GUEST: uptime", kGuestStepTimeout);
  EXPECT_EQ(guest_->wait_exit(kGuestStepTimeout), 0) << "QEMU must exit when the guest powers off";
  std::cout << "guest: self-doorbell after " << self_doorbell_at << " s, powered off after "
            << seconds_since_boot() << " s of wall time (TCG)\n";
}

}  // namespace
}  // namespace cellink::integration
