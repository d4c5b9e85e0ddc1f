// Connecting to a UNIX stream socket by path.
//
// Threading: a free function; the returned fd belongs to the caller.
#pragma once

#include <filesystem>

#include "cellink/linux-uio/unique_fd.hpp"

namespace cellink::linux_uio {

// Connects a SOCK_STREAM | SOCK_CLOEXEC socket to `path`. On failure returns
// an invalid UniqueFd and sets `error` to the errno value (ENAMETOOLONG when
// the path does not fit in sockaddr_un).
[[nodiscard]] UniqueFd connect_unix(const std::filesystem::path& path, int& error);

}  // namespace cellink::linux_uio
