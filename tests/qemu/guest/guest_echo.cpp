// guest_echo: the Linux guest of `cellink demo` (act 4, docs/guests.md). A
// Session in the guest, over UioDevice (uio_ivshmem), answers the demo's host
// process on channel "demo". Statically linked: the guest has busybox and
// nothing else.
//
//   1. opens the only uio_ivshmem device and a Session over it, with
//      spin_budget 0 (a receive that finds nothing sleeps on the MSI-X
//      interrupt, so the guest's one TCG CPU is not spent polling);
//   2. opens channel "demo", waits for the host to run and open its side;
//   3. answers every message with "guest echo: <message>" until the host
//      closes the channel or leaves the link (peer_reset).
// Lines start with "CELLINK-GUEST: "; the last is "CELLINK-GUEST-RESULT: ok
// echo messages=N" or "CELLINK-GUEST-RESULT: fail <reason>".
//
// Usage: guest_echo [--timeout-ms=MS]   (each wait; default 60000)
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "cellink/linux-uio/session.hpp"
#include "cellink/linux-uio/uio_device.hpp"
#include "guest_console.hpp"

namespace {

using cellink::guest_test::fail;
using cellink::guest_test::parse_option;
using cellink::guest_test::say;
using cellink::linux_uio::Channel;
using cellink::linux_uio::Message;
using cellink::linux_uio::MessageErrc;
using cellink::linux_uio::Session;
using cellink::linux_uio::UioDevice;

constexpr std::string_view kChannelName = "demo";
constexpr std::string_view kEchoPrefix = "guest echo: ";
// Longer messages are echoed but shown cut to this many bytes.
constexpr std::size_t kShownBytes = 60;

std::string shown(std::span<const std::byte> payload) {
  std::string text(reinterpret_cast<const char*>(payload.data()),
                   std::min(payload.size(), kShownBytes));
  for (char& c : text) {
    if (c < 0x20 || c > 0x7e) c = '.';
  }
  return payload.size() > kShownBytes ? text + "..." : text;
}

int run(std::chrono::milliseconds timeout) {
  std::error_code error;
  std::string detail;
  const std::unique_ptr<UioDevice> device = UioDevice::open({}, error, detail);
  if (!device) return fail("UioDevice::open: " + detail);
  say(device->uio_name() + ": ivshmem " + cellink::linux_uio::version_name(device->version()) +
      ", link '" + device->link_name() + "', peer " + std::to_string(device->id()) + " of " +
      std::to_string(device->peer_count()));

  std::uint64_t echoed = 0;
  {
    // spin_budget 0: every receive that finds nothing sleeps on the device.
    Session session(*device, {.spin_budget = std::chrono::nanoseconds{0}});
    const std::uint32_t host = session.only_peer();
    Channel channel = session.open(kChannelName, host);
    say("channel '" + std::string(kChannelName) + "' opened; waiting for the host (peer " +
        std::to_string(host) + ")");
    if (const std::error_code waited = session.wait_for_peer(host, timeout)) {
      return fail("the host never ran: " + waited.message());
    }
    if (const std::error_code waited = channel.wait_connected(timeout)) {
      return fail("the host never opened channel 'demo': " + waited.message());
    }
    say("session epoch " + std::to_string(session.epoch()) + ": the host is here, echoing");

    std::vector<std::byte> echo;
    for (;;) {
      Message message = channel.receive(timeout);
      if (message.error() == MessageErrc::channel_closed ||
          message.error() == MessageErrc::peer_reset) {
        say("the host left (" + message.error().message() + ") after " + std::to_string(echoed) +
            " messages");
        break;
      }
      if (!message) return fail("receive: " + message.error().message());
      const auto prefix = std::as_bytes(std::span{kEchoPrefix.data(), kEchoPrefix.size()});
      echo.assign(prefix.begin(), prefix.end());
      echo.insert(echo.end(), message.payload().begin(), message.payload().end());
      const std::string text = shown(message.payload());
      message.release();
      if (const std::error_code sent = channel.send(echo, timeout)) {
        return fail("echo of '" + text + "': " + sent.message());
      }
      ++echoed;
      say("got '" + text + "', sent back '" + std::string(kEchoPrefix) + text + "'");
    }
  }
  std::printf("CELLINK-GUEST-RESULT: ok echo messages=%llu\n",
              static_cast<unsigned long long>(echoed));
  std::fflush(stdout);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::chrono::milliseconds timeout{60000};
  for (int i = 1; i < argc; ++i) {
    const auto ms = parse_option(argv[i], "--timeout-ms=");
    if (!ms || *ms == 0) return fail("usage: guest_echo [--timeout-ms=MS]");
    timeout = std::chrono::milliseconds{*ms};
  }
  try {
    return run(timeout);
  } catch (const std::exception& failure) {
    return fail(failure.what());
  }
}
