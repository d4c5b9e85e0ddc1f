// Connecting to a UNIX stream socket by path. See unix_socket.hpp.
#include "cellink/linux-uio/unix_socket.hpp"

#include <sys/socket.h>
#include <sys/un.h>

#include <cerrno>
#include <cstring>
#include <string>

namespace cellink::linux_uio {

UniqueFd connect_unix(const std::filesystem::path& path, int& error) {
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  const std::string text = path.string();
  if (text.size() >= sizeof(address.sun_path)) {
    error = ENAMETOOLONG;
    return {};
  }
  std::memcpy(address.sun_path, text.c_str(), text.size() + 1);
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) {
    error = errno;
    return {};
  }
  while (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&address), sizeof(address)) != 0) {
    if (errno == EINTR) continue;
    error = errno;
    return {};
  }
  return fd;
}

}  // namespace cellink::linux_uio
