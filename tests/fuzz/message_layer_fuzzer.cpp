// Fuzzer: a hostile peer against the message layer (Session, Channel,
// read_capnp). docs/link.md; issue "message layer", must-show 4.
//
// Proves: a peer that hand-shakes properly and then writes anything into its
// ring toward us - garbage and half-valid control records, bogus fragment
// sequences, records for channels nobody opened, oversized or malformed
// Cap'n Proto messages, restarts at any moment, raw corruption of its own
// ring - makes the Session report errors and never crash (ASan, UBSan), never
// hang (every call is non-blocking and each input is bounded) and never grow
// without bound (reassembly is capped by max_message_size, queues by
// max_queued_per_channel; libFuzzer's -rss_limit_mb enforces it).
//
// Input: a script of operations, one byte each plus operands (see run()).
// Peer 0 is the Session under test; peer 1 is a raw transports::Link driven
// by the script, on an in-process LoopbackLink.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>
#include <vector>

#include "cellink/linux-uio/capnp_message.hpp"
#include "cellink/linux-uio/loopback_device.hpp"
#include "cellink/linux-uio/session.hpp"
#include "cellink/transports/channel_control.hpp"
#include "cellink/transports/link.hpp"
#include "telemetry/telemetry.capnp.h"

namespace {

using cellink::examples::telemetry::Sample;
using namespace cellink::linux_uio;
namespace transports = cellink::transports;

constexpr std::size_t kMaxMessage = 4096;
constexpr std::uint32_t kVictim = 0;
constexpr std::uint32_t kHostile = 1;

class Script {
 public:
  explicit Script(std::span<const std::uint8_t> bytes) : bytes_(bytes) {}
  [[nodiscard]] bool done() const { return at_ >= bytes_.size(); }
  std::uint8_t u8() { return done() ? 0 : bytes_[at_++]; }
  std::uint16_t u16() { return static_cast<std::uint16_t>(u8() | (u8() << 8)); }
  // `size` bytes of payload: the script's next bytes, repeated as needed.
  std::vector<std::byte> payload(std::size_t size) {
    std::vector<std::byte> out(size);
    const std::size_t left = bytes_.size() - std::min(at_, bytes_.size());
    for (std::size_t i = 0; i < size; ++i) {
      out[i] = left == 0 ? std::byte{0} : std::byte{bytes_[at_ + i % left]};
    }
    at_ += std::min(size, left);
    return out;
  }

 private:
  std::span<const std::uint8_t> bytes_;
  std::size_t at_ = 0;
};

// The hostile cell: a correct handshake, then whatever the script says.
class HostilePeer {
 public:
  explicit HostilePeer(LoopbackDevice& device) : device_(device) {}

  void start() {
    if (link_.init(device_) != transports::LinkInitStatus::ok) std::abort();
  }

  void poll() {
    link_.poll([](const transports::LinkEvent&) {});
    if (link_.state(kVictim) == transports::PairState::draining) link_.finish_drain(kVictim);
    if (!link_.readable(kVictim)) return;
    // Consume whatever the victim sent, so its sends do not stall.
    auto& consumer = link_.consumer(kVictim);
    transports::Record record;
    while (consumer.peek(record) == transports::ConsumeStatus::ok) {
      (void)consumer.release(record);
    }
  }

  [[nodiscard]] bool running() const { return link_.running(kVictim); }

  void write(std::uint16_t channel, std::uint16_t flags, std::span<const std::byte> payload) {
    if (!running()) return;
    transports::RingProducer& producer = link_.producer(kVictim);
    const std::size_t size = std::min<std::size_t>(payload.size(), producer.max_payload_size());
    transports::RingProducer::Reservation reservation;
    if (producer.reserve(static_cast<std::uint32_t>(size), channel, reservation) !=
        transports::ProduceStatus::ok) {
      return;  // full or broken: a hostile peer just carries on
    }
    std::copy_n(payload.data(), size, reservation.payload.data());
    (void)producer.commit(reservation, static_cast<std::uint32_t>(size), flags);
    (void)link_.publish(kVictim);
  }

  // Flips one byte of its own ring toward the victim (header, index or data).
  void corrupt(std::size_t offset, std::uint8_t value) {
    const std::span<std::byte> own = device_.own_output_section();
    const std::uint64_t ring = link_.geometry().ring_slot_offset(kHostile, kVictim);
    const std::uint64_t span = link_.geometry().ring_slot_size();
    own[ring + offset % span] = std::byte{value};
  }

 private:
  LoopbackDevice& device_;
  transports::Link<64> link_;
};

void settle(Session& victim, HostilePeer& peer) {
  for (int round = 0; round < 50 && !(victim.peer_running(kHostile) && peer.running()); ++round) {
    peer.poll();
    (void)victim.process_events();
  }
}

void read_typed(Message message) {
  CapnpReadOptions options;
  options.traversal_limit_words = 2048;
  options.nesting_limit = 8;
  CapnpMessage<Sample> sample = read_capnp<Sample>(std::move(message), options);
  if (!sample) return;
  // Validated: every accessor must work (the peer is not writing meanwhile).
  const Sample::Reader root = sample.root();
  std::size_t total = root.getCell().size() + root.getTemperatures().size();
  for (const Sample::Reader part : root.getComponents()) total += part.getCell().size();
  if (total == ~std::size_t{0}) std::abort();
}

void run(Script& script) {
  LoopbackLink loopback(2, std::uint64_t{64} * 1024, 2);
  SessionOptions options;
  options.max_message_size = kMaxMessage;
  options.spin_budget = std::chrono::nanoseconds{0};
  options.credit_window = 512;  // small: the hostile peer reaches it, and past it
  options.drain_timeout = std::chrono::milliseconds{0};
  Session victim(loopback.device(kVictim), options);
  Channel channels[2] = {victim.open("a", kHostile), victim.open("b", kHostile)};
  HostilePeer peer(loopback.device(kHostile));
  peer.start();
  settle(victim, peer);
  if (!victim.peer_running(kHostile)) std::abort();  // the harness itself must hand-shake

  std::vector<Message> held;
  for (int steps = 0; steps < 256 && !script.done(); ++steps) {
    const std::uint8_t op = script.u8();
    Channel& channel = channels[op >> 7];
    switch (op % 9) {
      case 0: {  // a control record of any length and content
        const std::vector<std::byte> bytes = script.payload(script.u8());
        peer.write(transports::kControlChannel, 0, bytes);
        break;
      }
      case 1: {  // a well-formed open or close, then one byte mutated (or not)
        static constexpr const char* kNames[] = {"a", "b", "c", "a "};
        const char* name = kNames[script.u8() % 4];
        transports::ControlMessage message;
        const auto type =
            (script.u8() & 1) != 0 ? transports::ControlType::close : transports::ControlType::open;
        const std::uint16_t id = script.u8();
        if (!transports::encode_control(type, id == 0 ? 1 : id, name, __builtin_strlen(name),
                                        script.u16(), 64 + script.u16(), message)) {
          break;
        }
        auto bytes = std::as_writable_bytes(std::span{&message, 1});
        const std::uint8_t at = script.u8();
        if (at < bytes.size()) bytes[at] = std::byte{script.u8()};
        peer.write(transports::kControlChannel, 0, bytes);
        break;
      }
      case 2: {  // a data record or fragment for channel id 0..3
        const auto id = static_cast<std::uint16_t>(script.u8() % 4);
        const auto flags =
            (script.u8() & 1) != 0 ? transports::kRecordMoreFragments : std::uint16_t{0};
        const std::vector<std::byte> bytes = script.payload(script.u16() % 20000);
        peer.write(id, flags, bytes);
        break;
      }
      case 3: {  // receive, and keep a few messages held zero-copy
        Message message = channel.try_receive();
        if (message && held.size() < 16 && (script.u8() & 1) != 0) {
          held.push_back(std::move(message));
        }
        break;
      }
      case 4:  // receive as Cap'n Proto
        read_typed(channel.try_receive());
        break;
      case 5: {  // the victim sends (its ring toward the peer fills or not)
        const std::vector<std::byte> bytes = script.payload(script.u16() % 40000);
        (void)channel.send(bytes, kNoWait);
        break;
      }
      case 6:  // the peer restarts: a new incarnation and handshake
        peer.start();
        settle(victim, peer);
        break;
      case 7:  // the peer corrupts its own ring
        peer.corrupt(script.u16(), script.u8());
        break;
      default: held.clear(); break;
    }
    peer.poll();
    (void)victim.process_events();
  }
  held.clear();
  for (int round = 0; round < 64; ++round) {
    for (Channel& channel : channels) read_typed(channel.try_receive());
    peer.poll();
    (void)victim.process_events();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  Script script({data, size});
  run(script);
  return 0;
}
