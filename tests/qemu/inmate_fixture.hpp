// InmateTest: the gtest fixture of the tests that boot a bare-metal inmate
// (examples/inmate-echo, examples/inmate-telemetry) as a cell in QEMU under
// TCG, on the ivshmem-doorbell devices and machine that
// `cellink qemu-args CELL --inmate FILE` prints (docs/inmates.md). The
// inmate's serial console is QEMU's stdout.
//
// SetUp() skips, saying why, when QEMU is missing. A failed test prints
// every inmate's console and QEMU's stderr, then (through GuestTest and
// IntegrationTest) the guests', the daemon's and the agents' output.
#pragma once

#include <csignal>
#include <filesystem>
#include <iostream>
#include <memory>
#include <regex>
#include <string>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "guest_fixture.hpp"

namespace cellink::integration {

// TCG boots an inmate to its first line in about 0.1 s on an idle machine.
inline constexpr milliseconds kInmateBootTimeout{60000};
inline constexpr milliseconds kInmateStepTimeout{60000};

// Lines after which waiting for another one is pointless.
inline constexpr const char* kInmateEnded = "inmate: FATAL|inmate: exit";

// GuestTest's setup skips when the guest image is missing; an inmate needs
// no image, so InmateTest checks only for QEMU, and a test that also boots
// a Linux guest calls require_guest_image().
class InmateTest : public GuestTest {
 protected:
  void SetUp() override {
    qemu_binary_ = find_qemu();
    if (qemu_binary_.empty()) GTEST_SKIP() << kNoQemuReason;
  }

  void require_guest_image() { GuestTest::SetUp(); }

  void TearDown() override {
    for (auto& [name, inmate] : inmates_) {
      if (!inmate) continue;
      if (HasFailure()) {
        std::cerr << "===== inmate " << name << " console (QEMU stdout) =====\n"
                  << inmate->output(Stream::out) << "\n===== inmate " << name
                  << " QEMU stderr =====\n"
                  << inmate->output(Stream::err) << "\n";
      }
      if (!inmate->reaped()) {
        inmate->kill(SIGKILL);
        (void)inmate->wait_exit(kInmateStepTimeout);
      }
    }
    GuestTest::TearDown();
  }

  [[nodiscard]] static std::filesystem::path inmate_image(const std::string& name) {
    return std::filesystem::path(CELLINK_INMATE_DIR) / (name + ".elf");
  }

  // Boots `image` (an inmate ELF) as `cell`; `append` is its command line.
  // The Process stays in inmates_ under `label` (printed when a test fails).
  Process& boot_inmate(const std::string& label, const std::string& cell,
                       const std::filesystem::path& config, const std::string& image,
                       const std::string& append = "") {
    const std::filesystem::path elf = inmate_image(image);
    if (!std::filesystem::exists(elf)) {
      throw ExpectationFailed("the inmate image " + elf.string() +
                              " is missing: build the target " + image);
    }
    const RunResult printed =
        run({CELLINK_BIN, "qemu-args", cell, "--config", config.string(), "--runtime-dir",
             runtime_dir().string(), "--inmate", elf.string()});
    if (printed.exit_code != 0) throw ExpectationFailed("cellink qemu-args: " + printed.err);
    std::vector<std::string> argv = {qemu_binary_};
    for (std::string& word : split_words(printed.out)) argv.push_back(std::move(word));
    if (!append.empty()) {
      argv.emplace_back("-append");
      argv.push_back(append);
    }
    started_at_ = Clock::now();
    inmates_.emplace_back(label, std::make_unique<Process>(argv));
    return *inmates_.back().second;
  }

  // Waits for an inmate console line matching `pattern`; fails at once,
  // with the line, when the inmate reports a fatal error or exits first.
  static std::string expect_inmate(Process& inmate, const std::string& pattern,
                                   milliseconds timeout = kInmateStepTimeout) {
    std::string line =
        inmate.expect_line("(" + pattern + ")|" + kInmateEnded, timeout, Stream::out);
    if (!std::regex_search(line, std::regex(pattern))) {
      throw ExpectationFailed("the inmate stopped before printing '" + pattern + "': " + line);
    }
    return line;
  }

  [[nodiscard]] double seconds_since_inmate_start() const {
    return std::chrono::duration<double>(Clock::now() - started_at_).count();
  }

  std::vector<std::pair<std::string, std::unique_ptr<Process>>> inmates_;
  Clock::time_point started_at_;
};

}  // namespace cellink::integration
