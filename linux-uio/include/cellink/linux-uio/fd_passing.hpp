// File descriptors over a UNIX stream socket (SCM_RIGHTS), in one place.
//
// Every received descriptor is owned by a UniqueFd and has O_CLOEXEC set, so
// nothing leaks however the caller bails out; a sender's descriptors are
// duplicated by the kernel and stay the sender's.
//
// Threading: free functions; callers serialise access to each socket.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <span>
#include <vector>

#include "cellink/linux-uio/unique_fd.hpp"

namespace cellink::linux_uio {

// At most this many descriptors travel in one message (1 + kMaxVectors).
inline constexpr std::size_t kMaxPassedFds = 65;

// Sends `size` bytes with `fds` attached (none when empty), in one sendmsg,
// never raising SIGPIPE. `flags` is added to the sendmsg flags (e.g.
// MSG_DONTWAIT). Returns 0, or the errno value; EPROTO for a short send.
[[nodiscard]] int send_with_fds(int socket, const void* bytes, std::size_t size,
                                std::span<const int> fds, int flags = 0) noexcept;

struct Received {
  ssize_t bytes = -1;         // recvmsg's result: 0 at end of stream, -1 on error
  int error = 0;              // errno when bytes < 0
  std::vector<UniqueFd> fds;  // every descriptor that arrived, in order
  bool truncated = false;     // the data or the descriptors did not all fit
};

// One recvmsg of at most `size` bytes into `bytes`, collecting up to
// kMaxPassedFds descriptors. Retries on EINTR.
[[nodiscard]] Received receive_with_fds(int socket, void* bytes, std::size_t size, int flags = 0);

}  // namespace cellink::linux_uio
