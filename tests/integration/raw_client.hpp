// RawClient: the client side of QEMU's ivshmem-server protocol, by hand, so
// the tests can check the daemon's wire behaviour message by message and
// misbehave on purpose (send bytes, connect twice, hang up early).
//
// Threading: one test thread per client.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <span>
#include <vector>

#include "process.hpp"

namespace cellink::integration {

class RawClient {
 public:
  // Connects to `socket_path`; throws ExpectationFailed when nothing listens.
  explicit RawClient(const std::filesystem::path& socket_path);

  struct Received {
    bool closed = false;  // the daemon closed the connection (EOF or reset)
    std::int64_t value = 0;
    UniqueFd fd;  // invalid when the message carried none
  };
  // The next message, or the close. Throws ExpectationFailed on timeout or a
  // message with several fds.
  Received receive(milliseconds timeout = kEventTimeout);
  // The next message; throws ExpectationFailed if the connection closed.
  Received expect_message(milliseconds timeout = kEventTimeout);

  struct Greeting {
    Received version;
    Received id;
    Received memory;
    // The messages after the memory, up to and including the last of the
    // client's own `vectors` eventfds.
    std::vector<Received> eventfds;
  };
  // Receives a whole greeting on a link with `vectors` vectors.
  Greeting receive_greeting(unsigned vectors, milliseconds timeout = kEventTimeout);
  // As above, but returns nullopt when the daemon closes the connection
  // before sending anything (it refused the client).
  std::optional<Greeting> try_receive_greeting(unsigned vectors,
                                               milliseconds timeout = kEventTimeout);

  void send_bytes(std::span<const std::uint8_t> bytes);
  void close() noexcept { socket_.reset(); }
  [[nodiscard]] const std::filesystem::path& path() const noexcept { return path_; }

 private:
  std::filesystem::path path_;
  UniqueFd socket_;
};

// The values of `messages`, in order.
[[nodiscard]] std::vector<std::int64_t> values(const std::vector<RawClient::Received>& messages);
// What /proc/self/fd/<fd> links to, e.g. "anon_inode:[eventfd]".
[[nodiscard]] std::string fd_target(int fd);
// Adds 1 to an eventfd's counter.
void ring_eventfd(int fd);
// Reads an eventfd's counter once it is nonzero; throws ExpectationFailed if
// it stays 0 for `timeout`.
std::uint64_t await_eventfd(int fd, milliseconds timeout = kEventTimeout);
// Reads an eventfd's counter without waiting; 0 when nothing is pending.
std::uint64_t drain_eventfd(int fd);

}  // namespace cellink::integration
