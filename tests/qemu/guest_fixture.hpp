// GuestTest: the gtest fixture of the tests that boot a real Linux guest as a
// cell. QEMU under TCG boots the Debian cloud kernel with the initramfs of
// tests/qemu/guest (docs/guests.md), on the ivshmem-doorbell device that
// `cellink qemu-args` describes; the guest's serial console is QEMU's stdout.
//
// SetUp() skips, saying why, when QEMU is missing or the kernel packages
// could not be downloaded at build time (guest/unavailable.txt). A failed
// test prints the guest's whole console and QEMU's stderr, then (through
// IntegrationTest) the daemon's and the agents' output.
#pragma once

#include <cctype>
#include <chrono>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "fixture.hpp"
#include "qemu_binary.hpp"

namespace cellink::integration {

// TCG boots the guest to /init in about 3 s on an idle machine; these leave
// room for a loaded CI machine with 2 cores.
inline constexpr milliseconds kBootTimeout{120000};
inline constexpr milliseconds kGuestStepTimeout{60000};

// Any of these ends the guest's story early; waiting for a later marker
// would only hit the timeout.
inline constexpr const char* kGuestEnded =
    "CELLINK-GUEST-RESULT: fail|Kernel panic|reboot: Power down|cellink-guest-[a-z]+ exited";

// The link of the host-and-one-guest tests (GuestChannel, GuestRestart):
// 64 KiB output sections (32 KiB rings, 16 376-byte records), so some
// messages are fragmented and the 3-record ones make the sender wait for
// ring space.
inline constexpr const char* kHostGuestLinkConfig = R"([[cell]]
name = "host"

[[cell]]
name = "guest"

[[link]]
name = "vm"
cells = ["host", "guest"]
rw_section = "0"
output_section = "64KiB"
vectors = 2
protocol = "cellink"
)";

class GuestTest : public IntegrationTest {
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

  // For a test's other guest (guest_ is the last one booted): prints its
  // console when the test failed and makes sure its QEMU is gone.
  void finish_other_guest(const std::unique_ptr<Process>& other, const std::string& name) {
    if (!other) return;
    if (HasFailure()) {
      std::cerr << "===== " << name << " console (QEMU stdout) =====\n"
                << other->output(Stream::out) << "\n===== " << name << " QEMU stderr =====\n"
                << other->output(Stream::err) << "\n";
    }
    if (!other->reaped()) {
      other->kill(SIGKILL);
      (void)other->wait_exit(kGuestStepTimeout);
    }
  }

  // Boots the guest as `cell`; `append` extends the kernel command line,
  // `machine` goes before the ivshmem device's options (an IOMMU, say).
  void boot(const std::string& cell, const std::filesystem::path& config, const std::string& append,
            const std::vector<std::string>& machine = {}) {
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
    argv.insert(argv.end(), machine.begin(), machine.end());
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

}  // namespace cellink::integration
