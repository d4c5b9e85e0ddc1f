// The backends' way to fail: std::system_error with a message that names
// the device, what went wrong and what to do. Private to linux-uio.
#pragma once

#include <string>
#include <system_error>

namespace cellink::linux_uio::detail {

[[noreturn]] inline void fail(std::errc code, const std::string& what) {
  throw std::system_error(std::make_error_code(code), what);
}

[[noreturn]] inline void fail_errno(int error, const std::string& what) {
  throw std::system_error(error, std::generic_category(), what);
}

}  // namespace cellink::linux_uio::detail
