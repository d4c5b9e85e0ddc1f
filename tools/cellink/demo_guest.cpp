// Act 4 of `cellink demo`: a Linux guest under QEMU as cell "guest"
// (docs/guests.md, "The guest in `cellink demo`"). QEMU (TCG) boots the test
// guest image (CELLINK_GUEST_IMAGE_DIR, or --guest-image), whose /init runs
// cellink-guest-echo (tests/qemu/guest/guest_echo.cpp); this process, as
// cell "host", sends it messages and checks the echoes, then leaves and waits
// for the guest to report and power off. Skipped, saying why, without QEMU,
// without the image or with --no-guest.
#include <algorithm>
#include <cctype>
#include <fstream>
#include <iterator>
#include <memory>
#include <optional>
#include <sstream>
#include <system_error>
#include <utility>
#include <vector>

#include "cellink/linux-uio/message_error.hpp"
#include "cellink/linux-uio/session.hpp"
#include "demo_steps.hpp"
#include "demo_vm.hpp"

namespace cellink::cli::demo {
namespace {

using linux_uio::MessageErrc;
using linux_uio::Session;

// TCG boots the guest to /init in 3-5 s on an idle machine; these leave room
// for a loaded machine with 2 CPUs.
constexpr milliseconds kBootTimeout{120000};
constexpr milliseconds kGuestStepTimeout{60000};
constexpr const char* kGuestSkip = "skipping the Linux guest: ";

// QEMU's path, or empty after printing why the guest act is skipped.
std::string find_guest_runner(const DemoArgs& args, const std::filesystem::path& image) {
  if (!args.guest) {
    say("demo", "{}--no-guest was given", kGuestSkip);
    return {};
  }
  std::string qemu = find_on_path("qemu-system-x86_64");
  if (qemu.empty()) {
    say("demo",
        "{}QEMU is not installed (no qemu-system-x86_64 on PATH): apt install qemu-system-x86",
        kGuestSkip);
    return {};
  }
  if (std::ifstream reason_file{image / "unavailable.txt"}) {
    std::string reason((std::istreambuf_iterator<char>(reason_file)), {});
    std::replace(reason.begin(), reason.end(), '\n', ' ');
    while (!reason.empty() && std::isspace(static_cast<unsigned char>(reason.back()))) {
      reason.pop_back();
    }
    say("demo", "{}the build could not make the guest image in {}: {}", kGuestSkip, image.string(),
        reason);
    return {};
  }
  if (!std::filesystem::exists(image / "vmlinuz") ||
      !std::filesystem::exists(image / "initramfs.cpio.gz")) {
    say("demo",
        "{}no guest image (vmlinuz, initramfs.cpio.gz) in {}: build the target guest_image "
        "(cmake --build <build dir> --target guest_image; tests on) or pass --guest-image DIR",
        kGuestSkip, image.string());
    return {};
  }
  return qemu;
}

// The QEMU command line of cell "guest": the machine of GuestTest::boot()
// (tests/qemu/guest_fixture.hpp), the guest image and what /init runs, and
// the devices `cellink qemu-args guest` prints for the embedded config.
std::vector<std::string> guest_command(const std::string& qemu, const std::filesystem::path& image,
                                       const std::filesystem::path& dir) {
  std::vector<std::string> argv = {qemu};
  std::istringstream machine(
      "-accel tcg -machine q35 -m 256M -smp 1 -nographic -no-reboot -nic none");
  for (std::string word; machine >> word;) argv.push_back(word);
  argv.insert(argv.end(),
              {"-kernel", (image / "vmlinuz").string(), "-initrd",
               (image / "initramfs.cpio.gz").string(), "-append",
               fmt::format("console=ttyS0 quiet panic=-1 cellink.run=cellink-guest-echo "
                           "cellink.arg=--timeout-ms={}",
                           kGuestStepTimeout.count())});
  for (std::string& word : guest_cell_devices(dir)) argv.push_back(std::move(word));
  return argv;
}

// Waits for the guest's echo program to open channel "demo", with progress.
void await_guest(QemuVm& vm, Channel& channel) {
  const Clock::time_point deadline = Clock::now() + kBootTimeout;
  Clock::time_point next_progress = Clock::now() + milliseconds(15000);
  for (;;) {
    const std::error_code error = channel.wait_connected(milliseconds(500));
    if (!error) return;
    if (error != MessageErrc::timed_out) {
      throw std::runtime_error("channel 'demo' toward the Linux guest: " + error.message());
    }
    if (vm.console_ended()) throw std::runtime_error("QEMU exited before the guest opened 'demo'");
    if (Clock::now() >= deadline) {
      throw std::runtime_error(fmt::format(
          "the Linux guest did not open channel 'demo' within {} s", kBootTimeout.count() / 1000));
    }
    if (Clock::now() >= next_progress) {
      say("host", "still waiting for the guest after {:.0f} s (TCG is slow on a busy machine)",
          vm.seconds());
      next_progress += milliseconds(15000);
    }
  }
}

void exchange_with_guest(const std::filesystem::path& dir, const std::filesystem::path& image,
                         const std::string& qemu) {
  std::unique_ptr<HostDevice> device = HostDevice::connect(peer_options(dir, "host"));
  // Act 3's guest program has exited, but the daemon may not have seen its
  // socket close yet: it would refuse QEMU as a second "guest".
  if (device->peer_present(1)) {
    EventQueue(*device).wait_for("act 3's guest to leave", [](const DeviceEvent& event) {
      return event.kind == DeviceEvent::Kind::peer_left && event.peer == 1;
    });
  }
  auto session = std::make_unique<Session>(*device);
  Channel channel = session->open("demo");
  QemuVm vm(guest_command(qemu, image, dir), {"CELLINK-GUEST"}, "linux");
  say("linux", "booting Linux guest {} in QEMU (TCG, 1 CPU, 256 MiB) as cell 'guest' (pid {})",
      std::filesystem::canonical(image / "vmlinuz").filename().string(), vm.pid());
  try {
    await_guest(vm, channel);
    say("host",
        "Linux booted and its cellink-guest-echo connected channel 'demo' {:.1f} s after "
        "QEMU started",
        vm.seconds());
    const std::vector<std::string> texts = {"hello, Linux guest", "ping over ivshmem",
                                            "doorbells cross the VM boundary", "bye"};
    for (const std::string& text : texts) {
      auto [echo, micros] = round_trip(channel, std::as_bytes(std::span{text.data(), text.size()}),
                                       kGuestStepTimeout);
      if (text_of(echo) != "guest echo: " + text) {
        throw std::runtime_error("the guest answered '" + text_of(echo) + "' to '" + text + "'");
      }
      say("host", "sent '{}', got '{}' in {:.0f} us", text, text_of(echo), micros);
    }
    channel.close();  // the Session must outlive its Channels
    session.reset();  // the guest sees the channel close and the reset
    device.reset();   // leaves the link
    say("host", "left the link; the guest reports and powers off");
    const std::string expected =
        fmt::format("CELLINK-GUEST-RESULT: ok echo messages={}", texts.size());
    const std::optional<std::string> result =
        vm.wait_line("CELLINK-GUEST-RESULT", Clock::now() + kGuestStepTimeout);
    if (!result) throw std::runtime_error("the guest printed no result");
    if (*result != expected) throw std::runtime_error("the guest reported: " + *result);
    const std::optional<int> status = vm.wait_exit(Clock::now() + kGuestStepTimeout);
    if (!status) throw std::runtime_error("QEMU did not exit after the guest powered off");
    if (*status != 0) throw std::runtime_error(fmt::format("QEMU exited with status {}", *status));
    say("linux", "QEMU exited (status 0) {:.1f} s after it started", vm.seconds());
  } catch (const std::exception&) {
    vm.print_console();
    throw;
  }
}

}  // namespace

void demo_linux_guest(const std::filesystem::path& dir, const DemoArgs& args) {
  fmt::print("\n");
  const std::filesystem::path image = args.guest_image.value_or(CELLINK_GUEST_IMAGE_DIR);
  const std::string qemu = find_guest_runner(args, image);
  if (!qemu.empty()) exchange_with_guest(dir, image, qemu);
}

}  // namespace cellink::cli::demo
