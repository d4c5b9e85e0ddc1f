// The commands of the fuzzers' scripts, shared by the fuzzers and by
// make_seeds.cpp, which writes seeds with them. Private to tests/fuzz/.
//
// A command byte holds the command in its low nibble and a small argument
// `a` (0..15) in its high nibble; operands, when a command takes any,
// follow it in the script. Each fuzzer's header comment and command table
// say what the argument and operands mean. A low nibble no command uses is
// a no-op, so every byte string stays a valid script.
#pragma once

#include <cstdint>

namespace cellink::fuzz {

// The command byte for `command` with argument `a`.
template <typename Command>
constexpr std::uint8_t op(Command command, unsigned a = 0) {
  return static_cast<std::uint8_t>(static_cast<unsigned>(command) | (a & 0x0f) << 4);
}

// ring_consumer_fuzzer, mode 0: the producer area is raw input.
enum class ImageCommand : std::uint8_t {
  produced_step,  // produced += 8 (a + 1)
  produced_add,   // produced += u16
  produced_set,   // produced = u64
  produced_back,  // produced -= 8 (a + 1)
  peek,           // peek() up to a + 1 times, holding what comes out
  release,        // release held record [a]
  release_all,    // release every held record (a & 1: newest first)
  arm,            // arm_wakeup()
  record_header,  // header word at data u16 * 8: length u16 (a & 8: u32), channel u8;
                  // flags: padding if a & 1, an unknown bit if a & 2
  poke,           // area byte u16 = u8
  ring_header,    // a & 3: 0 valid magic, 1 magic = u32, 2 version = u16, 3 capacity = u64
  release_stale,  // release() of a record not held (u64 picks it)
  drain,          // peek and release until nothing more comes
  produced_full,  // produced = consumed + capacity - 8a
  reattach,       // init() the consumer again
};

// ring_consumer_fuzzer, mode 1: a RingProducer writes, the script corrupts.
enum class ProducerModeCommand : std::uint8_t {
  write,           // write(u8 bytes, x8 if a & 1) on channel a >> 1
  reserve_commit,  // a % 4 + 1 reservations of u8 bytes, then commit each u8 shorter
                   // (a & 4: try an out-of-order commit first)
  publish,         // publish(), checking the doorbell
  peek,            // peek() up to a + 1 times
  release,         // release held record [a]
  release_all,     // release every held record (a & 1: newest first)
  arm,             // arm_wakeup()
  poke,            // corrupt: area byte u16 = u8
  produced,        // corrupt: produced = published + 8 * s8 (a & 1: = u64)
  drain,           // peek and release until nothing more comes
  record_header,   // corrupt: header word at data u16 * 8 = {u16, u8, u8}
  release_stale,   // release() of a record not held
};

// ring_producer_fuzzer: the consumer's area is the script's.
enum class ProducerCommand : std::uint8_t {
  consumed_set,     // consumed = u64
  consumed_step,    // consumed += 8 (a + 1)
  consumed_behind,  // consumed = published - 8a
  consumed_back,    // consumed -= 8 (a + 1)
  wake_after,       // wake_after = published - 8 + 8 (a >> 1) (a & 1: = u64)
  reserve,          // reserve(u8 bytes, a & 1: u16) on channel a >> 1
  commit,           // commit the oldest reservation, u8 bytes shorter (a & 7: misuse first)
  publish,          // publish(), checking the doorbell
  write,            // write(u8 * (a + 1) bytes) on channel a
  commit_all,       // commit every reservation in flight
  consumed_beyond,  // consumed = published + 1 + a
};

// virtq_device_fuzzer: the driver's areas are the script's.
enum class DeviceCommand : std::uint8_t {
  pop,          // pop() a + 1 times
  push_held,    // push(held head [a], u16 bytes)
  push,         // push(u16 head, u16 bytes)
  publish,      // publish(), checking the notification
  arm_notify,   // arm_notify()
  driver_add,   // a driver publishes a % 4 + 1 descriptors from desc[u8], the last a / 4
                // writable, each at data + 4 * u8 with 4 * u8 bytes
  avail_idx,    // avail.idx += a (a = 15: = u16)
  avail_slot,   // avail.ring[u8] = u16
  desc_raw,     // desc[u8] = {u64, u32, u16, u16}
  desc_coarse,  // desc[u8].addr = 16 * u16, .len = u16
  poke,         // section byte u16 = u8
  used_event,   // used_event = u16
  reinit,       // init() the device again
};

// virtq_driver_fuzzer: the device's areas are the script's.
enum class DriverCommand : std::uint8_t {
  add,              // add(a % 4 readable, a / 4 writable buffers); each buffer is u8 b:
                    // b < 0x80: data + 4 b with 4 * u8 bytes; else offset u16, len u16
  publish,          // publish(), checking the notification
  collect,          // collect() a + 1 times
  arm_interrupt,    // arm_interrupt()
  device_complete,  // a device returns published chain [a] with min(u16, writable)
                    // bytes (a & 8: the u16 as is) and bumps used.idx
  used_idx,         // used.idx += a (a = 15: = u16)
  used_slot,        // used.ring[u8] = {u32, u32}
  avail_event,      // avail_event = u16
  poke,             // section byte u16 = u8
  reinit,           // init() the driver again
  add_all,          // add(N + (a & 1) empty buffers)
};

// message_layer_fuzzer: what the hostile peer (or the Session under test)
// does. The argument picks the channel (a & 8: "b", else "a"); a & 7 == 7
// leaves the Session's events unprocessed after the command (kSkipEvents),
// so that the next command meets records it has not read. The operands are
// listed in message_layer_fuzzer.cpp, Harness::step().
enum class PeerCommand : std::uint8_t {
  raw_control,      // a control record of any length and content
  crafted_control,  // an open, close or abort with chosen fields, one byte mutated or not
  data_record,      // a data record or fragment for any channel id
  receive,          // try_receive() on the channel, holding the message or not
  receive_typed,    // try_receive() read as Cap'n Proto
  victim_send,      // the Session sends on the channel (kNoWait)
  restart,          // the peer restarts: a new incarnation and handshake
  corrupt,          // the peer corrupts one byte of its own ring
  drop_held,        // release every held message
  tagged_message,   // a well-formed message by the rules (window, fragments, aborts)
  past_window,      // whole records past the credit window the Session granted
  credit_table,     // the peer's credit table for the Session's sends: truth or lies
  space_wanted,     // any value in the peer's space_wanted (its request for a doorbell)
  flood,            // many control records: > 255 names, one name many ids, ...
  overflow,         // fragments past the Session's max_message_size
  by_the_rules,     // announce, close or abort the channel's name by the rules
};
inline constexpr unsigned kSkipEvents = 7;  // argument bits: no event processing after

}  // namespace cellink::fuzz
