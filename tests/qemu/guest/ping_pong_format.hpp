// The messages of the guest channel test (guest_channel.cpp in the guest,
// guest_channel_test.cpp on the host): both sides compute every message from
// (phase, kind, round), so each checks every byte it receives.
//
//   phase host_first:  the host sends ping r, the guest answers pong r;
//   phase guest_first: the guest sends ping r, the host answers pong r.
//
// A message is a 16-byte header {u32 magic, u8 phase, u8 kind, u16 round,
// u32 size, u32 reserved 0} and then bytes from a mixing function. Sizes run
// from 16 bytes to several records, so some messages are fragmented.
//
// Each side sends only once the receiver sleeps: receiver_armed() reads, in
// the receiver's memory, the wake-up request of the ring toward it
// (docs/ring.md). So every receive blocks, and the doorbell is what ends it
// (or, rarely, the Session's 20 ms safety poll, which finds the record too).
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "cellink/ivshmem/device.hpp"
#include "cellink/transports/link_format.hpp"
#include "cellink/transports/ring_format.hpp"

namespace cellink::guest_test {

inline constexpr std::uint32_t kMagic = 0x50474e50;  // "PNGP"
inline constexpr const char* kChannelName = "guest-ping";

enum class Phase : std::uint8_t { host_first = 1, guest_first = 2 };
enum class Kind : std::uint8_t { ping = 1, pong = 2 };

struct Header {
  std::uint32_t magic;
  std::uint8_t phase;
  std::uint8_t kind;
  std::uint16_t round;
  std::uint32_t size;
  std::uint32_t reserved;
};
static_assert(sizeof(Header) == 16);

// Round r's size, for a link whose records carry `max_record` bytes.
[[nodiscard]] inline std::size_t message_size(Phase phase, Kind kind, std::uint32_t round,
                                              std::size_t max_record) {
  const std::size_t sizes[] = {16, 64, 1000, 4096, max_record, max_record + 1, 2 * max_record + 100,
                               200};
  const std::size_t count = sizeof(sizes) / sizeof(sizes[0]);
  const std::size_t shift = (phase == Phase::guest_first ? 3 : 0) + (kind == Kind::pong ? 1 : 0);
  return sizes[(round + shift) % count];
}

[[nodiscard]] inline std::vector<std::byte> make_message(Phase phase, Kind kind,
                                                         std::uint32_t round,
                                                         std::size_t max_record) {
  const std::size_t size = message_size(phase, kind, round, max_record);
  std::vector<std::byte> bytes(size);
  const Header header{kMagic,
                      static_cast<std::uint8_t>(phase),
                      static_cast<std::uint8_t>(kind),
                      static_cast<std::uint16_t>(round),
                      static_cast<std::uint32_t>(size),
                      0};
  std::memcpy(bytes.data(), &header, sizeof(header));
  std::uint64_t state = (std::uint64_t{static_cast<std::uint8_t>(phase)} << 40) |
                        (std::uint64_t{static_cast<std::uint8_t>(kind)} << 32) | round;
  for (std::size_t i = sizeof(header); i < size; ++i) {
    // splitmix64 step: every byte depends on the message and its position.
    std::uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    bytes[i] = static_cast<std::byte>(z ^ (z >> 31));
  }
  return bytes;
}

// Empty when `received` is exactly message (phase, kind, round); otherwise
// what differs.
[[nodiscard]] inline std::string check_message(std::span<const std::byte> received, Phase phase,
                                               Kind kind, std::uint32_t round,
                                               std::size_t max_record) {
  const std::vector<std::byte> expected = make_message(phase, kind, round, max_record);
  const std::string what = std::string(kind == Kind::ping ? "ping " : "pong ") +
                           std::to_string(round) +
                           (phase == Phase::host_first ? " (host first)" : " (guest first)");
  if (received.size() != expected.size()) {
    return what + ": " + std::to_string(received.size()) + " bytes, expected " +
           std::to_string(expected.size());
  }
  for (std::size_t i = 0; i < expected.size(); ++i) {
    if (received[i] != expected[i]) return what + ": byte " + std::to_string(i) + " differs";
  }
  return {};
}

// Whether `peer` has consumed everything this side sent it and asked for a
// doorbell on the next record: it sleeps, or is about to, in a receive.
// Test code: it trusts the peer's memory, which a Session never does.
[[nodiscard]] inline bool receiver_armed(ivshmem::Device& device, std::uint32_t peer) {
  transports::LinkGeometry geometry;
  if (!transports::LinkGeometry::compute(device.peer_count(), device.own_output_section().size(),
                                         geometry)) {
    return false;
  }
  auto* producer = reinterpret_cast<transports::ProducerArea*>(
      device.own_output_section().data() + geometry.ring_slot_offset(device.id(), peer));
  auto* consumer = reinterpret_cast<transports::ConsumerArea*>(
      const_cast<std::byte*>(device.output_section(peer).data() +
                             transports::LinkGeometry::consumer_area_offset(device.id())));
  const std::uint64_t produced =
      std::atomic_ref<std::uint64_t>(producer->produced.value).load(std::memory_order_acquire);
  const std::uint64_t wake_after =
      std::atomic_ref<std::uint64_t>(consumer->wake_after.value).load(std::memory_order_acquire);
  return wake_after == produced;
}

// The end of what `peer` published on its ring toward this device, in ring
// bytes (records with their headers). Test code, like receiver_armed().
[[nodiscard]] inline std::uint64_t produced_by(ivshmem::Device& device, std::uint32_t peer) {
  transports::LinkGeometry geometry;
  if (!transports::LinkGeometry::compute(device.peer_count(), device.own_output_section().size(),
                                         geometry)) {
    return 0;
  }
  auto* producer = reinterpret_cast<transports::ProducerArea*>(const_cast<std::byte*>(
      device.output_section(peer).data() + geometry.ring_slot_offset(peer, device.id())));
  return std::atomic_ref<std::uint64_t>(producer->produced.value).load(std::memory_order_acquire);
}

// Waits until receiver_armed(); false when `timeout` passed first.
[[nodiscard]] inline bool await_receiver_armed(ivshmem::Device& device, std::uint32_t peer,
                                               std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!receiver_armed(device, peer)) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::microseconds{100});
  }
  return true;
}

}  // namespace cellink::guest_test
