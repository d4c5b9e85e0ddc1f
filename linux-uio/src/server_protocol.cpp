// ivshmem-server protocol wire primitives. See server_protocol.hpp.
#include "cellink/linux-uio/server_protocol.hpp"

#include <cerrno>
#include <cstring>

#include "cellink/linux-uio/fd_passing.hpp"

namespace cellink::linux_uio::server_protocol {

// The protocol is little-endian; so is every host cellink runs on.
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__);

int send_message(int socket, std::int64_t value, int fd) noexcept {
  const int fds[1] = {fd};
  return send_with_fds(socket, &value, sizeof(value),
                       fd >= 0 ? std::span<const int>(fds) : std::span<const int>());
}

ReceiveStatus receive_message(int socket, Message& out, int& error) noexcept {
  unsigned char bytes[sizeof(std::int64_t)];
  std::size_t have = 0;
  std::vector<UniqueFd> fds;
  bool truncated = false;
  try {
    while (have < sizeof(bytes)) {
      Received part = receive_with_fds(socket, bytes + have, sizeof(bytes) - have);
      if (part.bytes < 0) {
        if ((part.error == EAGAIN || part.error == EWOULDBLOCK) && have == 0) {
          return ReceiveStatus::would_block;
        }
        error = part.error;
        return ReceiveStatus::error;
      }
      for (UniqueFd& fd : part.fds) fds.push_back(std::move(fd));
      truncated = truncated || part.truncated;
      if (part.bytes == 0) return ReceiveStatus::end_of_stream;
      have += static_cast<std::size_t>(part.bytes);
    }
  } catch (const std::bad_alloc&) {
    error = ENOMEM;
    return ReceiveStatus::error;
  }
  if (fds.size() > 1 || truncated) return ReceiveStatus::too_many_fds;
  std::int64_t value = 0;
  std::memcpy(&value, bytes, sizeof(value));
  out.value = value;
  out.fd = fds.empty() ? UniqueFd() : std::move(fds.front());
  return ReceiveStatus::message;
}

}  // namespace cellink::linux_uio::server_protocol
