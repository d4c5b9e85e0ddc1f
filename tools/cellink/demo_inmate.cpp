// Act 5 of `cellink demo`: a bare-metal inmate as cell "guest"
// (docs/inmates.md). QEMU (TCG) boots examples/inmate-echo
// (CELLINK_INMATE_DIR) on the machine `cellink qemu-args guest --inmate`
// prints; it echoes channel "demo" (channel=demo on its command line) and
// halts between doorbells. This process, as cell "host", sends it messages
// of mixed sizes, one of them fragmented, checks every byte of each echo and
// prints the round trips; the inmate prints its status after the last echo
// (report=N). Then the host leaves and QEMU is stopped: an inmate runs until
// its machine does. Skipped, saying why, without QEMU, without the ELF or
// with --no-inmate.
#include <algorithm>
#include <cstring>
#include <memory>
#include <optional>
#include <sstream>
#include <system_error>
#include <vector>

#include "cellink/linux-uio/session.hpp"
#include "demo_steps.hpp"
#include "demo_vm.hpp"

namespace cellink::cli::demo {
namespace {

using linux_uio::Session;

// TCG boots the inmate to its ready line in about 0.2 s on an idle machine;
// these leave room for a loaded one, as the QEMU tests do.
constexpr milliseconds kInmateBootTimeout{60000};
constexpr milliseconds kInmateStepTimeout{60000};
constexpr const char* kInmateSkip = "skipping the bare-metal inmate: ";

constexpr int kMessages = 100;
constexpr int kFragmentedIndex = 50;
// Below the inmate's largest inbound message (kMaxInboundMessage, 32 KiB),
// above one record of the demo link's 64 KiB output section.
constexpr std::size_t kFragmentedSize = 30000;
constexpr std::size_t kSizes[] = {1, 16, 64, 200, 1000, 4000, 60, 512};

// The ELF's path, or empty after printing why the act is skipped.
std::string find_inmate_runner(const DemoArgs& args, const std::filesystem::path& elf) {
  if (!args.inmate) {
    say("demo", "{}--no-inmate was given", kInmateSkip);
    return {};
  }
  std::string qemu = find_on_path("qemu-system-x86_64");
  if (qemu.empty()) {
    say("demo",
        "{}QEMU is not installed (no qemu-system-x86_64 on PATH): apt install qemu-system-x86",
        kInmateSkip);
    return {};
  }
  if (!std::filesystem::exists(elf)) {
    say("demo",
        "{}no inmate image {}: build the target inmate-echo (cmake --build <build dir> --target "
        "inmate-echo)",
        kInmateSkip, elf.string());
    return {};
  }
  return qemu;
}

// Message `index`: its size, and bytes that differ from every other's.
std::vector<std::byte> numbered(int index) {
  const std::size_t size =
      index == kFragmentedIndex ? kFragmentedSize : kSizes[index % std::size(kSizes)];
  std::vector<std::byte> bytes(size);
  for (std::size_t i = 0; i < size; ++i) {
    bytes[i] = static_cast<std::byte>((static_cast<std::size_t>(index) * 131 + i * 7 + 3) & 0xff);
  }
  return bytes;
}

// The percentile `p` (0-100) of sorted `values`.
double percentile(const std::vector<double>& values, double p) {
  const auto rank = static_cast<std::size_t>(p / 100.0 * static_cast<double>(values.size() - 1));
  return values[rank];
}

void exchange_with_inmate(const std::filesystem::path& dir, const std::filesystem::path& elf,
                          const std::string& qemu) {
  std::unique_ptr<HostDevice> device = HostDevice::connect(peer_options(dir, "host"));
  // Act 4's QEMU (or act 3's guest program) has exited, but the daemon may
  // not have seen its socket close yet: it would refuse the inmate as a
  // second "guest".
  if (device->peer_present(1)) {
    EventQueue(*device).wait_for("the previous guest to leave", [](const DeviceEvent& event) {
      return event.kind == DeviceEvent::Kind::peer_left && event.peer == 1;
    });
  }
  auto session = std::make_unique<Session>(*device);
  Channel channel = session->open("demo");

  const std::string append = fmt::format("channel=demo report={}", kMessages);
  std::vector<std::string> argv = {qemu};
  std::istringstream machine(inmate_machine_words(elf));
  for (std::string word; machine >> word;) argv.push_back(word);
  for (std::string& word : guest_cell_devices(dir)) argv.push_back(std::move(word));
  argv.insert(argv.end(), {"-append", append});
  fmt::print(
      "$ qemu-system-x86_64 $(cellink qemu-args guest --runtime-dir {} --inmate {}) "
      "-append '{}'\n",
      dir.string(), elf.string(), append);
  QemuVm vm(argv, {"echo: ", "inmate: "}, "inmate");
  say("inmate", "booting {} (bare metal, PVH) in QEMU (TCG, 32 MiB) as cell 'guest' (pid {})",
      elf.filename().string(), vm.pid());
  try {
    if (!vm.wait_line("echo: ready", Clock::now() + kInmateBootTimeout)) {
      throw std::runtime_error("the inmate printed no ready line");
    }
    const double ready_after = vm.seconds();
    if (const std::error_code error = channel.wait_connected(kInmateStepTimeout)) {
      throw std::runtime_error("channel 'demo' toward the inmate: " + error.message());
    }
    say("host", "the inmate booted to its ready line in {:.2f} s; channel 'demo' connected",
        ready_after);

    std::vector<double> round_trips;
    std::uint64_t bytes = 0;
    for (int index = 0; index < kMessages; ++index) {
      const std::vector<std::byte> message = numbered(index);
      auto [echo, micros] = round_trip(channel, message, kInmateStepTimeout);
      if (echo.size() != message.size() ||
          std::memcmp(echo.payload().data(), message.data(), message.size()) != 0) {
        throw std::runtime_error(
            fmt::format("echo {} differs: {} bytes, sent {}", index, echo.size(), message.size()));
      }
      round_trips.push_back(micros);
      bytes += message.size();
    }
    std::sort(round_trips.begin(), round_trips.end());
    const std::size_t record = session->max_record_payload();
    say("host",
        "{} messages of 1 B to {} B ({} B in all; one of {} B went as {} fragments each way) "
        "echoed and checked byte for byte",
        kMessages, kFragmentedSize, bytes, kFragmentedSize,
        (kFragmentedSize + record - 1) / record);
    say("host",
        "round trips (TCG, software emulation): min {:.0f} us, p50 {:.0f} us, max {:.0f} us",
        round_trips.front(), percentile(round_trips, 50), round_trips.back());
    const std::optional<std::string> interrupts =
        vm.wait_line("echo: interrupts:", Clock::now() + kInmateStepTimeout);
    if (!interrupts) throw std::runtime_error("the inmate printed no status line");

    channel.close();  // the Session must outlive its Channels
    session.reset();
    device.reset();  // leaves the link: the inmate sees the reset and waits for a new host
    say("host", "left the link");
    if (!vm.wait_line("echo: peer 0 reset", Clock::now() + kInmateStepTimeout)) {
      throw std::runtime_error("the inmate did not report the host's reset");
    }
    const int status = vm.stop(milliseconds(5000));
    say("inmate", "QEMU stopped (SIGTERM, status {}) {:.1f} s after it started", status,
        vm.seconds());
  } catch (const std::exception&) {
    vm.print_console();
    throw;
  }
}

}  // namespace

void demo_inmate(const std::filesystem::path& dir, const DemoArgs& args) {
  fmt::print("\n");
  const std::filesystem::path elf = std::filesystem::path(CELLINK_INMATE_DIR) / "inmate-echo.elf";
  const std::string qemu = find_inmate_runner(args, elf);
  if (!qemu.empty()) exchange_with_inmate(dir, elf, qemu);
}

}  // namespace cellink::cli::demo
