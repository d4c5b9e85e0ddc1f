// RawClient for the integration tests. See raw_client.hpp.
#include "raw_client.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <system_error>

#include "cellink/linux-uio/server_protocol.hpp"
#include "cellink/linux-uio/unix_socket.hpp"

namespace cellink::integration {
namespace {

namespace server_protocol = linux_uio::server_protocol;

// Waits until `fd` is readable; false on timeout.
bool wait_readable(int fd, milliseconds timeout) {
  const Clock::time_point deadline = Clock::now() + timeout;
  for (;;) {
    const auto left = std::chrono::ceil<milliseconds>(deadline - Clock::now()).count();
    pollfd readable{fd, POLLIN, 0};
    const int ready = ::poll(&readable, 1, static_cast<int>(std::max<long>(0, left)));
    if (ready > 0) return true;
    if (ready == 0 || errno != EINTR) return false;
  }
}

}  // namespace

RawClient::RawClient(const std::filesystem::path& socket_path) : path_(socket_path) {
  int error = 0;
  socket_ = linux_uio::connect_unix(path_, error);
  if (!socket_) {
    throw ExpectationFailed("cannot connect to " + path_.string() + ": " +
                            std::system_category().message(error));
  }
}

RawClient::Received RawClient::receive(milliseconds timeout) {
  if (!wait_readable(socket_.get(), timeout)) {
    throw ExpectationFailed("no message from the daemon on " + path_.string() + " within " +
                            std::to_string(timeout.count()) + " ms");
  }
  server_protocol::Message message;
  int error = 0;
  Received received;
  switch (server_protocol::receive_message(socket_.get(), message, error)) {
    case server_protocol::ReceiveStatus::message:
      received.value = message.value;
      received.fd = std::move(message.fd);
      return received;
    case server_protocol::ReceiveStatus::end_of_stream: received.closed = true; return received;
    case server_protocol::ReceiveStatus::error:
      // A peer that closes with our bytes unread makes us see a reset.
      if (error == ECONNRESET) {
        received.closed = true;
        return received;
      }
      throw ExpectationFailed("receive on " + path_.string() + ": " +
                              std::system_category().message(error));
    case server_protocol::ReceiveStatus::too_many_fds:
      throw ExpectationFailed("a message on " + path_.string() + " carried several fds");
    case server_protocol::ReceiveStatus::would_block: break;
  }
  throw ExpectationFailed("receive on " + path_.string() + ": readable but nothing to read");
}

RawClient::Received RawClient::expect_message(milliseconds timeout) {
  Received received = receive(timeout);
  if (received.closed) {
    throw ExpectationFailed("the daemon closed " + path_.string() + " instead of sending");
  }
  return received;
}

RawClient::Greeting RawClient::receive_greeting(unsigned vectors, milliseconds timeout) {
  std::optional<Greeting> greeting = try_receive_greeting(vectors, timeout);
  if (!greeting) {
    throw ExpectationFailed("the daemon closed " + path_.string() + " without a greeting");
  }
  return std::move(*greeting);
}

std::optional<RawClient::Greeting> RawClient::try_receive_greeting(unsigned vectors,
                                                                   milliseconds timeout) {
  Greeting greeting;
  greeting.version = receive(timeout);
  if (greeting.version.closed) return std::nullopt;
  greeting.id = expect_message(timeout);
  greeting.memory = expect_message(timeout);
  unsigned own = 0;
  while (own < vectors) {
    greeting.eventfds.push_back(expect_message(timeout));
    if (greeting.eventfds.back().value == greeting.id.value) ++own;
  }
  return greeting;
}

void RawClient::send_bytes(std::span<const std::uint8_t> bytes) {
  if (::send(socket_.get(), bytes.data(), bytes.size(), MSG_NOSIGNAL) !=
      static_cast<ssize_t>(bytes.size())) {
    throw ExpectationFailed("send on " + path_.string() + ": " +
                            std::system_category().message(errno));
  }
}

std::vector<std::int64_t> values(const std::vector<RawClient::Received>& messages) {
  std::vector<std::int64_t> out;
  out.reserve(messages.size());
  for (const RawClient::Received& message : messages) out.push_back(message.value);
  return out;
}

std::string fd_target(int fd) {
  std::error_code error;
  const auto target = std::filesystem::read_symlink("/proc/self/fd/" + std::to_string(fd), error);
  return error ? "(" + error.message() + ")" : target.string();
}

void ring_eventfd(int fd) {
  const std::uint64_t one = 1;
  if (::write(fd, &one, sizeof(one)) != sizeof(one)) {
    throw ExpectationFailed("eventfd write: " + std::system_category().message(errno));
  }
}

std::uint64_t await_eventfd(int fd, milliseconds timeout) {
  if (!wait_readable(fd, timeout)) {
    throw ExpectationFailed("eventfd " + std::to_string(fd) + " was not rung within " +
                            std::to_string(timeout.count()) + " ms");
  }
  return drain_eventfd(fd);
}

std::uint64_t drain_eventfd(int fd) {
  // The daemon creates the eventfds non-blocking; this does not rely on it.
  pollfd readable{fd, POLLIN, 0};
  if (::poll(&readable, 1, 0) != 1) return 0;
  std::uint64_t count = 0;
  if (::read(fd, &count, sizeof(count)) != sizeof(count)) return 0;
  return count;
}

}  // namespace cellink::integration
