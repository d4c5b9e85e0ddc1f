// Connection: the server side of one ivshmem-server protocol socket.
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <fstream>
#include <system_error>

#include <boost/asio/post.hpp>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "cellink/linux-uio/server_protocol.hpp"
#include "daemon_state.hpp"

namespace cellink::hypervisor {

Connection::Connection(local_stream::socket socket, Daemon::State& daemon, std::size_t link,
                       std::uint32_t peer)
    : socket_(std::move(socket)), daemon_(daemon), link_(link), peer_(peer) {
  boost::system::error_code ignored;
  socket_.non_blocking(true, ignored);
  ucred credentials{};
  socklen_t length = sizeof(credentials);
  if (::getsockopt(socket_.native_handle(), SOL_SOCKET, SO_PEERCRED, &credentials, &length) == 0) {
    pid_ = credentials.pid;
    std::ifstream(fmt::format("/proc/{}/comm", pid_)) >> program_;
  }
  if (program_.empty()) program_ = "unknown";
}

bool Connection::is_qemu() const noexcept {
  return program_.rfind("qemu", 0) == 0;
}

bool Connection::hung_up() noexcept {
  if (closed_) return true;
  char byte = 0;
  const ssize_t got = ::recv(socket_.native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
  return got == 0 || (got < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

void Connection::send(std::int64_t value, int fd) {
  if (closed_) return;
  if (queue_.empty()) {
    const int error = linux_uio::server_protocol::send_message(socket_.native_handle(), value, fd);
    if (error == 0) return;
    if (error != EAGAIN && error != EWOULDBLOCK) {
      fail(fmt::format("send failed: {}", std::system_category().message(error)));
      return;
    }
  }
  if (queue_.size() >= kMaxQueued) {
    fail(fmt::format("stopped reading its socket ({} messages queued)", queue_.size()));
    return;
  }
  queue_.push_back({value, UniqueFd(fd >= 0 ? ::fcntl(fd, F_DUPFD_CLOEXEC, 0) : -1)});
  flush();
}

void Connection::flush() {
  if (waiting_for_write_ || closed_) return;
  waiting_for_write_ = true;
  socket_.async_wait(local_stream::socket::wait_write, [self = shared_from_this()](
                                                           const boost::system::error_code& error) {
    self->waiting_for_write_ = false;
    if (error || self->closed_) return;
    while (!self->queue_.empty()) {
      Pending& next = self->queue_.front();
      const int failure = linux_uio::server_protocol::send_message(self->socket_.native_handle(),
                                                                   next.value, next.fd.get());
      if (failure == EAGAIN || failure == EWOULDBLOCK) break;
      if (failure != 0) {
        self->fail(fmt::format("send failed: {}", std::system_category().message(failure)));
        return;
      }
      self->queue_.pop_front();
    }
    if (!self->queue_.empty()) self->flush();
  });
}

void Connection::start_monitor() {
  socket_.async_wait(local_stream::socket::wait_read, [self = shared_from_this()](
                                                          const boost::system::error_code& error) {
    if (error || self->closed_) return;
    char bytes[64];
    const ssize_t got = ::recv(self->socket_.native_handle(), bytes, sizeof(bytes), MSG_DONTWAIT);
    if (got == 0) {
      self->fail("closed its connection");
    } else if (got > 0) {
      self->fail(
          fmt::format("sent {}{} unexpected byte(s); ivshmem-server protocol clients "
                      "never send data, so it was dropped",
                      got == static_cast<ssize_t>(sizeof(bytes)) ? "at least " : "", got));
    } else if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
      self->start_monitor();
    } else {
      self->fail(std::system_category().message(errno));
    }
  });
}

void Connection::fail(const std::string& reason) {
  if (closed_) return;
  close();
  // Deferred: the caller may be iterating over the link's peers.
  asio::post(daemon_.io_, [self = shared_from_this(), reason] {
    PeerSlot& slot = self->daemon_.links_[self->link_].slots[self->peer_];
    if (slot.connection == self) self->daemon_.peer_left(self->link_, self->peer_, reason);
  });
}

void Connection::close() noexcept {
  closed_ = true;
  queue_.clear();
  boost::system::error_code ignored;
  socket_.cancel(ignored);
  socket_.close(ignored);
}

}  // namespace cellink::hypervisor
