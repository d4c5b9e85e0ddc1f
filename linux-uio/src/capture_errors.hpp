// The noexcept overloads of the device factories (HostDevice::connect,
// UioDevice::open): run the throwing factory and turn what it throws into
// an error code plus the exception's text. Private to linux-uio.
#pragma once

#include <exception>
#include <string>
#include <system_error>

namespace cellink::linux_uio::detail {

// Returns make()'s result and clears `error`; on an exception returns
// nullptr, sets `error` (std::system_error's code, else io_error) and
// `detail` (its what()).
template <typename Make>
auto capture_errors(const Make& make, std::error_code& error, std::string& detail) noexcept
    -> decltype(make()) {
  try {
    auto made = make();
    error.clear();
    return made;
  } catch (const std::system_error& failure) {
    error = failure.code();
    detail = failure.what();
  } catch (const std::exception& failure) {
    error = std::make_error_code(std::errc::io_error);
    detail = failure.what();
  }
  return nullptr;
}

}  // namespace cellink::linux_uio::detail
