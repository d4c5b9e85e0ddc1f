// QEMU's ivshmem-server protocol: the wire primitives.
// Spec: docs/daemon-protocol.md (section "ivshmem-server protocol").
//
// Every message is one little-endian int64 on a UNIX stream socket, with at
// most one file descriptor attached by SCM_RIGHTS. The server sends:
//   1. kProtocolVersion, no fd;
//   2. the client's peer id, no fd;
//   3. kSharedMemoryId with the shared-memory fd;
//   4. for each present peer P: P, N times, each with one eventfd;
//   5. the client's own id, N times, with the eventfds it is interrupted on;
//   6. later: P with an fd (P joined, N times) or P without one (P left).
// Clients never send anything: a byte from a client gets it dropped.
//
// cellink addition: a connection the daemon refuses (its cell is already
// attached) gets kRefusedVersion in place of the version, then EOF. QEMU
// fails its device realize with "server sent version -2, expecting 0"
// instead of spinning forever on the closed socket, as QEMU 7.2 does on a
// bare close during the greeting.
//
// Threading: free functions; callers serialise access to each socket.
#pragma once

#include <cstdint>

#include "cellink/linux-uio/unique_fd.hpp"

namespace cellink::linux_uio::server_protocol {

inline constexpr std::int64_t kProtocolVersion = 0;
inline constexpr std::int64_t kSharedMemoryId = -1;
inline constexpr std::int64_t kRefusedVersion = -2;

struct Message {
  std::int64_t value = 0;
  UniqueFd fd;  // invalid when the message carried none
};

// Sends `value`, with `fd` attached when fd >= 0. Never raises SIGPIPE.
// Returns 0, or the errno value (EAGAIN when a non-blocking socket is full;
// the message was then not sent at all).
[[nodiscard]] int send_message(int socket, std::int64_t value, int fd = -1) noexcept;

enum class ReceiveStatus : std::uint8_t {
  message,        // `out` holds a message
  end_of_stream,  // the other side closed the connection
  would_block,    // non-blocking socket with nothing to read
  error,          // `error` holds the errno value
  too_many_fds,   // a message carried more than one fd (all were closed)
};

// Receives one message. Accumulates a split 8-byte value on a blocking
// socket. File descriptors arrive with O_CLOEXEC set.
[[nodiscard]] ReceiveStatus receive_message(int socket, Message& out, int& error) noexcept;

}  // namespace cellink::linux_uio::server_protocol
