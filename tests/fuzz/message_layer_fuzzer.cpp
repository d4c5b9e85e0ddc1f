// Fuzzer: a hostile peer against the message layer (Session, Channel,
// read_capnp) and the channel core under it (channel_core.hpp: names,
// fragments, credits). docs/link.md; issue "message layer", must-show 4.
//
// Proves: a peer that hand-shakes properly and then writes anything into its
// own memory - garbage and half-valid control records (opens with any
// credit_window, a name announced twice under two ids, two names under one
// id, closes and aborts for unknown names or ids, floods of more than 255
// names), records for channels it never announced or nobody opened, records
// beyond the credit window it was granted, fragment sequences that overflow
// the reassembly, oversized or malformed Cap'n Proto messages, lies in its
// own credit table about the records we sent it (going backwards, beyond
// what was sent), any value in its space_wanted word (the request for a
// space-freed doorbell, in its consumer area's WakeLine), restarts at any
// moment, raw corruption of its own ring - makes the Session report errors
// and never crash (ASan, UBSan), never hang (every call is non-blocking and
// each input is bounded) and never grow without bound (reassembly is capped
// by max_message_size, queues by the credit window; libFuzzer's
// -rss_limit_mb enforces it).
//
// And, checked after every step (abort() on a violation, so libFuzzer
// reports it), as long as the peer has not corrupted its ring in the current
// session (a broken ring breaks the whole pair; nothing else may):
//   - every received Message is an error code or a whole message no larger
//     than max_message_size, viewed inside the peer's ring or in a copy. The
//     peer's well-formed messages (a tagged header: magic, sequence, size,
//     channel, checksum) arrive intact, on the channel they were sent to, and
//     each at most once, in order (sequence numbers strictly increase per
//     channel);
//   - protocol_faults > 0 exactly when Session::diagnostic() is non-empty;
//     the diagnostic names a field and, latched, never changes;
//   - a step in which the peer only followed the rules (announced names,
//     within the window, within max_message_size, truthful credits, restarts)
//     adds no protocol fault, and control_errors grows by exactly the number
//     of control records the rules reject (a model of the name table);
//   - a channel is connected exactly when the model says the peer announced
//     its name (and has not closed it) in the current session;
//   - as a sender the Session respects the peer's window and sends only to
//     ids the peer announced; its credit table for the peer never goes
//     backwards nor past what the peer sent, and, once everything was
//     received and released, has given back every byte; a truthful credit
//     table never makes a send fail;
//   - space-freed doorbells are rung at most once per change of the peer's
//     space_wanted (plus one per restart);
//   - at the end, after the faults, both channels still work both ways: a
//     well-formed message within the window reaches the Session, and a
//     message the Session sends reaches the peer.
//
// Input: a script of commands (commands.hpp, PeerCommand), one byte each
// plus operands (see Harness::step()). Peer 0 is the Session under test
// (single-threaded: deterministic); peer 1 is a raw transports::Link driven
// by the script, on an in-process LoopbackLink. Seeds: make_seeds.cpp
// (message_layer_seeds()).
//
// Environment: MESSAGE_LAYER_FUZZER_TRACE=1 prints each command and what the
// Session says after it. MESSAGE_LAYER_FUZZER_STRICT=1 also checks the one
// known limit (a held zero-copy Message stalls the pair after MaxHeld
// records; see strict()'s callers); by default the harness steers around it
// so that ctest passes and the fuzzer looks for new faults.
#include <algorithm>
#include <atomic>
#include <bitset>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "cellink/linux-uio/capnp_message.hpp"
#include "cellink/linux-uio/loopback_device.hpp"
#include "cellink/linux-uio/session.hpp"
#include "cellink/transports/channel_control.hpp"
#include "cellink/transports/channel_credit.hpp"
#include "cellink/transports/link.hpp"
#include "commands.hpp"
#include "telemetry/telemetry.capnp.h"

namespace {

using cellink::examples::telemetry::Sample;
using namespace cellink::linux_uio;
namespace transports = cellink::transports;
using cellink::fuzz::PeerCommand;
using transports::ControlMessage;
using transports::ControlType;

constexpr std::size_t kMaxMessage = 4096;  // the victim's max_message_size
constexpr std::uint32_t kWindow = 512;     // the victim's credit_window
constexpr std::uint32_t kVictim = 0;
constexpr std::uint32_t kHostile = 1;
constexpr std::size_t kIds = transports::kCreditEntries;  // channel ids 0..255
constexpr const char* kChannelNames[2] = {"a", "b"};
constexpr int kMaxSteps = 256;
constexpr int kMaxFloods = 1;  // each costs the victim about a millisecond

// Prints why and aborts, so that libFuzzer keeps the input.
[[noreturn]] void fail(const char* what, long long a = 0, long long b = 0) {
  std::fprintf(stderr, "message_layer_fuzzer: invariant violated: %s (%lld, %lld)\n", what, a, b);
  std::abort();
}
// Checks of a known limit are on only with MESSAGE_LAYER_FUZZER_STRICT=1 in
// the environment, so that ctest passes meanwhile and the fuzzer looks for
// new faults (see strict()'s callers).
bool strict() {
  static const bool on = [] {
    const char* value = std::getenv("MESSAGE_LAYER_FUZZER_STRICT");
    return value != nullptr && value[0] == '1';
  }();
  return on;
}

// MESSAGE_LAYER_FUZZER_TRACE=1: prints each command and what the Session
// says after it (to read a crashing input).
bool tracing() {
  static const bool on = [] {
    const char* value = std::getenv("MESSAGE_LAYER_FUZZER_TRACE");
    return value != nullptr && value[0] == '1';
  }();
  return on;
}

#define CHECK(condition, ...)                                      \
  do {                                                             \
    if (!(condition)) fail(#condition __VA_OPT__(, ) __VA_ARGS__); \
  } while (false)

class Script {
 public:
  explicit Script(std::span<const std::uint8_t> bytes) : bytes_(bytes) {}
  [[nodiscard]] bool done() const { return at_ >= bytes_.size(); }
  std::uint8_t u8() { return done() ? 0 : bytes_[at_++]; }
  std::uint16_t u16() { return static_cast<std::uint16_t>(u8() | (u8() << 8)); }
  std::uint32_t u32() { return u16() | (std::uint32_t{u16()} << 16); }
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
  // `size` bytes that cost the script one byte: bulk payloads whose
  // content does not matter would otherwise eat the script.
  std::vector<std::byte> pattern(std::size_t size) {
    const std::uint8_t seed = u8();
    std::vector<std::byte> out(size);
    for (std::size_t i = 0; i < size; ++i) out[i] = std::byte(seed + (i * 7) + (i >> 8));
    return out;
  }

 private:
  std::span<const std::uint8_t> bytes_;
  std::size_t at_ = 0;
};

// ---- the peer's well-formed messages ------------------------------------------
//
// A tagged message starts with this header and nothing else the peer sends
// starts with its first byte (kTagByte): raw records and tagged bodies are
// scrubbed of it. So a received message that starts with kTagByte began
// with a tagged record, and its checksum says whether it is whole.

constexpr std::uint8_t kTagByte = 0xa5;
constexpr std::uint32_t kTagMagic = 0x4c5447a5;  // little-endian: a5 47 54 4c

struct TagHeader {
  std::uint32_t magic;
  std::uint32_t sequence;
  std::uint32_t size;     // the whole message, header included
  std::uint32_t channel;  // 0: "a", 1: "b"
  std::uint64_t check;
};
static_assert(sizeof(TagHeader) == 24);

std::uint64_t tag_check(const TagHeader& header, std::span<const std::byte> body) {
  std::uint64_t hash = 0xcbf29ce484222325ULL;
  const auto mix = [&](std::uint8_t byte) { hash = (hash ^ byte) * 0x100000001b3ULL; };
  for (const std::uint32_t word : {header.magic, header.sequence, header.size, header.channel}) {
    for (int i = 0; i < 4; ++i) mix(static_cast<std::uint8_t>(word >> (8 * i)));
  }
  for (const std::byte byte : body) mix(static_cast<std::uint8_t>(byte));
  return hash;
}

std::vector<std::byte> tagged_message(std::uint32_t sequence, std::uint32_t channel,
                                      std::vector<std::byte> body) {
  for (std::byte& byte : body) {
    if (byte == std::byte{kTagByte}) byte = std::byte{0x5a};
  }
  TagHeader header{kTagMagic, sequence, static_cast<std::uint32_t>(sizeof(TagHeader) + body.size()),
                   channel, 0};
  header.check = tag_check(header, body);
  std::vector<std::byte> bytes(sizeof header);
  std::memcpy(bytes.data(), &header, sizeof header);
  bytes.insert(bytes.end(), body.begin(), body.end());
  return bytes;
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

template <typename T>
T load(const T& field) {
  return std::atomic_ref<T>(const_cast<T&>(field)).load(std::memory_order_acquire);
}
template <typename T>
void store(T& field, T value) {
  std::atomic_ref<T>(field).store(value, std::memory_order_release);
}

// (next - last) mod 2^32 within (bound - last) mod 2^32: never backwards,
// never past `bound`; CreditGauge::refresh()'s rule.
bool credit_sane(std::uint32_t last, std::uint32_t next, std::uint32_t bound) {
  return next - last <= bound - last;
}

enum class Origin : std::uint8_t { raw, tagged_first, tagged_more };
enum class Pending : std::uint8_t { none, raw, tagged };

// The Session under test, the hostile peer, and the peer's model of what the
// Session must do.
class Harness {
 public:
  explicit Harness(Script& script)
      : script_(script),
        loopback_(2, std::uint64_t{64} * 1024, 2),
        victim_(loopback_.device(kVictim), victim_options()),
        hostile_device_(loopback_.device(kHostile)) {
    channels_[0] = victim_.open(kChannelNames[0], kHostile);
    channels_[1] = victim_.open(kChannelNames[1], kHostile);
    start();  // the harness itself must hand-shake
    poll();
    (void)victim_.process_events();
    poll();
    check_step();
  }

  void run() {
    for (int steps = 0; steps < kMaxSteps && !script_.done(); ++steps) step();
    finish();
  }

 private:
  struct Name {
    std::string name;
    std::uint16_t id = 0;
    std::uint32_t max_message_size = 0;
    std::uint32_t window = 0;
  };

  static SessionOptions victim_options() {
    SessionOptions options;
    options.max_message_size = kMaxMessage;
    options.spin_budget = std::chrono::nanoseconds{0};
    options.credit_window = kWindow;  // small: the hostile peer reaches it, and past it
    options.drain_timeout = std::chrono::milliseconds{0};
    options.threading = Threading::single;  // no progress thread: deterministic
    return options;
  }

  // ---- the hostile side's memory ---------------------------------------------

  [[nodiscard]] std::byte* own() { return hostile_device_.own_output_section().data(); }
  [[nodiscard]] transports::CreditTable& own_table() {
    return *reinterpret_cast<transports::CreditTable*>(
        own() + transports::LinkGeometry::credit_table_offset(kHostile, kVictim));
  }
  // Our request for a space-freed doorbell: in our consumer area of the
  // victim's ring toward us (ring_format.hpp, WakeLine).
  [[nodiscard]] std::uint32_t& own_space_wanted() {
    return reinterpret_cast<transports::ConsumerArea*>(
               own() + transports::LinkGeometry::consumer_area_offset(kVictim))
        ->wake_after.space_wanted;
  }
  // The victim's credit table for what we send it.
  [[nodiscard]] const transports::CreditTable& victim_table() {
    return *reinterpret_cast<const transports::CreditTable*>(
        hostile_device_.output_section(kVictim).data() +
        transports::LinkGeometry::credit_table_offset(kVictim, kHostile));
  }
  [[nodiscard]] bool running() const { return link_.running(kVictim); }
  [[nodiscard]] bool both_running() const { return running() && victim_.peer_running(kHostile); }
  // Whether the checks that trust the session hold: it runs and the peer
  // never corrupted its ring in it.
  [[nodiscard]] bool checkable() const { return !corrupted_ && both_running(); }

  // ---- session lifetime -------------------------------------------------------

  // A new incarnation of the hostile peer and a fresh model for it.
  void start() {
    if (link_.init(hostile_device_) != transports::LinkInitStatus::ok) std::abort();
    const bool was_corrupted = corrupted_;
    corrupted_ = false;
    names_.clear();
    ever_announced_.reset();
    for (std::size_t id = 0; id < kIds; ++id) {
      wmax_[id] = 0;
      sent_bytes_[id] = sent_messages_[id] = 0;
      seen_returned_[id] = seen_delivered_[id] = 0;
      pending_[id] = Pending::none;
      pending_bytes_[id] = 0;
      consumed_bytes_[id] = consumed_messages_[id] = 0;
      written_returned_[id] = written_delivered_[id] = 0;
      lied_[id] = false;
      last_from_victim_[id].clear();
    }
    any_lie_ = false;
    dirty_[0] = dirty_[1] = false;
    settle();
    // A session that comes up must come up: drain_timeout is 0.
    CHECK(both_running());
    if (was_corrupted) synced_ = false;
  }

  void settle() {
    for (int round = 0; round < 50 && !both_running(); ++round) {
      poll();
      (void)victim_.process_events();
    }
  }

  // ---- the hostile side's receiving --------------------------------------------

  // Advances the hostile side's handshake and consumes what the victim sent,
  // checking it as a receiver would.
  void poll() {
    link_.poll([](const transports::LinkEvent&) {});
    if (link_.state(kVictim) == transports::PairState::draining) link_.finish_drain(kVictim);
    if (!link_.readable(kVictim)) return;
    auto& consumer = link_.consumer(kVictim);
    transports::Record record;
    while (consumer.peek(record) == transports::ConsumeStatus::ok) {
      consume(record);
      (void)consumer.release(record);
    }
  }

  void consume(const transports::Record& record) {
    const bool trust = !corrupted_;  // the victim's ring is its own: only our lies matter
    if (record.channel == transports::kControlChannel) {
      ControlMessage message;
      const transports::ControlError error = transports::decode_control(record.payload, message);
      CHECK(error == transports::ControlError::none, static_cast<int>(error));
      if (message.type == static_cast<std::uint16_t>(ControlType::open)) {
        const std::string_view name(message.name, message.name_length);
        for (std::uint32_t c = 0; c < 2; ++c) {
          if (name == kChannelNames[c]) victim_id_[c] = message.channel;
        }
        CHECK(message.credit_window == kWindow, message.credit_window);
        CHECK(message.max_message_size == kMaxMessage, message.max_message_size);
      }
      return;
    }
    const std::uint16_t id = record.channel;
    CHECK(id < kIds, id);
    const auto stride =
        static_cast<std::uint32_t>(transports::record_stride(record.payload.size()));
    consumed_bytes_[id] += stride;
    if ((record.flags & transports::kRecordMoreFragments) == 0) ++consumed_messages_[id];
    last_from_victim_[id].assign(record.payload.begin(), record.payload.end());
    if (!trust || !running()) return;
    // The victim sends only to ids we announced in this session...
    CHECK(ever_announced_[id], id);
    // ...and never beyond the window we granted, as far as our table told it.
    if (!lied_[id]) {
      CHECK(consumed_bytes_[id] - written_returned_[id] <= wmax_[id], consumed_bytes_[id],
            written_returned_[id]);
    }
  }

  // ---- the model of the victim's name table for us ----------------------------

  [[nodiscard]] Name* find_name(std::string_view name) {
    for (Name& entry : names_) {
      if (entry.name == name) return &entry;
    }
    return nullptr;
  }
  [[nodiscard]] Name* find_id(std::uint16_t id) {
    for (Name& entry : names_) {
      if (entry.id == id) return &entry;
    }
    return nullptr;
  }
  [[nodiscard]] bool announced(std::uint32_t c) { return find_name(kChannelNames[c]) != nullptr; }
  // Which of the victim's channels local id `id` is (2: neither).
  [[nodiscard]] std::uint32_t victim_channel(std::uint16_t id) const {
    return id == victim_id_[0] ? 0 : id == victim_id_[1] ? 1 : 2;
  }
  [[nodiscard]] std::uint16_t free_id() {
    for (std::uint16_t id = 1; id <= transports::kMaxChannelId; ++id) {
      if (find_id(id) == nullptr) return id;
    }
    return 0;
  }
  void forget_partial(std::uint16_t id) {
    pending_[id] = Pending::none;
    pending_bytes_[id] = 0;
  }

  // What the victim does with a decoded control record: true when accepted
  // (ChannelCore::handle_control()'s rules).
  bool model_control(const ControlMessage& message) {
    const std::string name(message.name, message.name_length);
    if (message.type == static_cast<std::uint16_t>(ControlType::abort)) {
      const std::uint32_t c = victim_channel(message.channel);
      if (c == 2 || name != kChannelNames[c]) return false;
      forget_partial(message.channel);
      return true;
    }
    Name* remote = find_name(name);
    if (message.type == static_cast<std::uint16_t>(ControlType::open)) {
      Name* holder = find_id(message.channel);
      if ((remote != nullptr && remote->id != message.channel) ||
          (holder != nullptr && holder != remote)) {
        return false;
      }
      if (remote == nullptr) {
        if (names_.size() == transports::kMaxChannelId) return false;
        names_.push_back({name, message.channel, 0, 0});
        remote = &names_.back();
      }
      remote->max_message_size = message.max_message_size;
      remote->window = message.credit_window;
      ever_announced_[message.channel] = true;
      wmax_[message.channel] = std::max(wmax_[message.channel], message.credit_window);
      return true;
    }
    if (remote == nullptr || remote->id != message.channel) return false;
    names_.erase(names_.begin() + (remote - names_.data()));
    for (std::uint32_t c = 0; c < 2; ++c) {
      if (name == kChannelNames[c]) forget_partial(victim_id_[c]);
    }
    return true;
  }

  // ---- the hostile side's sending ----------------------------------------------

  [[nodiscard]] std::uint32_t victim_returned(std::uint16_t id) {
    return load(victim_table().entry[id].returned);
  }
  // Bytes on `id` the victim has not given back: its in_window is at most this.
  [[nodiscard]] std::uint32_t in_use(std::uint16_t id) {
    return sent_bytes_[id] - victim_returned(id);
  }

  // Writes one record into the ring toward the victim and keeps the model in
  // step. False when it did not fit (or the pair is down).
  bool put(std::uint16_t id, std::uint16_t flags, std::span<const std::byte> payload,
           Origin origin = Origin::raw) {
    if (!running()) return false;
    const bool more = (flags & transports::kRecordMoreFragments) != 0;
    // Known limit: a zero-copy Message we hold keeps the victim's consumer
    // from reading more than MaxHeld (256) records past it, and so stalls
    // every channel of the pair. Until that changes, what we hold is
    // dropped before we write that many records past it.
    if (!strict() && !held_.empty() && records_put_ - held_since_ >= 192) held_.clear();
    transports::RingProducer& producer = link_.producer(kVictim);
    const std::size_t size = std::min<std::size_t>(payload.size(), producer.max_payload_size());
    transports::RingProducer::Reservation reservation;
    if (producer.reserve(static_cast<std::uint32_t>(size), id, reservation) !=
        transports::ProduceStatus::ok) {
      return false;  // full or broken: a hostile peer just carries on
    }
    std::copy_n(payload.data(), size, reservation.payload.data());
    written_at_[ring_index(reservation.payload.data())] = records_put_++;
    if (origin == Origin::raw && id != transports::kControlChannel && size != 0 &&
        reservation.payload[0] == std::byte{kTagByte}) {
      reservation.payload[0] = std::byte{0x5a};  // only tagged messages start with it
    }
    account(id, more, reservation.payload.first(size), origin);
    (void)producer.commit(reservation, static_cast<std::uint32_t>(size), flags);
    (void)link_.publish(kVictim);
    return true;
  }

  void account(std::uint16_t id, bool more, std::span<const std::byte> bytes, Origin origin) {
    if (id == transports::kControlChannel) {
      unread_control_ = true;
      ControlMessage message;
      const bool accepted =
          transports::decode_control(bytes, message) == transports::ControlError::none &&
          model_control(message);
      if (!accepted) {
        ++expected_control_errors_;
        impolite_ = true;
      }
      return;
    }
    if (id >= kIds) return;  // unroutable: no fault, no credit
    const auto size = static_cast<std::uint32_t>(bytes.size());
    const auto stride = static_cast<std::uint32_t>(transports::record_stride(size));
    const std::uint32_t c = victim_channel(id);
    if (c != 2) {  // one of the victim's channels
      const bool polite = announced(c) && std::uint64_t{in_use(id)} + stride <= kWindow &&
                          std::uint64_t{pending_bytes_[id]} + size <= kMaxMessage;
      if (!polite) impolite_ = true;
      if (pending_[id] == Pending::tagged && origin != Origin::tagged_more) dirty_[c] = true;
      if (more) {
        if (pending_[id] == Pending::none) {
          pending_[id] = origin == Origin::raw ? Pending::raw : Pending::tagged;
        } else if (origin == Origin::raw) {
          pending_[id] = Pending::raw;
        }
        pending_bytes_[id] += size;
      } else {
        forget_partial(id);
      }
    }
    sent_bytes_[id] += stride;
    if (!more) ++sent_messages_[id];
  }

  bool put_control(ControlType type, std::uint16_t id, std::string_view name,
                   std::uint32_t max_message_size, std::uint32_t window) {
    ControlMessage message;
    if (!transports::encode_control(type, id, name.data(), name.size(), max_message_size, window,
                                    message)) {
      return false;
    }
    return put(transports::kControlChannel, 0, std::as_bytes(std::span{&message, 1}));
  }
  bool put_abort(std::uint32_t c) {
    return put_control(ControlType::abort, victim_id_[c], kChannelNames[c], 0, 0);
  }
  // Announces channel c's name under a free id, by the rules.
  bool announce(std::uint32_t c, std::uint16_t id, std::uint32_t max_message_size,
                std::uint32_t window) {
    if (announced(c)) return true;
    if (id == 0 || id > transports::kMaxChannelId || find_id(id) != nullptr) id = free_id();
    if (id == 0) {  // 255 names: withdraw one first
      const Name victim_of_the_flood = names_.front();
      if (!put_control(ControlType::close, victim_of_the_flood.id, victim_of_the_flood.name, 0,
                       0)) {
        return false;
      }
      id = victim_of_the_flood.id;
    }
    window = std::clamp(window, transports::kMinCreditWindow, transports::kMaxCreditWindow);
    return put_control(ControlType::open, id, kChannelNames[c], max_message_size, window);
  }

  // A well-formed message on channel c, by the rules: within the window (waiting
  // for the victim when `wait`), fragments within max_message_size, an abort
  // first if a partial message is pending and one if it gives up half way.
  bool send_tagged(std::uint32_t c, std::vector<std::byte> body, bool wait) {
    if (!announced(c) || !running()) return false;
    const std::uint16_t id = victim_id_[c];
    if (pending_[id] != Pending::none && !put_abort(c)) return false;
    body.resize(std::min(body.size(), kMaxMessage - sizeof(TagHeader)));
    const std::vector<std::byte> message = tagged_message(next_sequence_++, c, std::move(body));
    std::size_t offset = 0;
    while (offset < message.size()) {
      std::size_t piece = 0;
      for (int tries = 0;; ++tries) {
        if (!running()) return false;
        const std::uint32_t free = kWindow - std::min(kWindow, in_use(id));
        piece = free < 16 ? 0 : std::min<std::size_t>(message.size() - offset, (free & ~7U) - 8);
        if (piece != 0 && link_.producer(kVictim).has_room(static_cast<std::uint32_t>(piece))) {
          break;
        }
        if (!wait || tries == 8) {
          if (offset != 0) (void)put_abort(c);  // given up half way
          return false;
        }
        poll();
        (void)victim_.process_events();
      }
      const bool more = offset + piece < message.size();
      if (!put(id, more ? transports::kRecordMoreFragments : std::uint16_t{0},
               std::span{message}.subspan(offset, piece),
               offset == 0 ? Origin::tagged_first : Origin::tagged_more)) {
        if (offset != 0) (void)put_abort(c);
        return false;
      }
      offset += piece;
    }
    return true;
  }

  // Writes our credit table entry for the victim's sends on our id `id`.
  void write_credit(std::uint16_t id, std::uint32_t returned, std::uint32_t delivered) {
    if (!running()) return;
    if (!credit_sane(written_returned_[id], returned, consumed_bytes_[id]) ||
        !credit_sane(written_delivered_[id], delivered, consumed_messages_[id])) {
      lied_[id] = any_lie_ = true;
    }
    written_returned_[id] = returned;
    written_delivered_[id] = delivered;
    store(own_table().entry[id].returned, returned);
    store(own_table().entry[id].delivered, delivered);
  }

  // Where in our ring slot `at` is, in 8-byte units (0 outside it).
  [[nodiscard]] std::size_t ring_index(const std::byte* at) {
    const std::byte* slot = own() + link_.geometry().ring_slot_offset(kHostile, kVictim);
    if (at < slot || at >= slot + link_.geometry().ring_slot_size()) return 0;
    const auto index = static_cast<std::size_t>(at - slot) / 8;
    return index < written_at_.size() ? index : 0;
  }

  // ---- the victim's side ----------------------------------------------------

  // Checks one received Message (or error) of channel c.
  void check_received(std::uint32_t c, const Message& message) {
    if (tracing()) {
      std::fprintf(stderr, "   received on '%s': %s\n", kChannelNames[c],
                   message ? (std::to_string(message.size()) + " bytes").c_str()
                           : message.error().message().c_str());
    }
    if (!message) {
      const std::error_code error = message.error();
      CHECK(error == MessageErrc::would_block || error == MessageErrc::peer_reset ||
                error == MessageErrc::link_broken || error == MessageErrc::channel_closed ||
                error == MessageErrc::message_too_large ||
                // A record past the window, in a message's place.
                error == MessageErrc::channel_broken,
            error.value());
      return;
    }
    CHECK(message.size() <= kMaxMessage, message.size());
    const std::span<const std::byte> payload = message.payload();
    if (message.zero_copy()) {  // a view into the peer's ring toward us
      const std::byte* ring = hostile_device_.own_output_section().data() +
                              link_.geometry().ring_slot_offset(kHostile, kVictim);
      const std::byte* end = ring + link_.geometry().ring_slot_size();
      CHECK(payload.empty() || (payload.data() >= ring && payload.data() + payload.size() <= end));
    }
    if (corrupted_ || payload.empty() || payload[0] != std::byte{kTagByte}) return;
    std::vector<std::byte> copy(payload.begin(), payload.end());  // stable
    TagHeader header{};
    bool whole = copy.size() >= sizeof header;
    if (whole) {
      std::memcpy(&header, copy.data(), sizeof header);
      whole = header.magic == kTagMagic && header.size == copy.size() && header.channel < 2 &&
              header.check == tag_check(header, std::span{copy}.subspan(sizeof header));
    }
    if (!whole) {
      // Only a partial message the peer itself mixed may look like this.
      CHECK(dirty_[c], static_cast<long long>(c), static_cast<long long>(copy.size()));
      return;
    }
    CHECK(header.channel == c, header.channel, c);
    CHECK(header.sequence > last_sequence_[c], header.sequence, last_sequence_[c]);
    last_sequence_[c] = header.sequence;
  }

  void receive(std::uint32_t c, bool hold) {
    Message message = channels_[c].try_receive();
    check_received(c, message);
    if (message && hold && held_.size() < 16) {
      // The record a zero-copy message views was written at written_at_.
      const std::uint64_t at =
          message.zero_copy() ? written_at_[ring_index(message.payload().data())] : records_put_;
      if (!strict() && records_put_ - at >= 192) return;  // see put(): held_ would stall
      held_since_ = held_.empty() ? at : std::min(held_since_, at);
      held_.push_back(std::move(message));
    }
  }

  void receive_typed(std::uint32_t c) {
    Message message = channels_[c].try_receive();
    check_received(c, message);
    read_typed(std::move(message));
  }

  void victim_send(std::uint32_t c, std::size_t size) {
    const std::vector<std::byte> bytes = script_.pattern(size);
    const std::error_code error = channels_[c].send(bytes, kNoWait);
    if (tracing()) std::fprintf(stderr, "   send %zu: %s\n", size, error.message().c_str());
    if (any_lie_) impolite_ = true;  // a send may read a lie and report it
    if (!error) return;
    CHECK(error == MessageErrc::would_block || error == MessageErrc::not_connected ||
              error == MessageErrc::message_too_large || error == MessageErrc::peer_reset ||
              error == MessageErrc::channel_closed || error == MessageErrc::link_broken ||
              error == MessageErrc::channel_broken || error == MessageErrc::loan_in_progress,
          error.value());
    // A truthful credit table and an intact ring never fail a send.
    if ((error == MessageErrc::link_broken || error == MessageErrc::channel_broken) &&
        checkable()) {
      CHECK(any_lie_);
    }
  }

  // ---- checks after each step -------------------------------------------------

  void check_diagnostic() {
    const SessionStats stats = victim_.stats();
    const std::string diagnostic = victim_.diagnostic();
    CHECK((stats.protocol_faults > 0) == !diagnostic.empty(),
          static_cast<long long>(stats.protocol_faults));
    // Each space-freed doorbell answers a change of our space_wanted.
    CHECK(stats.space_doorbells <= space_writes_ + restarts_,
          static_cast<long long>(stats.space_doorbells), static_cast<long long>(space_writes_));
    if (diagnostic.empty()) return;
    if (first_diagnostic_.empty()) {
      first_diagnostic_ = diagnostic;
      static constexpr const char* kFields[] = {
          ": returned = ", ": delivered = ",        ": credit_window = ", ": channel = ",
          ": name = ",     ": max_message_size = ", ": control record "};
      bool named = false;
      for (const char* field : kFields)
        named = named || diagnostic.find(field) != std::string::npos;
      if (!named || diagnostic.find("peer 1") == std::string::npos) {
        std::fprintf(stderr, "diagnostic: %s\n", diagnostic.c_str());
        fail("the diagnostic names the peer and a field");
      }
    }
    // Latched: later faults are only counted, and change nothing of it.
    if (diagnostic != first_diagnostic_) {
      std::fprintf(stderr, "first diagnostic: %s\nnow: %s\n", first_diagnostic_.c_str(),
                   diagnostic.c_str());
      fail("the diagnostic is latched");
    }
  }

  // The victim's credit table for us: never backwards, never past what we sent.
  void check_victim_table() {
    const transports::CreditTable& table = victim_table();
    for (std::size_t id = 1; id < kIds; ++id) {
      const std::uint32_t returned = load(table.entry[id].returned);
      const std::uint32_t delivered = load(table.entry[id].delivered);
      CHECK(credit_sane(seen_returned_[id], returned, sent_bytes_[id]), returned, sent_bytes_[id]);
      CHECK(credit_sane(seen_delivered_[id], delivered, sent_messages_[id]), delivered,
            sent_messages_[id]);
      seen_returned_[id] = returned;
      seen_delivered_[id] = delivered;
    }
  }

  void check_step() {
    check_diagnostic();
    if (!checkable()) {
      synced_ = false;
      return;
    }
    const SessionStats stats = victim_.stats();
    if (!synced_) {
      synced_ = true;
      control_errors_base_ = stats.control_errors;
      expected_control_errors_ = 0;
      faults_base_ = stats.protocol_faults;
      impolite_ = false;
      return;
    }
    CHECK(victim_.pair_fault(kHostile).empty());
    CHECK(stats.control_errors == control_errors_base_ + expected_control_errors_,
          static_cast<long long>(stats.control_errors - control_errors_base_),
          static_cast<long long>(expected_control_errors_));
    if (!impolite_) {
      CHECK(stats.protocol_faults == faults_base_, static_cast<long long>(stats.protocol_faults),
            static_cast<long long>(faults_base_));
    }
    faults_base_ = stats.protocol_faults;
    impolite_ = false;
    for (std::uint32_t c = 0; c < 2; ++c) {
      CHECK(channels_[c].connected() == announced(c), static_cast<long long>(c));
    }
    check_victim_table();
  }

  // ---- the script -------------------------------------------------------------

  // One command (commands.hpp, PeerCommand): bits 0-3 the command, bit 7 the
  // channel c (a or b), bits 4-6 all set (kSkipEvents): the victim does not
  // process events afterwards (so the next command, a restart say, meets
  // records it has not read).
  // Operands (make_seeds.cpp writes them; "pattern" is one seed byte):
  //   0 raw control     u8 length, that many bytes
  //   1 crafted control u8 what (bits 0-2 name, 3-4 type: open, close, abort,
  //                     what >> 3; bit 7 allows id 0), u8 id, u8 fields (bits
  //                     0-2 window: u32, 63, 64, max, max + 1, 0, 64 + u16;
  //                     bit 6 max as u32, else u16; bit 7 fields on a close or
  //                     abort too), [max], [window], u8 at, [u8 value if at < 64]
  //   2 data record     u8 which (< 0x80 c's id by bit 0, < 0xc0 id 0..3,
  //                     < 0xff u8 id, else u16 id), u8 more (bit 0), u16 size,
  //                     that many bytes
  //   3 receive         u8 hold (bit 0)          4 receive Cap'n Proto
  //   5 victim sends    u16 size (bit 15: % 40000, else % 600), pattern
  //   6 restart         7 corrupt: u16 offset, u8 value      8 drop held
  //   9 tagged message  u16 size (bit 15: wait for credit; bit 14: % 4096,
  //                     else % 200), pattern
  //  10 past window     u8 count, u16 size, pattern
  //  11 credit table    u8 which (bit 0: c's id, else which >> 1), u8 mode
  //                     (0 truth, 1 returned beyond: u16, 2 backwards: u8,
  //                     3 u32 u32, 4 delivered beyond: u8, 5 backwards: u8,
  //                     6 unchanged, 7 part: u8), operands
  //  12 space_wanted    u8 mode (bit 0: + 1, else u32)
  //  13 flood           u8 mode (bits 0-1: distinct names, one name, one id,
  //                     closes), u8 base id, u8 count (bit 2 of mode: 256 +
  //                     count % 32 records, else 1 + count % 64); once per input
  //  14 overflow        u16 size, u8 mode (bit 7: no final record), pattern
  //  15 by the rules    u8 mode (0, 1: announce c: u8 id, [u16 max if bit 2],
  //                     [u16 window if bit 3]; 2 close c; 3 abort c)
  void step() {
    const std::uint8_t op = script_.u8();
    const std::uint32_t c = op >> 7;
    const bool skip = ((op >> 4) & 7) == cellink::fuzz::kSkipEvents;
    if (tracing()) trace_command(op);
    switch (static_cast<PeerCommand>(op & 15)) {
      case PeerCommand::raw_control: {
        const std::vector<std::byte> bytes = script_.payload(script_.u8());
        (void)put(transports::kControlChannel, 0, bytes);
        break;
      }
      case PeerCommand::crafted_control: crafted_control(); break;
      case PeerCommand::data_record: {  // a data record or fragment for any channel id
        const std::uint8_t which = script_.u8();
        const std::uint16_t id = which < 0x80   ? victim_id_[which & 1]
                                 : which < 0xc0 ? static_cast<std::uint16_t>(which & 3)
                                 : which < 0xff ? static_cast<std::uint16_t>(script_.u8())
                                                : script_.u16();
        const auto flags =
            (script_.u8() & 1) != 0 ? transports::kRecordMoreFragments : std::uint16_t{0};
        const std::vector<std::byte> bytes = script_.payload(script_.u16() % 20000);
        (void)put(id, flags, bytes);
        break;
      }
      case PeerCommand::receive: receive(c, (script_.u8() & 1) != 0); break;
      case PeerCommand::receive_typed: receive_typed(c); break;
      case PeerCommand::victim_send: {  // the victim sends (its ring toward the peer fills or not)
        const std::uint16_t size = script_.u16();
        victim_send(c, (size & 0x8000) != 0 ? size % 40000 : size % 600);
        break;
      }
      case PeerCommand::restart:  // the peer restarts: a new incarnation and handshake
        // Control records still unread belong to the ended session: the
        // victim reads them while it drains, counts the malformed ones and
        // ignores the rest (its announcements died with it), so the count
        // of control errors is taken afresh from here.
        if (unread_control_) synced_ = false;
        ++restarts_;
        start();
        break;
      case PeerCommand::corrupt: {  // the peer corrupts its own ring
        corrupted_ = true;
        const std::uint16_t offset = script_.u16();
        const std::uint8_t value = script_.u8();
        own()[link_.geometry().ring_slot_offset(kHostile, kVictim) +
              offset % link_.geometry().ring_slot_size()] = std::byte{value};
        break;
      }
      case PeerCommand::drop_held: held_.clear(); break;
      case PeerCommand::tagged_message: {  // a well-formed message, by the rules
        const std::uint16_t size = script_.u16();
        const bool wait = (size & 0x8000) != 0;
        (void)send_tagged(c, script_.pattern((size & 0x4000) != 0 ? size % 4096 : size % 200),
                          wait);
        break;
      }
      case PeerCommand::past_window: {  // whole records past the window the victim granted
        const int count = 1 + script_.u8() % 16;
        const std::size_t size = script_.u16() % 600;
        const std::vector<std::byte> bytes = script_.pattern(size);
        for (int i = 0; i < count; ++i) {
          if (!put(victim_id_[c], 0, bytes)) break;
        }
        break;
      }
      case PeerCommand::credit_table: credit_lie(c); break;
      case PeerCommand::space_wanted: {  // any value in our space_wanted word
        const std::uint8_t mode = script_.u8();
        const std::uint32_t now = load(own_space_wanted());
        store(own_space_wanted(), (mode & 1) != 0 ? now + 1 : script_.u32());
        ++space_writes_;
        break;
      }
      case PeerCommand::flood: flood(); break;
      case PeerCommand::overflow: {  // fragments past max_message_size
        const std::size_t size = 1 + script_.u16() % 504;
        const std::uint8_t mode = script_.u8();
        const std::vector<std::byte> bytes = script_.pattern(size);
        std::size_t total = 0;
        while (total <= kMaxMessage + (mode & 0x7f)) {
          if (!put(victim_id_[c], transports::kRecordMoreFragments, bytes)) break;
          total += size;
        }
        if ((mode & 0x80) == 0) (void)put(victim_id_[c], 0, bytes);
        break;
      }
      case PeerCommand::by_the_rules: polite_control(c); break;
    }
    if (skip) return;
    poll();
    (void)victim_.process_events();
    unread_control_ = false;
    poll();
    if (tracing()) trace_state();
    check_step();
  }

  void trace_command(std::uint8_t op) {
    static constexpr const char* kCommands[] = {
        "raw_control",   "crafted_control", "data_record", "receive",
        "receive_typed", "victim_send",     "restart",     "corrupt",
        "drop_held",     "tagged_message",  "past_window", "credit_table",
        "space_wanted",  "flood",           "overflow",    "by_the_rules"};
    std::fprintf(stderr, "-- %s on '%s'%s\n", kCommands[op & 15], kChannelNames[op >> 7],
                 ((op >> 4) & 7) == cellink::fuzz::kSkipEvents ? ", events not processed" : "");
  }
  void trace_state() {
    const SessionStats stats = victim_.stats();
    std::string model;
    for (const Name& name : names_) {
      if (!model.empty()) model += ' ';
      model += name.name + '=' + std::to_string(name.id);
    }
    if (model.size() > 60) model = model.substr(0, 60) + "...";
    const auto& produced = reinterpret_cast<const transports::ProducerArea*>(
                               own() + link_.geometry().ring_slot_offset(kHostile, kVictim))
                               ->produced.value;
    const auto& consumed = reinterpret_cast<const transports::ConsumerArea*>(
                               hostile_device_.output_section(kVictim).data() +
                               transports::LinkGeometry::consumer_area_offset(kHostile))
                               ->consumed.value;
    std::fprintf(stderr, "   ring: produced %llu consumed %llu; %zu held\n",
                 static_cast<unsigned long long>(load(produced)),
                 static_cast<unsigned long long>(load(consumed)), held_.size());
    std::fprintf(stderr,
                 "   connected a=%d b=%d; model {%s}; unroutable %llu control_errors %llu "
                 "(expected %llu) protocol_faults %llu oversized %llu space_doorbells %llu dropped "
                 "%llu%s%s\n"
                 "   %s\n",
                 channels_[0].connected() ? 1 : 0, channels_[1].connected() ? 1 : 0, model.c_str(),
                 static_cast<unsigned long long>(stats.unroutable),
                 static_cast<unsigned long long>(stats.control_errors - control_errors_base_),
                 static_cast<unsigned long long>(expected_control_errors_),
                 static_cast<unsigned long long>(stats.protocol_faults),
                 static_cast<unsigned long long>(stats.oversized_messages),
                 static_cast<unsigned long long>(stats.space_doorbells),
                 static_cast<unsigned long long>(stats.dropped_undelivered),
                 corrupted_ ? "; corrupted" : "", impolite_ ? "; impolite" : "",
                 victim_.diagnostic().c_str());
  }

  // An open, close or abort with chosen fields, then one byte mutated (or not).
  void crafted_control() {
    static constexpr const char* kNames[] = {"a", "b", "c", "a ", "n1", "n2", "A", "b\x7f"};
    const std::uint8_t what = script_.u8();
    const std::string_view name = kNames[what & 7];
    const std::uint16_t types[] = {1, 2, 3, static_cast<std::uint16_t>(what >> 3)};
    ControlMessage message{};
    message.type = types[(what >> 3) & 3];
    message.channel = script_.u8();
    if (message.channel == 0 && (what & 0x80) == 0) message.channel = 1;
    message.name_length = static_cast<std::uint16_t>(name.size());
    std::memcpy(message.name, name.data(), name.size());
    const std::uint8_t fields = script_.u8();
    const bool open = message.type == static_cast<std::uint16_t>(ControlType::open);
    if (open || (fields & 0x80) != 0) {
      message.max_message_size = (fields & 0x40) != 0 ? script_.u32() : script_.u16();
      switch (fields & 7) {
        case 0: message.credit_window = script_.u32(); break;
        case 1: message.credit_window = transports::kMinCreditWindow - 1; break;
        case 2: message.credit_window = transports::kMinCreditWindow; break;
        case 3: message.credit_window = transports::kMaxCreditWindow; break;
        case 4: message.credit_window = transports::kMaxCreditWindow + 1; break;
        case 5: message.credit_window = 0; break;
        default: message.credit_window = 64 + script_.u16(); break;
      }
    }
    auto bytes = std::as_writable_bytes(std::span{&message, 1});
    const std::uint8_t at = script_.u8();
    if (at < bytes.size()) bytes[at] = std::byte{script_.u8()};
    (void)put(transports::kControlChannel, 0, bytes);
  }

  // Announces, withdraws or aborts channel c's name by the rules.
  void polite_control(std::uint32_t c) {
    const std::uint8_t mode = script_.u8();
    switch (mode & 3) {
      case 0:
      case 1: {
        const std::uint16_t id = script_.u8();
        const std::uint32_t max = (mode & 4) != 0 ? script_.u16() : 1U << 20;
        const std::uint32_t window = (mode & 8) != 0 ? 64 + script_.u16() : 1U << 14;
        (void)announce(c, id, max, window);
        break;
      }
      case 2:
        if (const Name* name = find_name(kChannelNames[c])) {
          (void)put_control(ControlType::close, name->id, name->name, 0, 0);
        }
        break;
      default: (void)put_abort(c); break;
    }
  }

  // Many control records at once: more than 255 names, one name under many
  // ids, many names under one id, closes for names never announced.
  void flood() {
    if (floods_++ == kMaxFloods) return;
    const std::uint8_t mode = script_.u8();
    const std::uint8_t base = script_.u8();
    const int count = (mode & 4) != 0 ? 256 + script_.u8() % 32 : 1 + script_.u8() % 64;
    for (int i = 0; i < count; ++i) {
      char name[16];
      const int n = (mode & 3) == 1 ? 0 : i;
      const int length = std::snprintf(name, sizeof name, "f%d", n);
      const auto id =
          static_cast<std::uint16_t>((mode & 3) == 2 ? base % 255 + 1 : (base + i) % 255 + 1);
      const ControlType type = (mode & 3) == 3 ? ControlType::close : ControlType::open;
      ControlMessage message;
      if (!transports::encode_control(type, id, name, static_cast<std::size_t>(length), kMaxMessage,
                                      256, message)) {
        std::abort();
      }
      if (!put(transports::kControlChannel, 0, std::as_bytes(std::span{&message, 1}))) {
        poll();
        (void)victim_.process_events();
        if (!put(transports::kControlChannel, 0, std::as_bytes(std::span{&message, 1}))) break;
      }
    }
  }

  // Our credit table for the victim's sends: the truth, or lies.
  void credit_lie(std::uint32_t c) {
    const std::uint8_t which = script_.u8();
    const Name* name = find_name(kChannelNames[c]);
    const std::uint16_t id = (which & 1) != 0 && name != nullptr ? name->id : which >> 1;
    if (id == 0) return;
    const std::uint32_t bytes = consumed_bytes_[id];
    const std::uint32_t messages = consumed_messages_[id];
    std::uint32_t returned = bytes;
    std::uint32_t delivered = messages;
    switch (script_.u8() % 8) {
      case 0: break;  // the truth: everything consumed is given back
      case 1: returned = bytes + 1 + script_.u16(); break;                 // beyond sent
      case 2: returned = written_returned_[id] - 1 - script_.u8(); break;  // backwards
      case 3:
        returned = script_.u32();
        delivered = script_.u32();
        break;
      case 4: delivered = messages + 1 + script_.u8(); break;
      case 5: delivered = written_delivered_[id] - 1 - script_.u8(); break;
      case 6: returned = written_returned_[id]; break;          // keeps the window shut
      default: returned = bytes - (script_.u8() & ~7U); break;  // part of it
    }
    write_credit(id, returned, delivered);
  }

  // ---- the end: everything received, then both channels must still work ----

  void finish() {
    held_.clear();
    for (int round = 0; round < 64; ++round) {
      bool received = false;
      for (std::uint32_t c = 0; c < 2; ++c) {
        for (int i = 0; i < 64; ++i) {
          Message message = channels_[c].try_receive();
          check_received(c, message);
          if (message.error() == MessageErrc::would_block) break;
          received = true;
        }
      }
      poll();
      (void)victim_.process_events();
      if (!received) break;
    }
    poll();
    check_step();
    if (!checkable()) return;  // a corrupt ring breaks the whole pair
    // Every byte we sent was received and released: all of it came back.
    const transports::CreditTable& table = victim_table();
    for (std::size_t id = 1; id < kIds; ++id) {
      CHECK(load(table.entry[id].returned) == sent_bytes_[id], static_cast<long long>(id),
            static_cast<long long>(sent_bytes_[id] - load(table.entry[id].returned)));
    }
    for (std::uint32_t c = 0; c < 2; ++c) {
      // Toward the victim: announce if needed, then a message within the window.
      CHECK(announce(c, 0, 1U << 20, 4096));
      CHECK(put_abort(c));
      CHECK(send_tagged(c, std::vector<std::byte>(8, std::byte{0x11}), false));
      const std::uint32_t sequence = next_sequence_ - 1;
      poll();
      (void)victim_.process_events();
      CHECK(channels_[c].connected());
      Message message = channels_[c].try_receive();
      for (int i = 0; i < 4 && !message &&
                      (message.error() == MessageErrc::peer_reset ||
                       message.error() == MessageErrc::channel_closed);
           ++i) {
        message = channels_[c].try_receive();
      }
      CHECK(static_cast<bool>(message), message.error().value());
      check_received(c, message);
      CHECK(last_sequence_[c] == sequence, last_sequence_[c], sequence);
      message.release();

      // From the victim: unless we lied to it about this channel, it sends.
      const Name* name = find_name(kChannelNames[c]);
      CHECK(name != nullptr);
      if (lied_[name->id]) continue;
      write_credit(name->id, consumed_bytes_[name->id], consumed_messages_[name->id]);
      const std::size_t size = std::min<std::size_t>(
          {16, name->max_message_size, transports::max_payload_for_window(name->window)});
      std::vector<std::byte> bytes(size);
      for (std::size_t i = 0; i < size; ++i) bytes[i] = std::byte(0x30 + i + c);
      std::error_code error = channels_[c].send(bytes, kNoWait);
      if (error == MessageErrc::peer_reset) error = channels_[c].send(bytes, kNoWait);
      CHECK(!error, error.value());
      const std::uint16_t id = name->id;
      last_from_victim_[id].clear();
      poll();
      CHECK(last_from_victim_[id] == bytes, static_cast<long long>(last_from_victim_[id].size()),
            static_cast<long long>(size));
    }
  }

  Script& script_;
  LoopbackLink loopback_;
  Session victim_;
  Channel channels_[2];
  LoopbackDevice& hostile_device_;
  transports::Link<64> link_;
  std::vector<Message> held_;

  // Per hostile session.
  bool corrupted_ = false;
  std::vector<Name> names_;  // the model of the victim's table of our names
  std::bitset<kIds> ever_announced_;
  std::uint32_t wmax_[kIds] = {};
  // What we sent to each of the victim's ids, and what its table said.
  std::uint32_t sent_bytes_[kIds] = {};
  std::uint32_t sent_messages_[kIds] = {};
  std::uint32_t seen_returned_[kIds] = {};
  std::uint32_t seen_delivered_[kIds] = {};
  Pending pending_[kIds] = {};
  std::uint32_t pending_bytes_[kIds] = {};
  bool dirty_[2] = {};  // a tagged message on the channel may have been mixed with others
  // What the victim sent to each of our ids, and what our table told it.
  std::uint32_t consumed_bytes_[kIds] = {};
  std::uint32_t consumed_messages_[kIds] = {};
  std::uint32_t written_returned_[kIds] = {};
  std::uint32_t written_delivered_[kIds] = {};
  bool lied_[kIds] = {};
  bool any_lie_ = false;
  std::vector<std::byte> last_from_victim_[kIds];

  // Across sessions.
  std::uint16_t victim_id_[2] = {1, 2};  // learned from its announcements
  std::uint32_t next_sequence_ = 1;
  std::uint32_t last_sequence_[2] = {};
  bool synced_ = false;
  bool impolite_ = false;          // a record or call since the last check may cause a fault
  bool unread_control_ = false;    // a control record the victim may not have read yet
  std::uint64_t records_put_ = 0;  // records we wrote
  std::uint64_t held_since_ = 0;   // written_at_ of the oldest record held zero-copy
  std::vector<std::uint64_t> written_at_ = std::vector<std::uint64_t>(8192);  // by ring_index()
  std::uint64_t control_errors_base_ = 0;
  std::uint64_t expected_control_errors_ = 0;
  std::uint64_t faults_base_ = 0;
  std::uint64_t space_writes_ = 0;
  std::uint64_t restarts_ = 0;
  int floods_ = 0;
  std::string first_diagnostic_;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  Script script({data, size});
  Harness harness(script);
  harness.run();
  return 0;
}
