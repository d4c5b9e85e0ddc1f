// Device: what a transport may ask of an ivshmem device, and nothing more.
//
// Backends implement it: HostDevice (daemon socket), later UioDevice,
// VfioDevice and the inmate driver. Transports see only memory spans, ids,
// doorbells and the state table. Waiting for an interrupt is the backend's
// business, never the transport's, so this interface has no wait().
//
// Memory rules the backend guarantees for the lifetime of the Device:
//   - rw_section() is writable by every peer;
//   - own_output_section() is writable by this peer only;
//   - output_section(i) is readable for every peer id i < peer_count();
//   - every span stays mapped at the same address (nothing is remapped).
// The contents of any span may be changed concurrently by a hostile peer.
//
// Threading: implementations document their own rules; the HostDevice allows
// doorbell(), set_state() and peer_state() from any thread.
//
// Freestanding: no exceptions, no heap, no libc.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "cellink/ivshmem/layout.hpp"

namespace cellink::ivshmem {

enum class DoorbellStatus : std::uint8_t {
  ok,
  no_such_peer,    // peer id >= peer_count()
  peer_absent,     // the peer is not connected, so the doorbell went nowhere
  no_such_vector,  // vector >= vector_count()
  failed,          // the backend could not deliver it (e.g. a write error)
};

[[nodiscard]] constexpr const char* describe(DoorbellStatus status) noexcept {
  switch (status) {
    case DoorbellStatus::ok: return "ok";
    case DoorbellStatus::no_such_peer: return "no such peer on this link";
    case DoorbellStatus::peer_absent: return "peer is not present";
    case DoorbellStatus::no_such_vector: return "vector out of range";
    case DoorbellStatus::failed: return "doorbell delivery failed";
  }
  return "unknown doorbell status";
}

class Device {
 public:
  Device(const Device&) = delete;
  Device& operator=(const Device&) = delete;

  // This peer's id on the link, 0..peer_count()-1.
  [[nodiscard]] virtual std::uint32_t id() const noexcept = 0;
  // Number of peer slots on the link (the configured peer count).
  [[nodiscard]] virtual std::uint32_t peer_count() const noexcept = 0;
  // Doorbell vectors per peer.
  [[nodiscard]] virtual std::uint32_t vector_count() const noexcept = 0;
  // Whether `peer` is currently attached (as far as this backend knows).
  [[nodiscard]] virtual bool peer_present(std::uint32_t peer) const noexcept = 0;
  // The geometry of the shared memory.
  [[nodiscard]] virtual const Layout& layout() const noexcept = 0;

  [[nodiscard]] virtual std::span<std::byte> rw_section() noexcept = 0;
  [[nodiscard]] virtual std::span<std::byte> own_output_section() noexcept = 0;
  // Precondition: peer < peer_count().
  [[nodiscard]] virtual std::span<const std::byte> output_section(
      std::uint32_t peer) const noexcept = 0;

  // Interrupts `peer` on `vector`. Writes to shared memory made before the
  // call are visible to the peer before its interrupt arrives.
  [[nodiscard]] virtual DoorbellStatus doorbell(std::uint32_t peer,
                                                std::uint32_t vector) noexcept = 0;
  // Publishes this peer's state (see peer_state.hpp) and fires vector 0 on
  // every other present peer.
  virtual void set_state(std::uint32_t value) noexcept = 0;
  // Reads `peer`'s state-table entry once. Precondition: peer < peer_count().
  [[nodiscard]] virtual std::uint32_t peer_state(std::uint32_t peer) const noexcept = 0;

 protected:
  Device() = default;
  // Not virtual on purpose: a freestanding inmate has no operator delete, and
  // nobody deletes a backend through this interface.
  ~Device() = default;
};

}  // namespace cellink::ivshmem
