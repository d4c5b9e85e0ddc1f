// guest_channel: a Session in a Linux guest, over UioDevice (uio_ivshmem),
// VfioDevice (vfio-pci), SysfsDevice (resource files, polling) or whichever
// open_ivshmem_device() picks, exchanging checked messages with a host
// process on the daemon's link (tests/qemu/guest_channel_test.cpp,
// guest_three_peers_test.cpp, docs/guests.md). Statically linked: the guest has
// busybox and nothing else.
//
//   1. opens the only ivshmem device (--backend=uio, the default: the one
//      uio_ivshmem bound; --backend=vfio: hands it to vfio-pci;
//      --backend=sysfs: maps its resource files and polls; --backend=auto:
//      open_ivshmem_device() chooses, and its description is printed) and a
//      Session over it, with spin_budget 0: a receive that finds nothing
//      sleeps on the MSI-X interrupt at once (sysfs: until the next poll);
//   2. opens channel "guest-ping" and waits for the host's side;
//   3. host first: receives ping r (blocking), answers pong r, N rounds;
//   4. guest first: sends ping r, receives pong r (blocking), N rounds;
//      each side sends only once the other sleeps in its receive
//      (ping_pong_format.hpp), so every receive blocks and a doorbell ends it;
//   5. waits for the host to leave and reports when the reset shows.
// On a link of more than two peers, --follow=P and --lead=P name the peers
// to ping-pong with, in that order: a follower plays the guest's part above,
// a leader the host's (it sends the host-first pings and answers the
// guest-first ones). Step 5 then waits for peer 0 to leave. Without them the
// guest follows the only other peer.
// With --hold it stops after step 3: it prints "holding after host first"
// and sleeps, its Session still running, until the test kills its QEMU
// (guest_restart_test.cpp: a killed guest is a peer reset for the host).
// With --stuck-send=BYTES it skips the ping-pong: once connected it prints
// "sending BYTES-byte message" and sends one message of that size toward the
// only peer, which does not receive, so the send blocks mid-message until
// the test kills QEMU (guest_restart_test.cpp).
// With --sessions=N it runs steps 2 to 4 in N Sessions one after the other
// on the same device, printing "leaving: session epoch E ends" between them:
// a cell that leaves and joins again within one boot (guest_restart_test.cpp).
// With --rejoin=P (P one of the peers above), after its pairs and before
// step 5 it waits for P's reset ("peer P reset seen"), then for P's
// successor to join and reconnect the channel ("peer P rejoined"), and
// plays its pair with the successor again (guest_three_peers_test.cpp).
// With --echo-with=P, after its pairs and before step 5 it sends --rounds
// messages of 100 and 20 000 bytes on channel "echo" toward P (an echoing
// peer: examples/inmate-echo) and checks each echo byte for byte, printing
// "echo with peer P: N messages checked" (tests/qemu/inmate_test.cpp).
// Every message is checked byte for byte (ping_pong_format.hpp). Lines start
// with "CELLINK-GUEST: "; the last is "CELLINK-GUEST-RESULT: ok channel ..."
// or "CELLINK-GUEST-RESULT: fail <reason>".
//
// Usage: guest_channel [--backend=uio|vfio|sysfs|auto] [--rounds=N] [--timeout-ms=MS] [--hold]
//                      [--follow=P|--lead=P]... [--rejoin=P] [--stuck-send=BYTES]
//                      [--sessions=N] [--echo-with=P]
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include "cellink/linux-uio/open_device.hpp"
#include "cellink/linux-uio/session.hpp"
#include "cellink/linux-uio/sysfs_device.hpp"
#include "cellink/linux-uio/uio_device.hpp"
#include "cellink/linux-uio/vfio_device.hpp"
#include "guest_console.hpp"
#include "ping_pong_format.hpp"

namespace {

using cellink::guest_test::fail;
using cellink::guest_test::Kind;
using cellink::guest_test::parse_option;
using cellink::guest_test::Phase;
using cellink::guest_test::say;
using cellink::linux_uio::Channel;
using cellink::linux_uio::Message;
using cellink::linux_uio::MessageErrc;
using cellink::linux_uio::OpenedIvshmemDevice;
using cellink::linux_uio::Session;
using cellink::linux_uio::SysfsDevice;
using cellink::linux_uio::UioDevice;
using cellink::linux_uio::VfioDevice;
using cellink::linux_uio::WaitableDevice;
using Clock = std::chrono::steady_clock;

enum class Backend : std::uint8_t { uio, vfio, sysfs, automatic };

struct Options {
  Backend backend = Backend::uio;
  std::uint32_t rounds = 8;
  std::chrono::milliseconds timeout{30000};
  bool hold = false;                       // stop after the host-first phase and sleep until killed
  std::optional<std::uint32_t> rejoin;     // wait for this peer's reset and successor
  std::uint64_t stuck_send = 0;            // send one message this big instead, and block
  std::uint32_t sessions = 1;              // Sessions one after the other on the one device
  std::optional<std::uint32_t> echo_with;  // an echoing peer to check on channel "echo"
  // (peer, leads): whom to ping-pong with, in order; empty: follow the only peer.
  std::vector<std::pair<std::uint32_t, bool>> pairs;
};

// Thrown on the first thing that goes wrong; main() prints it as the result.
struct Failure {
  std::string reason;
};

struct Counters {
  std::uint64_t received = 0;
  std::uint64_t sent = 0;
  std::uint64_t bytes_received = 0;
  std::uint64_t bytes_sent = 0;
  std::uint64_t blocked = 0;  // receives that found nothing and slept
};

class PingPong {
 public:
  PingPong(WaitableDevice& device, Channel& channel, std::size_t max_record,
           std::chrono::milliseconds timeout)
      : device_(device), channel_(channel), max_record_(max_record), timeout_(timeout) {}

  void receive(Phase phase, Kind kind, std::uint32_t round) {
    Message message = channel_.try_receive();
    if (!message && message.error() == MessageErrc::would_block) {
      ++counters_.blocked;
      message = channel_.receive(timeout_);
    }
    if (!message) {
      throw Failure{"receiving " + std::string(kind == Kind::ping ? "ping " : "pong ") +
                    std::to_string(round) + ": " + message.error().message()};
    }
    const std::string mismatch =
        cellink::guest_test::check_message(message.payload(), phase, kind, round, max_record_);
    if (!mismatch.empty()) throw Failure{"wrong message: " + mismatch};
    ++counters_.received;
    counters_.bytes_received += message.size();
  }

  // Sends once the host sleeps in its receive, so its doorbell wakes it.
  void send(Phase phase, Kind kind, std::uint32_t round) {
    if (!cellink::guest_test::await_receiver_armed(device_, channel_.peer(), timeout_)) {
      throw Failure{"the host never waited for round " + std::to_string(round)};
    }
    const auto bytes = cellink::guest_test::make_message(phase, kind, round, max_record_);
    if (const std::error_code error = channel_.send(bytes, timeout_)) {
      throw Failure{"sending " + std::string(kind == Kind::ping ? "ping " : "pong ") +
                    std::to_string(round) + ": " + error.message()};
    }
    ++counters_.sent;
    counters_.bytes_sent += bytes.size();
  }

  [[nodiscard]] const Counters& counters() const { return counters_; }

  // The rounds of one pair: host first, then guest first. A leader plays
  // the host's part. With `hold`, stops after host first and sleeps until
  // the test kills QEMU (the Session's progress thread keeps running).
  void play(std::uint32_t rounds, bool leads, const std::string& with, bool hold) {
    for (std::uint32_t round = 0; round < rounds; ++round) {
      if (leads) {
        send(Phase::host_first, Kind::ping, round);
        receive(Phase::host_first, Kind::pong, round);
      } else {
        receive(Phase::host_first, Kind::ping, round);
        send(Phase::host_first, Kind::pong, round);
      }
    }
    say("host first" + with + ": " + std::to_string(rounds) +
        (leads ? " pings sent, pongs received" : " pings received, pongs sent"));
    if (hold) {
      say("holding after host first: " + std::to_string(counters_.received) + " received, " +
          std::to_string(counters_.sent) + " sent");
      for (;;) ::pause();
    }
    for (std::uint32_t round = 0; round < rounds; ++round) {
      if (leads) {
        receive(Phase::guest_first, Kind::ping, round);
        send(Phase::guest_first, Kind::pong, round);
      } else {
        send(Phase::guest_first, Kind::ping, round);
        receive(Phase::guest_first, Kind::pong, round);
      }
    }
    say("guest first" + with + ": " + std::to_string(rounds) +
        (leads ? " pings received, pongs sent" : " pings sent, pongs received"));
  }

  void add_to(Counters& total) const {
    total.received += counters_.received;
    total.sent += counters_.sent;
    total.bytes_received += counters_.bytes_received;
    total.bytes_sent += counters_.bytes_sent;
    total.blocked += counters_.blocked;
  }

 private:
  WaitableDevice& device_;
  Channel& channel_;
  std::size_t max_record_;
  std::chrono::milliseconds timeout_;
  Counters counters_;
};

std::optional<Options> parse_options(int argc, char** argv) {
  Options options;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg(argv[i]);
    if (const auto rounds = parse_option(arg, "--rounds="); rounds && *rounds > 0) {
      options.rounds = static_cast<std::uint32_t>(*rounds);
    } else if (const auto ms = parse_option(arg, "--timeout-ms="); ms && *ms > 0) {
      options.timeout = std::chrono::milliseconds{*ms};
    } else if (const auto peer = parse_option(arg, "--follow="); peer) {
      options.pairs.emplace_back(static_cast<std::uint32_t>(*peer), false);
    } else if (const auto led = parse_option(arg, "--lead="); led) {
      options.pairs.emplace_back(static_cast<std::uint32_t>(*led), true);
    } else if (arg == "--backend=uio") {
      options.backend = Backend::uio;
    } else if (arg == "--backend=vfio") {
      options.backend = Backend::vfio;
    } else if (arg == "--backend=sysfs") {
      options.backend = Backend::sysfs;
    } else if (arg == "--backend=auto") {
      options.backend = Backend::automatic;
    } else if (const auto count = parse_option(arg, "--sessions="); count && *count > 0) {
      options.sessions = static_cast<std::uint32_t>(*count);
    } else if (const auto bytes = parse_option(arg, "--stuck-send="); bytes && *bytes > 0) {
      options.stuck_send = *bytes;
    } else if (const auto rejoin = parse_option(arg, "--rejoin="); rejoin) {
      options.rejoin = static_cast<std::uint32_t>(*rejoin);
    } else if (const auto echo = parse_option(arg, "--echo-with="); echo) {
      options.echo_with = static_cast<std::uint32_t>(*echo);
    } else if (arg == "--hold") {
      options.hold = true;
    } else {
      return std::nullopt;
    }
  }
  return options;
}

// Message i of the echo exchange: 100 or 20 000 bytes (fragmented on the
// test links), every byte a function of i and its offset.
std::vector<std::byte> echo_message(std::uint32_t index) {
  std::vector<std::byte> bytes(index % 2 == 0 ? 100 : 20000);
  for (std::size_t i = 0; i < bytes.size(); ++i) {
    bytes[i] = static_cast<std::byte>((index * 131 + i * 7) & 0xff);
  }
  return bytes;
}

// Sends `rounds` messages on channel "echo" toward `peer` and checks that
// each comes back unchanged.
void check_echoes(Session& session, std::uint32_t peer, std::uint32_t rounds,
                  std::chrono::milliseconds timeout, Counters& counters) {
  Channel echo = session.open("echo", peer);
  if (const std::error_code waited = session.wait_for_peer(peer, timeout)) {
    throw Failure{"echo peer " + std::to_string(peer) + " never ran: " + waited.message()};
  }
  if (const std::error_code waited = echo.wait_connected(timeout)) {
    throw Failure{"echo peer " + std::to_string(peer) +
                  " never opened channel echo: " + waited.message()};
  }
  for (std::uint32_t i = 0; i < rounds; ++i) {
    const std::vector<std::byte> sent = echo_message(i);
    if (const std::error_code error = echo.send(sent, timeout)) {
      throw Failure{"echo " + std::to_string(i) + " to peer " + std::to_string(peer) + ": " +
                    error.message()};
    }
    const Message back = echo.receive(timeout);
    if (!back) {
      throw Failure{"echo " + std::to_string(i) + " from peer " + std::to_string(peer) + ": " +
                    back.error().message()};
    }
    if (back.size() != sent.size() ||
        !std::equal(sent.begin(), sent.end(), back.payload().begin())) {
      throw Failure{"echo " + std::to_string(i) + " from peer " + std::to_string(peer) +
                    " differs from what was sent (" + std::to_string(back.size()) +
                    " bytes, sent " + std::to_string(sent.size()) + ")"};
    }
    ++counters.sent;
    ++counters.received;
    counters.bytes_sent += sent.size();
    counters.bytes_received += back.size();
  }
  say("echo with peer " + std::to_string(peer) + ": " + std::to_string(rounds) +
      " messages checked");
}

// Receives until the peer's reset shows; its channel close may come first.
std::chrono::milliseconds await_reset(Channel& channel, std::chrono::milliseconds timeout) {
  const Clock::time_point start = Clock::now();
  for (;;) {
    const Message message = channel.receive(timeout);
    if (message) throw Failure{"a message arrived after the last round"};
    if (message.error() == MessageErrc::peer_reset) break;
    if (message.error() != MessageErrc::channel_closed) {
      throw Failure{"waiting for peer " + std::to_string(channel.peer()) +
                    " to leave: " + message.error().message()};
    }
  }
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start);
}

std::string describe(const WaitableDevice& device, const std::string& link) {
  return "link '" + link + "', peer " + std::to_string(device.id()) + " of " +
         std::to_string(device.peer_count()) + ", " + std::to_string(device.vector_count()) +
         " vectors";
}

std::unique_ptr<WaitableDevice> open_device(Backend backend) {
  std::error_code error;
  std::string detail;
  if (backend == Backend::automatic) {
    OpenedIvshmemDevice opened;
    try {
      opened = cellink::linux_uio::open_ivshmem_device();
    } catch (const std::system_error& failure) {
      throw Failure{std::string("open_ivshmem_device: ") + failure.what()};
    }
    say("auto: " + opened.description);
    say(std::string("auto chose ") + cellink::linux_uio::backend_name(opened.backend) + ": " +
        describe(*opened.device, opened.link_name));
    return std::move(opened.device);
  }
  if (backend == Backend::sysfs) {
    std::unique_ptr<SysfsDevice> sysfs = SysfsDevice::open({}, error, detail);
    if (!sysfs) throw Failure{"SysfsDevice::open: " + detail};
    say("sysfs " + sysfs->pci_address() + ": " + describe(*sysfs, sysfs->link_name()) + "; " +
        sysfs->description());
    return sysfs;
  }
  if (backend == Backend::vfio) {
    std::unique_ptr<VfioDevice> vfio = VfioDevice::open({}, error, detail);
    if (!vfio) throw Failure{"VfioDevice::open: " + detail};
    say("vfio " + vfio->pci_address() + ": IOMMU group " + std::to_string(vfio->iommu_group()) +
        ", registers " + (vfio->registers_mapped() ? "mapped" : "through pread/pwrite") + ", " +
        describe(*vfio, vfio->link_name()));
    return vfio;
  }
  std::unique_ptr<UioDevice> uio = UioDevice::open({}, error, detail);
  if (!uio) throw Failure{"UioDevice::open: " + detail};
  say(uio->uio_name() + ": ivshmem " + cellink::linux_uio::version_name(uio->version()) + ", " +
      describe(*uio, uio->link_name()));
  return uio;
}

// What the result line reports of the device's interrupts: (interrupts,
// wait()s an interrupt ended). The sysfs backend has none: it polls, and a
// line before the result says how often.
std::pair<std::uint64_t, std::uint64_t> interrupts_and_wakeups(const WaitableDevice& device) {
  if (const auto* uio = dynamic_cast<const UioDevice*>(&device)) {
    return {uio->stats().interrupts, uio->stats().interrupt_wakeups};
  }
  if (const auto* vfio = dynamic_cast<const VfioDevice*>(&device)) {
    return {vfio->stats().interrupts, vfio->stats().interrupt_wakeups};
  }
  if (const auto* sysfs = dynamic_cast<const SysfsDevice*>(&device)) {
    say("sysfs polling: polls=" + std::to_string(sysfs->stats().polls) +
        " poll-wakeups=" + std::to_string(sysfs->stats().poll_wakeups));
  }
  return {0, 0};
}

int run(const Options& options) {
  std::unique_ptr<WaitableDevice> opened;
  try {
    opened = open_device(options.backend);
  } catch (const Failure& failure) {
    return fail(failure.reason);
  }
  WaitableDevice* const device = opened.get();

  Counters counters;
  std::chrono::milliseconds host_left_after{0};
  for (std::uint32_t incarnation = 1; incarnation <= options.sessions; ++incarnation) {
    // spin_budget 0: every receive that finds nothing sleeps on the device.
    Session session(*device, {.spin_budget = std::chrono::nanoseconds{0}});
    std::vector<std::pair<std::uint32_t, bool>> pairs = options.pairs;
    if (pairs.empty()) pairs.emplace_back(session.only_peer(), false);
    std::vector<Channel> channels;
    channels.reserve(pairs.size());
    for (const auto& pair : pairs) {
      channels.push_back(session.open(cellink::guest_test::kChannelName, pair.first));
    }
    for (std::size_t i = 0; i < pairs.size(); ++i) {
      const std::uint32_t peer = pairs[i].first;
      if (const std::error_code waited = session.wait_for_peer(peer, options.timeout)) {
        return fail("peer " + std::to_string(peer) + " never ran: " + waited.message());
      }
      if (const std::error_code waited = channels[i].wait_connected(options.timeout)) {
        return fail("peer " + std::to_string(peer) +
                    " never opened the channel: " + waited.message());
      }
      say("session epoch " + std::to_string(session.epoch()) + " running with peer " +
          std::to_string(peer) + ", channel connected, " +
          std::to_string(session.max_record_payload()) + " bytes per record");
    }

    if (options.stuck_send > 0) {
      say("sending " + std::to_string(options.stuck_send) + "-byte message");
      const std::vector<std::byte> big(options.stuck_send, std::byte{0x5a});
      const std::error_code sent = channels[0].send(big, options.timeout);
      return fail("the send that should block until QEMU is killed returned: " +
                  (sent ? sent.message() : std::string("ok")));
    }
    const auto with = [&](std::uint32_t peer) {
      return pairs.size() > 1 ? " with peer " + std::to_string(peer) : std::string();
    };
    try {
      for (std::size_t i = 0; i < pairs.size(); ++i) {
        PingPong ping_pong(*device, channels[i], session.max_record_payload(), options.timeout);
        ping_pong.play(options.rounds, pairs[i].second, with(pairs[i].first), options.hold);
        ping_pong.add_to(counters);
      }
      if (incarnation < options.sessions) {
        // Leave: the Session's destructor publishes RESET; the next
        // iteration joins again on the same device, in a new epoch.
        say("leaving: session epoch " + std::to_string(session.epoch()) + " ends, " +
            std::to_string(options.sessions - incarnation) + " more to come");
        continue;
      }
      if (options.rejoin) {
        const std::uint32_t peer = *options.rejoin;
        std::size_t i = 0;
        while (i < pairs.size() && pairs[i].first != peer) ++i;
        if (i == pairs.size()) throw Failure{"--rejoin names a peer without a pair"};
        const std::chrono::milliseconds reset_after = await_reset(channels[i], options.timeout);
        say("peer " + std::to_string(peer) + " reset seen after " +
            std::to_string(reset_after.count()) + " ms");
        // A reset is reported once to each direction (docs/link.md section 4):
        // the next send fails with it too, and sends nothing.
        if (channels[i].send("after the reset", cellink::linux_uio::kNoWait) !=
            MessageErrc::peer_reset) {
          throw Failure{"a send after peer " + std::to_string(peer) + "'s reset did not report it"};
        }
        if (const std::error_code waited = session.wait_for_peer(peer, options.timeout)) {
          throw Failure{"peer " + std::to_string(peer) +
                        "'s successor never ran: " + waited.message()};
        }
        if (const std::error_code waited = channels[i].wait_connected(options.timeout)) {
          throw Failure{"the channel never reconnected to peer " + std::to_string(peer) + ": " +
                        waited.message()};
        }
        say("peer " + std::to_string(peer) + " rejoined, channel reconnected");
        PingPong again(*device, channels[i], session.max_record_payload(), options.timeout);
        again.play(options.rounds, pairs[i].second, with(peer) + " (rejoined)", false);
        again.add_to(counters);
      }
      if (options.echo_with) {
        check_echoes(session, *options.echo_with, options.rounds, options.timeout, counters);
      }
      for (std::size_t i = 0; i < pairs.size(); ++i) {
        if (pairs[i].first == 0) host_left_after = await_reset(channels[i], options.timeout);
      }
    } catch (const Failure& failure) {
      return fail(failure.reason);
    }
  }
  const auto [interrupts, wakeups] = interrupts_and_wakeups(*device);
  std::printf("CELLINK-GUEST-RESULT: ok channel rounds=%" PRIu32 " received=%" PRIu64
              " sent=%" PRIu64 " bytes-received=%" PRIu64 " bytes-sent=%" PRIu64
              " blocked-receives=%" PRIu64 " interrupts=%" PRIu64 " interrupt-wakeups=%" PRIu64
              " host-left-after-ms=%lld\n",
              options.rounds, counters.received, counters.sent, counters.bytes_received,
              counters.bytes_sent, counters.blocked, interrupts, wakeups,
              static_cast<long long>(host_left_after.count()));
  std::fflush(stdout);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::optional<Options> options = parse_options(argc, argv);
  if (!options)
    return fail(
        "usage: guest_channel [--backend=uio|vfio|sysfs|auto] [--rounds=N] [--timeout-ms=MS] "
        "[--hold] "
        "[--follow=P|--lead=P]...");
  try {
    return run(*options);
  } catch (const std::exception& failure) {
    return fail(failure.what());
  }
}
