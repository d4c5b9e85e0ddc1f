// Cap'n Proto messages on a Channel (channel.hpp), built in place in a loaned
// ring record and read in place from the peer's record.
//
//   // Sender: no copy, no heap; 512 bytes bound the message.
//   std::error_code sent = send_capnp<Sample>(channel, 512, [&](Sample::Builder sample) {
//     sample.setSequence(n);
//     sample.setCell("rt-0");
//   });
//   // Receiver: validated before root() is handed out.
//   CapnpMessage<Sample> sample = receive_capnp<Sample>(channel, std::chrono::seconds{1});
//   if (!sample) return sample.error();  // timed_out, malformed_message, ...
//   consume(sample.root().getSequence());
//
// Wire format: a record carries exactly one single-segment Cap'n Proto
// message: the segment's words and nothing else (no segment table; the record
// length is the segment length, a non-zero multiple of 8). Far pointers may
// name segment 0 only. Capabilities cannot cross shared memory and are
// rejected.
//
// Sending. send_capnp() loans max_bytes (rounded down to whole words; at most
// Session::max_record_payload(), else loan_too_large), zeroes them (capnp
// builders require zeroed segment memory, so pass a tight bound rather than
// the largest record), runs fill(root) on a builder whose only segment is the
// loan, and commits exactly the words the message used. A message that
// outgrows max_bytes gives message_too_large and sends nothing. Other errors
// are those of Channel::loan() and Loan::commit(). An exception thrown by
// fill() propagates and sends nothing. fill() must not keep builders past its
// return, and it runs while the loan blocks other sends to the same peer:
// keep it short and never send on the same peer from inside it.
//
// Receiving. read_capnp() checks the size and alignment of a Message, then
// validates it eagerly: it walks every field the schema of Struct knows
// (structs, lists, text terminators, list element sizes, the active union
// member) and every pointer under AnyPointer fields, within the limits of
// CapnpReadOptions. Any failure gives malformed_message, with capnp's reason
// in error_detail(), and releases the record. A message that passes is one
// that root()'s accessors read without exceptions, as long as its bytes do not
// change. The walk costs one pass over the message; root() then gets a fresh
// traversal budget, so the walk does not count against it.
//
// Ownership: a CapnpMessage owns its Message (or the stable copy); root() and
// every reader taken from it are valid until release(), destruction or a move
// from it. A message that arrived in fragments is already a private copy, so
// zero_copy() is false for it.
//
// Why a hostile writer is safe to read:
//   - capnp bounds-checks every pointer it follows against the segment, which
//     is exactly the record: a reader never touches memory outside it;
//   - pointers may alias (many pointers to one object, or a zero-sized
//     element list of 2^29 entries), making a small message traverse like a
//     huge one. Every struct and list read is charged to the traversal limit,
//     so that work is bounded. The nesting limit bounds the recursion depth;
//   - capnp reports each violation as a kj::Exception, which this file turns
//     into malformed_message; nothing here crashes on bad input.
// But the peer owns the record and can rewrite it after validation (zero-copy
// messages only). Then: a value read twice may differ (check-then-use on
// values from root() is racy); an accessor may throw kj::Exception (still
// bounds-checked, still no out-of-bounds read); and Text::Reader::cStr() may
// lose the terminator that validation saw, so hand text to C APIs by
// begin()/size(). A consumer that cannot live with that sets
// CapnpReadOptions::stable_copy: one copy into private memory, the record is
// released at once, and validation then holds for the message's lifetime.
//
// Threading: send_capnp() and receive_capnp() may be called from any thread,
// like the Channel calls they make. A CapnpMessage and its readers belong to
// the thread that holds them (the capnp reader's traversal counter is not
// synchronised). The Session must outlive every CapnpMessage.
#pragma once

#include <algorithm>
#include <chrono>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include <capnp/any.h>
#include <capnp/dynamic.h>
#include <capnp/message.h>
#include <kj/common.h>
#include <kj/exception.h>

#include "cellink/linux-uio/channel.hpp"
#include "cellink/linux-uio/message_error.hpp"

namespace cellink::linux_uio {

// The largest single segment capnp supports (its pointers carry 29-bit word
// counts).
inline constexpr std::size_t kCapnpMaxSegmentWords = (std::size_t{1} << 29) - 1;

// Limits for reading a message from an untrusted peer (capnp::ReaderOptions).
struct CapnpReadOptions {
  // Words of structs and lists one reader may traverse. The default, 1 Mi
  // words (8 MiB), is 8 times the default SessionOptions::max_message_size:
  // room to read every field of the largest message several times, while an
  // aliasing message costs at most that much work. Validation and root() are
  // each given this budget.
  std::uint64_t traversal_limit_words = std::uint64_t{1} << 20;
  // How deep structs and lists may nest: bounds recursion in the validation
  // walk and in recursive consumers. capnp's default.
  int nesting_limit = 64;
  // Copy the record into private memory before validating and release it at
  // once: root() then reads bytes the peer can no longer change.
  bool stable_copy = false;
};

namespace detail {

// Builds a message in one caller-provided, zeroed segment and notes when it
// asked for a second one: that, and only that, is message_too_large.
class LoanMessageBuilder final : public capnp::MessageBuilder {
 public:
  explicit LoanMessageBuilder(kj::ArrayPtr<capnp::word> segment) : segment_(segment) {}

  kj::ArrayPtr<capnp::word> allocateSegment(unsigned /*minimum_size*/) override {
    if (!handed_out_) {
      handed_out_ = true;
      return segment_;
    }
    overflowed_ = true;
    throw kj::Exception(kj::Exception::Type::FAILED, __FILE__, __LINE__,
                        kj::heapString("message does not fit the loaned record"));
  }

  [[nodiscard]] bool overflowed() const noexcept { return overflowed_; }

 private:
  kj::ArrayPtr<capnp::word> segment_;
  bool handed_out_ = false;
  bool overflowed_ = false;
};

[[noreturn]] inline void reject_capability() {
  throw kj::Exception(kj::Exception::Type::FAILED, __FILE__, __LINE__,
                      kj::heapString("message carries a capability, which cannot cross shared "
                                     "memory"));
}

// The walks read through accessors rather than calling capnp's totalSize():
// totalSize() is not charged to the traversal limit, so aliasing pointers
// would make it exponential.
//
// Schema-less walk for AnyPointer fields: follows every pointer, so capnp
// bounds-checks and charges each object.
inline void validate_any(capnp::AnyPointer::Reader pointer);

inline void validate_any_struct(capnp::AnyStruct::Reader object) {
  for (capnp::AnyPointer::Reader child : object.getPointerSection()) validate_any(child);
}

inline void validate_any(capnp::AnyPointer::Reader pointer) {
  switch (pointer.getPointerType()) {
    case capnp::PointerType::NULL_: return;
    case capnp::PointerType::STRUCT: validate_any_struct(pointer.getAs<capnp::AnyStruct>()); return;
    case capnp::PointerType::LIST: {
      capnp::AnyList::Reader list = pointer.getAs<capnp::AnyList>();
      if (list.getElementSize() == capnp::ElementSize::POINTER) {
        for (capnp::AnyPointer::Reader child : list.as<capnp::List<capnp::AnyPointer>>()) {
          validate_any(child);
        }
      } else if (list.getElementSize() == capnp::ElementSize::INLINE_COMPOSITE) {
        for (capnp::AnyStruct::Reader element : list.as<capnp::List<capnp::AnyStruct>>()) {
          validate_any_struct(element);
        }
      }
      return;  // data lists: reading the list checked its bounds
    }
    case capnp::PointerType::CAPABILITY: reject_capability();
  }
}

// Schema walk: reads every field the way the generated accessors do, so
// each check they would make lazily (bounds, element size, text terminator)
// happens here first.
inline void validate_value(const capnp::DynamicValue::Reader& value);

inline void validate_struct(capnp::DynamicStruct::Reader object) {
  auto validate_field = [&object](capnp::StructSchema::Field field) {
    if (field.getType().isInterface()) {
      if (object.has(field)) reject_capability();
      return;
    }
    validate_value(object.get(field));
  };
  for (capnp::StructSchema::Field field : object.getSchema().getNonUnionFields()) {
    validate_field(field);
  }
  KJ_IF_MAYBE (active, object.which()) {
    validate_field(*active);
  }
}

inline void validate_value(const capnp::DynamicValue::Reader& value) {
  switch (value.getType()) {
    case capnp::DynamicValue::STRUCT: validate_struct(value.as<capnp::DynamicStruct>()); return;
    case capnp::DynamicValue::LIST: {
      capnp::DynamicList::Reader list = value.as<capnp::DynamicList>();
      const capnp::Type element = list.getSchema().getElementType();
      if (element.isInterface()) {
        if (list.size() != 0) reject_capability();
        return;
      }
      const bool has_pointers = element.isText() || element.isData() || element.isList() ||
                                element.isStruct() || element.isAnyPointer();
      if (!has_pointers) return;  // primitives: reading the list checked its bounds
      for (capnp::DynamicValue::Reader item : list) validate_value(item);
      return;
    }
    case capnp::DynamicValue::ANY_POINTER: validate_any(value.as<capnp::AnyPointer>()); return;
    case capnp::DynamicValue::CAPABILITY: reject_capability();
    default: return;  // data-section values; text and data were checked by get()
  }
}

}  // namespace detail

template <typename Struct>
class CapnpMessage;

// Validates `message` as a Struct message (see the file comment). The
// CapnpMessage takes the Message over; a failed one releases it. A Message
// that holds an error passes that error on.
template <typename Struct>
[[nodiscard]] CapnpMessage<Struct> read_capnp(Message message,
                                              const CapnpReadOptions& options = {});

// A received message of root type Struct, validated (see the file comment),
// holding the Message so that root() stays valid until release() or
// destruction. Move-only; one heap block per message.
template <typename Struct>
class CapnpMessage {
  static_assert(capnp::kind<Struct>() == capnp::Kind::STRUCT,
                "CapnpMessage<Struct>: Struct must be a generated Cap'n Proto struct type");

 public:
  CapnpMessage() = default;

  // True when a valid message is held; otherwise error() says why not.
  [[nodiscard]] explicit operator bool() const noexcept { return state_ != nullptr; }
  [[nodiscard]] std::error_code error() const noexcept { return error_; }
  // For malformed_message: what capnp found wrong (for logs). Empty otherwise.
  [[nodiscard]] const std::string& error_detail() const noexcept { return error_detail_; }

  // The root struct, valid until release(). Throws std::logic_error when no
  // message is held.
  [[nodiscard]] typename Struct::Reader root() const {
    if (!state_) {
      throw std::logic_error("CapnpMessage::root(): no message held (error: '" + error_.message() +
                             "'; check the message before using it)");
    }
    return state_->root;
  }
  // Whether root() reads the peer's record in place (not a copy).
  [[nodiscard]] bool zero_copy() const noexcept { return state_ && state_->zero_copy; }

  // Gives the record back (see Message::release()). Idempotent.
  void release() noexcept { state_.reset(); }

 private:
  // Heap-allocated so that the reader's segment table keeps its address when
  // the CapnpMessage moves. Members are destroyed bottom-up: readers first.
  struct State {
    Message message;
    std::vector<std::uint64_t> stable_words;  // stable_copy only
    bool zero_copy = false;
    kj::ArrayPtr<const capnp::word> segments[1];
    std::optional<capnp::SegmentArrayMessageReader> reader;
    typename Struct::Reader root;
  };

  explicit CapnpMessage(std::unique_ptr<State> state) noexcept : state_(std::move(state)) {}
  CapnpMessage(std::error_code error, std::string detail) noexcept
      : error_(error), error_detail_(std::move(detail)) {}

  template <typename S>
  friend CapnpMessage<S> read_capnp(Message message, const CapnpReadOptions& options);

  std::error_code error_;
  std::string error_detail_;
  std::unique_ptr<State> state_;
};

template <typename Struct>
CapnpMessage<Struct> read_capnp(Message message, const CapnpReadOptions& options) {
  using Result = CapnpMessage<Struct>;
  if (!message) {
    return Result(
        message.error() ? message.error() : std::make_error_code(std::errc::invalid_argument),
        message.error() ? std::string{} : "read_capnp(): empty Message");
  }
  const std::span<const std::byte> payload = message.payload();
  constexpr std::size_t kWord = sizeof(capnp::word);
  if (payload.empty() || payload.size() % kWord != 0 ||
      payload.size() / kWord > kCapnpMaxSegmentWords) {
    return Result(MessageErrc::malformed_message,
                  "payload of " + std::to_string(payload.size()) +
                      " bytes is not one Cap'n Proto segment (a non-zero multiple of 8 bytes)");
  }
  if (reinterpret_cast<std::uintptr_t>(payload.data()) % alignof(capnp::word) != 0) {
    return Result(MessageErrc::malformed_message,
                  "payload is not 8-byte aligned (a Channel bug: records are word aligned)");
  }

  auto state = std::make_unique<typename Result::State>();
  state->message = std::move(message);
  const capnp::word* words = reinterpret_cast<const capnp::word*>(payload.data());
  if (options.stable_copy) {
    state->stable_words.resize(payload.size() / kWord);
    state->message.copy_out(std::as_writable_bytes(std::span{state->stable_words}));
    state->message.release();
    words = reinterpret_cast<const capnp::word*>(state->stable_words.data());
  } else {
    state->zero_copy = state->message.zero_copy();
  }
  state->segments[0] = kj::arrayPtr(words, payload.size() / kWord);

  capnp::ReaderOptions reader_options;
  reader_options.traversalLimitInWords = options.traversal_limit_words;
  reader_options.nestingLimit = options.nesting_limit;
  try {
    {
      capnp::SegmentArrayMessageReader checker(kj::arrayPtr(state->segments, 1), reader_options);
      detail::validate_struct(capnp::toDynamic(checker.getRoot<Struct>()));
    }
    state->reader.emplace(kj::arrayPtr(state->segments, 1), reader_options);
    state->root = state->reader->template getRoot<Struct>();
  } catch (const kj::Exception& exception) {
    return Result(MessageErrc::malformed_message, exception.getDescription().cStr());
  }
  return Result(std::move(state));
}

// Receives the next message of `channel` and validates it (read_capnp()).
// Errors: those of Channel::receive(), and malformed_message.
template <typename Struct>
[[nodiscard]] CapnpMessage<Struct> receive_capnp(Channel& channel,
                                                 std::chrono::nanoseconds timeout = kForever,
                                                 const CapnpReadOptions& options = {}) {
  return read_capnp<Struct>(channel.receive(timeout), options);
}

// Builds a Struct message in place in a loan of max_bytes and sends it (see
// the file comment). fill(typename Struct::Builder) sets the fields.
template <typename Struct, typename Fill>
requires std::invocable<Fill&, typename Struct::Builder>
[[nodiscard]] std::error_code send_capnp(Channel& channel, std::size_t max_bytes, Fill&& fill,
                                         std::chrono::nanoseconds timeout = kForever) {
  static_assert(capnp::kind<Struct>() == capnp::Kind::STRUCT,
                "send_capnp<Struct>: Struct must be a generated Cap'n Proto struct type");
  constexpr std::size_t kWord = sizeof(capnp::word);
  const std::size_t words = std::min(max_bytes / kWord, kCapnpMaxSegmentWords);
  if (words == 0) return std::make_error_code(std::errc::invalid_argument);

  Loan loan = channel.loan(words * kWord, timeout);
  if (!loan) return loan.error();
  const std::span<std::byte> space = loan.data();
  if (space.size() < words * kWord ||
      reinterpret_cast<std::uintptr_t>(space.data()) % alignof(capnp::word) != 0) {
    loan.abandon();  // a Channel bug: loans are word aligned and of the size asked
    return std::make_error_code(std::errc::bad_address);
  }
  // The builder assumes zeroed memory; the record may hold an old message.
  std::memset(space.data(), 0, words * kWord);

  std::size_t used = 0;
  {
    detail::LoanMessageBuilder builder(
        kj::arrayPtr(reinterpret_cast<capnp::word*>(space.data()), words));
    try {
      std::invoke(fill, builder.initRoot<Struct>());
      used = builder.getSegmentsForOutput()[0].size() * kWord;
    } catch (const kj::Exception&) {
      if (!builder.overflowed()) throw;  // fill()'s own failure: the Loan abandons itself
      loan.abandon();
      return make_error_code(MessageErrc::message_too_large);
    }
  }
  return loan.commit(used);
}

}  // namespace cellink::linux_uio
