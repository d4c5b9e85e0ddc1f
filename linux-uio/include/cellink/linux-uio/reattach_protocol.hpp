// The cellink re-attach extension of the ivshmem-server protocol.
// Spec: docs/daemon-protocol.md (section "Re-attach after a daemon restart").
//
// A restarted daemon no longer holds the eventfds of the peers that kept
// running. A cellink host peer whose daemon connection dropped reconnects to
// `<runtime-dir>/<link>/<cell>.reattach.sock` (never the QEMU socket, so QEMU
// clients never see this) and sends one ReattachRequest with, in a single
// SCM_RIGHTS message, its shared-memory fd followed by its own `vectors`
// eventfds. The daemon answers with one ReattachReply. After kAccepted the
// connection carries ordinary ivshmem-server join/leave messages.
//
// Version rule: bump kReattachVersion when a field changes meaning; new
// fields take reserved bytes, which must be zero.
#pragma once

#include <cstddef>
#include <cstdint>
#include <type_traits>

namespace cellink::linux_uio::reattach {

inline constexpr std::uint32_t kRequestMagic = 0x41524c43;  // "CLRA" little-endian
inline constexpr std::uint32_t kReplyMagic = 0x52524c43;    // "CLRR" little-endian
inline constexpr std::uint16_t kReattachVersion = 1;

struct Request {
  std::uint32_t magic;        // kRequestMagic
  std::uint16_t version;      // kReattachVersion
  std::uint16_t size;         // sizeof(Request)
  std::uint32_t peer_id;      // the id this client was given before
  std::uint32_t vectors;      // eventfds attached after the shared-memory fd
  std::uint64_t memory_size;  // size of the memory object the client maps
  std::uint64_t known_peers;  // bit i: the client holds peer i's eventfds (believes it present)
};
static_assert(offsetof(Request, magic) == 0);
static_assert(offsetof(Request, version) == 4);
static_assert(offsetof(Request, size) == 6);
static_assert(offsetof(Request, peer_id) == 8);
static_assert(offsetof(Request, vectors) == 12);
static_assert(offsetof(Request, memory_size) == 16);
static_assert(offsetof(Request, known_peers) == 24);
static_assert(sizeof(Request) == 32);
static_assert(std::is_trivially_copyable_v<Request>);

enum class Status : std::uint16_t {
  accepted = 0,
  malformed = 1,         // wrong magic, version, size, peer bits or fd count
  wrong_peer = 2,        // peer_id is not the id of this socket's cell
  already_attached = 3,  // a client for this cell is connected already
  memory_mismatch = 4,   // the fd is not this link's memory and cannot be adopted
  vectors_mismatch = 5,  // vectors differs from the link's vector count
};

struct Reply {
  std::uint32_t magic;    // kReplyMagic
  std::uint16_t version;  // kReattachVersion
  std::uint16_t status;   // Status
  std::uint64_t reserved;
};
static_assert(offsetof(Reply, magic) == 0);
static_assert(offsetof(Reply, version) == 4);
static_assert(offsetof(Reply, status) == 6);
static_assert(sizeof(Reply) == 16);
static_assert(std::is_trivially_copyable_v<Reply>);

[[nodiscard]] constexpr const char* describe(Status status) noexcept {
  switch (status) {
    case Status::accepted: return "accepted";
    case Status::malformed: return "malformed re-attach request";
    case Status::wrong_peer: return "peer id does not belong to this cell's socket";
    case Status::already_attached: return "a client for this cell is already attached";
    case Status::memory_mismatch:
      return "the shared memory is not this link's and cannot be adopted "
             "(a new peer already received fresh memory)";
    case Status::vectors_mismatch: return "vector count differs from the link's";
  }
  return "unknown re-attach status";
}

}  // namespace cellink::linux_uio::reattach
