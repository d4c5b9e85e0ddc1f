// SCM_RIGHTS send and receive. See fd_passing.hpp.
#include "cellink/linux-uio/fd_passing.hpp"

#include <sys/socket.h>

#include <array>
#include <cerrno>
#include <cstring>

namespace cellink::linux_uio {

int send_with_fds(int socket, const void* bytes, std::size_t size, std::span<const int> fds,
                  int flags) noexcept {
  if (fds.size() > kMaxPassedFds) return E2BIG;
  iovec payload{const_cast<void*>(bytes), size};
  msghdr header{};
  header.msg_iov = &payload;
  header.msg_iovlen = 1;
  alignas(cmsghdr) std::array<char, CMSG_SPACE(sizeof(int) * kMaxPassedFds)> control{};
  if (!fds.empty()) {
    header.msg_control = control.data();
    header.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
    cmsghdr* cmsg = CMSG_FIRSTHDR(&header);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(cmsg), fds.data(), sizeof(int) * fds.size());
  }
  for (;;) {
    const ssize_t sent = ::sendmsg(socket, &header, MSG_NOSIGNAL | flags);
    if (sent == static_cast<ssize_t>(size)) return 0;
    if (sent >= 0) return EPROTO;  // stream sockets take small messages whole
    if (errno == EINTR) continue;
    return errno;
  }
}

Received receive_with_fds(int socket, void* bytes, std::size_t size, int flags) {
  Received received;
  iovec payload{bytes, size};
  alignas(cmsghdr) std::array<char, CMSG_SPACE(sizeof(int) * kMaxPassedFds)> control{};
  msghdr header{};
  header.msg_iov = &payload;
  header.msg_iovlen = 1;
  header.msg_control = control.data();
  header.msg_controllen = control.size();
  do {
    received.bytes = ::recvmsg(socket, &header, MSG_CMSG_CLOEXEC | flags);
  } while (received.bytes < 0 && errno == EINTR);
  if (received.bytes < 0) {
    received.error = errno;
    return received;
  }
  for (cmsghdr* cmsg = CMSG_FIRSTHDR(&header); cmsg != nullptr; cmsg = CMSG_NXTHDR(&header, cmsg)) {
    if (cmsg->cmsg_level != SOL_SOCKET || cmsg->cmsg_type != SCM_RIGHTS) continue;
    const std::size_t count = (cmsg->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (std::size_t i = 0; i < count; ++i) {
      int fd = -1;
      std::memcpy(&fd, CMSG_DATA(cmsg) + i * sizeof(int), sizeof(int));
      received.fds.emplace_back(fd);
    }
  }
  received.truncated = (header.msg_flags & (MSG_CTRUNC | MSG_TRUNC)) != 0;
  return received;
}

}  // namespace cellink::linux_uio
