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
  pop,             // pop() a + 1 times
  push_held,       // push(held head [a], u16 bytes)
  push,            // push(u16 head, u16 bytes)
  publish,         // publish(), checking the notification
  arm_notify,      // arm_notify()
  driver_add,      // a driver publishes a % 4 + 1 descriptors from desc[u8], the last a / 4
                   // writable, each at data + 4 * u8 with 4 * u8 bytes
  avail_idx,       // avail.idx += a (a = 15: = u16)
  avail_slot,      // avail.ring[u8] = u16
  desc_raw,        // desc[u8] = {u64, u32, u16, u16}
  desc_coarse,     // desc[u8].addr = 16 * u16, .len = u16
  poke,            // section byte u16 = u8
  used_event,      // used_event = u16
  reinit,          // init() the device again
  reinit_flags,    // init() again with a pool offset (a & 1: the first area; a & 2: 16 past it)
                   // and flag-based suppression (unless a & 4: EVENT_IDX)
  disable_notify,  // disable_notify()
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

// virtio_ivshmem_device_fuzzer: the front end's register writes, state and
// driver areas are the script's; the back end's calls are checked.
enum class DeviceLinkCommand : std::uint8_t {
  write_field,  // header field [a] = u64 (a < 11: the writable fields in header order;
                // else the offset is u8), then write_transaction and service()
  write_small,  // the same with the value u8 (a >= 11: offset 0x08 + 4 (a - 11), read-only)
  front_state,  // front end state = a & 1 (a & 3 == 2: = u32); then service() unless a & 4
  service,      // service() a + 1 times
  negotiate,    // status 0, ACK | DRIVER, features, FEATURES_OK; features: a & 1 adds
                // EVENT_IDX, a & 2 drops VERSION_1, a & 4 drops ACCESS_PLATFORM, a & 8 adds bit 40
  setup_queue,  // queue a & 1 of size 1 << ((a >> 1) % 9) at 0x1000 + 16 * u16,
                // driver vector u8 & 3, then queue_enable = 1
  driver_ok,    // device_status = ACK | DRIVER | FEATURES_OK | DRIVER_OK
  driver_add,   // queue a & 1: ((a >> 1) & 3) + 1 descriptors from desc[u8], each at 4 * u16
                // with 4 * u8 bytes, the last writable if a & 8; published
  desc_raw,     // queue a & 1: desc[u8] = {u64, u32, u16, u16}
  avail_idx,    // queue a & 1: avail.idx += a >> 1 (a >> 1 == 7: = u16)
  poke,         // section byte (a & 1: u8; else u16 mod R) = u8
  pop,          // the back end pops (a >> 1) + 1 chains of queue a & 1 and pushes each
                // with u8 mod (writable + 1) bytes
  notify,       // notify(a & 1); if a & 2, first avail.flags = (a >> 2) & 1, used_event = u16
  arm,          // arm(a & 1), after disable_notify() if a & 2
  update_config,  // 16 bytes u8; the config's size, or a >> 1 bytes if a & 1
  restart,        // a & 1: stop() and attach() again; else write_transaction = u16, service()
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
