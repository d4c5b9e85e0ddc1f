// HostDevice: a Linux process as a cell, through `cellink daemon`.
#include "cellink/linux-uio/host_device.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>

#include "capture_errors.hpp"
#include "cellink/linux-uio/fd_passing.hpp"
#include "cellink/linux-uio/interrupt_epoll.hpp"
#include "cellink/linux-uio/reattach_protocol.hpp"
#include "cellink/linux-uio/server_protocol.hpp"
#include "cellink/linux-uio/unix_socket.hpp"

namespace cellink::linux_uio {
namespace {

using Clock = std::chrono::steady_clock;
using server_protocol::Message;
using server_protocol::ReceiveStatus;

// epoll tags: own vectors use their index, the daemon socket this value.
constexpr std::uint64_t kSocketTag = ~std::uint64_t{0};
constexpr std::uint64_t kWakeTag = ~std::uint64_t{1};  // the fd add_wake_fd() gave

[[noreturn]] void fail(std::errc code, const std::string& what) {
  throw std::system_error(std::make_error_code(code), what);
}

// Waits until `fd` is readable or `deadline` passes. Returns false on timeout.
bool wait_readable(int fd, Clock::time_point deadline) {
  for (;;) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) return false;
    pollfd entry{fd, POLLIN, 0};
    const int ready = ::poll(&entry, 1, static_cast<int>(left.count()));
    if (ready > 0) return true;
    if (ready < 0 && errno != EINTR) return false;
  }
}

void set_nonblocking(int fd) {
  const int flags = ::fcntl(fd, F_GETFL);
  if (flags >= 0) (void)::fcntl(fd, F_SETFL, flags | O_NONBLOCK);
}

}  // namespace

const char* event_kind_name(DeviceEvent::Kind kind) noexcept {
  switch (kind) {
    case DeviceEvent::Kind::doorbell: return "doorbell";
    case DeviceEvent::Kind::peer_joined: return "peer_joined";
    case DeviceEvent::Kind::peer_left: return "peer_left";
    case DeviceEvent::Kind::daemon_lost: return "daemon_lost";
    case DeviceEvent::Kind::daemon_reattached: return "daemon_reattached";
    case DeviceEvent::Kind::reattach_refused: return "reattach_refused";
  }
  return "unknown";
}

std::unique_ptr<HostDevice> HostDevice::connect(const HostDeviceOptions& options) {
  std::unique_ptr<HostDevice> device(new HostDevice());
  device->options_ = options;
  device->socket_path_ = options.runtime_dir / options.link / (options.cell + ".sock");
  device->reattach_path_ = options.runtime_dir / options.link / (options.cell + ".reattach.sock");
  int error = 0;
  device->socket_ = connect_unix(device->socket_path_, error);
  if (!device->socket_) {
    const std::string where = device->socket_path_.string();
    if (error == ENOENT || error == ECONNREFUSED) {
      throw std::system_error(
          error, std::generic_category(),
          "cannot connect to " + where + ": no daemon serves cell '" + options.cell +
              "' on link '" + options.link + "' (start `cellink daemon --runtime-dir " +
              options.runtime_dir.string() + "` and check the names with `cellink status`)");
    }
    throw std::system_error(error, std::generic_category(), "cannot connect to " + where);
  }
  device->complete_greeting(options.greeting_timeout);
  return device;
}

std::unique_ptr<HostDevice> HostDevice::connect(const HostDeviceOptions& options,
                                                std::error_code& error,
                                                std::string& detail) noexcept {
  return detail::capture_errors([&] { return connect(options); }, error, detail);
}

HostDevice::~HostDevice() {
  if (memory_ != nullptr) ::munmap(memory_, memory_size_);
}

void HostDevice::complete_greeting(std::chrono::milliseconds timeout) {
  const Clock::time_point deadline = Clock::now() + timeout;
  const std::string where = socket_path_.string();
  auto next = [&](const char* expecting) {
    if (!wait_readable(socket_.get(), deadline)) {
      fail(std::errc::timed_out,
           where + ": the daemon did not complete the greeting (waiting for " + expecting + ")");
    }
    Message message;
    int error = 0;
    switch (server_protocol::receive_message(socket_.get(), message, error)) {
      case ReceiveStatus::message: return message;
      case ReceiveStatus::end_of_stream:
        fail(std::errc::connection_refused,
             where + ": the daemon closed the connection during the greeting (waiting for " +
                 expecting +
                 "); another client may already be attached as this cell — see "
                 "the daemon's log or `cellink status`");
      case ReceiveStatus::too_many_fds:
        fail(std::errc::protocol_error, where + ": a greeting message carried several fds");
      case ReceiveStatus::would_block:
      case ReceiveStatus::error: break;
    }
    throw std::system_error(error, std::generic_category(), where + ": greeting failed");
  };

  Message version = next("the protocol version");
  if (version.value == server_protocol::kRefusedVersion) {
    fail(std::errc::connection_refused,
         where + ": the daemon refused the connection: cell '" + options_.cell + "' on link '" +
             options_.link + "' is already attached by another client (see `cellink status`)");
  }
  if (version.value != server_protocol::kProtocolVersion || version.fd) {
    fail(std::errc::protocol_error, where + ": unsupported ivshmem-server protocol version " +
                                        std::to_string(version.value) + " (expected 0)");
  }
  Message own_id = next("this peer's id");
  if (own_id.value < 0 || own_id.value >= ivshmem::kMaxPeers || own_id.fd) {
    fail(std::errc::protocol_error,
         where + ": invalid peer id " + std::to_string(own_id.value) + " from the daemon");
  }
  id_ = static_cast<std::uint32_t>(own_id.value);
  Message memory = next("the shared-memory fd");
  if (memory.value != server_protocol::kSharedMemoryId || !memory.fd) {
    fail(std::errc::protocol_error,
         where + ": expected the shared-memory fd (-1), got " + std::to_string(memory.value));
  }
  map_memory(std::move(memory.fd));
  if (id_ >= layout_.peers()) {
    fail(std::errc::protocol_error, where + ": peer id " + std::to_string(id_) +
                                        " is outside the link's " +
                                        std::to_string(layout_.peers()) + " peers");
  }

  epoll_.reset(::epoll_create1(EPOLL_CLOEXEC));
  if (!epoll_) fail(std::errc::io_error, "epoll_create1 failed");
  std::vector<DeviceEvent> ignored;
  while (own_eventfds_.size() < vectors_) {
    Message message = next("this peer's eventfds");
    handle_message(message.value, std::move(message.fd), ignored);
    if (!socket_) fail(std::errc::protocol_error, where + ": " + ignored.back().detail);
  }
  for (std::uint32_t vector = 0; vector < vectors_; ++vector) {
    set_nonblocking(own_eventfds_[vector].get());
    epoll_event watch{};
    watch.events = EPOLLIN;
    watch.data.u64 = vector;
    if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, own_eventfds_[vector].get(), &watch) != 0) {
      fail(std::errc::io_error, "epoll_ctl on an own eventfd failed");
    }
  }
  watch_socket();
}

void HostDevice::map_memory(UniqueFd memory) {
  const std::string where = socket_path_.string();
  struct stat info {};
  if (::fstat(memory.get(), &info) != 0) fail(std::errc::io_error, where + ": fstat on memory");
  const auto size = static_cast<std::uint64_t>(info.st_size);
  if (!ivshmem::is_power_of_two(size) || size < ivshmem::kPageSize) {
    fail(std::errc::protocol_error, where + ": shared memory of " + std::to_string(size) +
                                        " bytes is not a power of two of at least a page");
  }
  void* mapped = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, memory.get(), 0);
  if (mapped == MAP_FAILED) {
    throw std::system_error(errno, std::generic_category(), where + ": mmap of shared memory");
  }
  memory_ = static_cast<std::byte*>(mapped);
  memory_size_ = size;
  memory_fd_ = std::move(memory);

  // Copy the descriptor out once: a v1 peer could rewrite it under us.
  ivshmem::LinkDescriptor descriptor{};
  std::memcpy(&descriptor, memory_ + ivshmem::kLinkDescriptorOffset, sizeof(descriptor));
  const ivshmem::DescriptorError error = ivshmem::validate(descriptor, size, layout_);
  if (error != ivshmem::DescriptorError::ok) {
    fail(std::errc::protocol_error,
         where + ": invalid link descriptor: " + ivshmem::describe(error));
  }
  vectors_ = descriptor.vectors;
  link_name_ = descriptor.name;
  peers_.resize(layout_.peers());
}

void HostDevice::watch_socket() {
  set_nonblocking(socket_.get());
  epoll_event watch{};
  watch.events = EPOLLIN | EPOLLRDHUP;
  watch.data.u64 = kSocketTag;
  if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, socket_.get(), &watch) != 0) {
    fail(std::errc::io_error, "epoll_ctl on the daemon socket failed");
  }
  connected_.store(true, std::memory_order_relaxed);
}

void HostDevice::fail_protocol(const std::string& what, std::vector<DeviceEvent>& events) {
  socket_.reset();
  connected_.store(false, std::memory_order_relaxed);
  events.push_back({DeviceEvent::Kind::daemon_lost, 0, 0, 0, "protocol violation: " + what});
  // A daemon that breaks the protocol is not one to re-attach to.
  reattach_enabled_ = false;
}

void HostDevice::handle_message(std::int64_t value, UniqueFd fd, std::vector<DeviceEvent>& events) {
  if (value < 0 || value >= static_cast<std::int64_t>(layout_.peers())) {
    fail_protocol("peer id " + std::to_string(value) + " outside the link", events);
    return;
  }
  const auto peer = static_cast<std::uint32_t>(value);
  if (peer == id_) {
    // Only the greeting hands us our own eventfds; later ones are ignored.
    if (fd && own_eventfds_.size() < vectors_) own_eventfds_.push_back(std::move(fd));
    return;
  }
  std::lock_guard lock(peers_mutex_);
  PeerDoorbells& doorbells = peers_[peer];
  if (!fd) {
    const bool was_known = doorbells.present || !doorbells.eventfds.empty();
    doorbells.eventfds.clear();
    doorbells.present = false;
    if (was_known) events.push_back({DeviceEvent::Kind::peer_left, 0, 0, peer, {}});
    return;
  }
  // A complete set followed by another fd is a fresh join (e.g. the peer
  // re-attached to a restarted daemon): the new eventfds replace the old.
  if (doorbells.eventfds.size() == vectors_) doorbells.eventfds.clear();
  doorbells.eventfds.push_back(std::move(fd));
  if (doorbells.eventfds.size() == vectors_) {
    const bool already_present = doorbells.present;
    doorbells.present = true;
    if (!already_present) {
      events.push_back({DeviceEvent::Kind::peer_joined, 0, 0, peer, {}});
      // The joiner may have read our state entry before a set_state() that
      // rang only the peers known then (it did not know this one yet): a
      // vector-0 doorbell makes it read the entry again. Nothing to say
      // while our entry is 0. The state load pairs with set_state()'s store
      // in this process (relaxed would do; acquire as everywhere else).
      if (peer_state(id_) != 0) {
        const std::uint64_t one = 1;
        (void)::write(doorbells.eventfds[0].get(), &one, sizeof(one));
      }
    }
  }
}

bool HostDevice::peer_present(std::uint32_t peer) const noexcept {
  if (peer == id_) return true;
  std::lock_guard lock(peers_mutex_);
  return peer < peers_.size() && peers_[peer].present;
}

std::span<std::byte> HostDevice::rw_section() noexcept {
  const ivshmem::Section section = layout_.rw_section();
  return {memory_ + section.offset, section.size};
}

std::span<std::byte> HostDevice::own_output_section() noexcept {
  const ivshmem::Section section = layout_.output_section(id_);
  return {memory_ + section.offset, section.size};
}

std::span<const std::byte> HostDevice::output_section(std::uint32_t peer) const noexcept {
  const ivshmem::Section section = layout_.output_section(peer);
  return {memory_ + section.offset, section.size};
}

ivshmem::DoorbellStatus HostDevice::doorbell(std::uint32_t peer, std::uint32_t vector) noexcept {
  if (peer >= layout_.peers()) return ivshmem::DoorbellStatus::no_such_peer;
  if (vector >= vectors_) return ivshmem::DoorbellStatus::no_such_vector;
  // The eventfd write is a syscall: the kernel's locking orders every prior
  // store to shared memory before the wake-up; pairs with the peer's read().
  const std::uint64_t one = 1;
  if (peer == id_) {
    return ::write(own_eventfds_[vector].get(), &one, sizeof(one)) == sizeof(one)
               ? ivshmem::DoorbellStatus::ok
               : ivshmem::DoorbellStatus::failed;
  }
  std::lock_guard lock(peers_mutex_);
  const PeerDoorbells& doorbells = peers_[peer];
  if (!doorbells.present) return ivshmem::DoorbellStatus::peer_absent;
  return ::write(doorbells.eventfds[vector].get(), &one, sizeof(one)) == sizeof(one)
             ? ivshmem::DoorbellStatus::ok
             : ivshmem::DoorbellStatus::failed;
}

void HostDevice::set_state(std::uint32_t value) noexcept {
  auto* entry = reinterpret_cast<std::uint32_t*>(memory_ + layout_.state_entry_offset(id_));
  // Release: everything written before the state change is visible to a peer
  // that reads the new value; pairs with the acquire load in peer_state().
  std::atomic_ref<std::uint32_t>(*entry).store(value, std::memory_order_release);
  for (std::uint32_t peer = 0; peer < layout_.peers(); ++peer) {
    if (peer != id_) (void)doorbell(peer, 0);
  }
}

std::uint32_t HostDevice::peer_state(std::uint32_t peer) const noexcept {
  auto* entry = reinterpret_cast<std::uint32_t*>(memory_ + layout_.state_entry_offset(peer));
  // Acquire: pairs with the release store in the writer's set_state() (or the
  // daemon's reset of a departed peer's entry).
  return std::atomic_ref<std::uint32_t>(*entry).load(std::memory_order_acquire);
}

std::vector<DeviceEvent> HostDevice::wait(std::chrono::milliseconds timeout) {
  std::vector<DeviceEvent> events;
  const Clock::time_point deadline = wait_deadline(timeout);
  for (;;) {
    if (!socket_ && reattach_enabled_ && options_.reattach &&
        Clock::now() >= next_reattach_attempt_) {
      try_reattach(events);
    }
    if (!events.empty()) return events;

    Clock::time_point wake = deadline;
    if (!socket_ && reattach_enabled_ && options_.reattach) {
      wake = std::min(wake, next_reattach_attempt_);
    }
    epoll_event ready[16];
    const int count = ::epoll_wait(epoll_.get(), ready, 16, epoll_timeout_until(wake));
    if (count < 0) {
      if (errno == EINTR) continue;
      throw std::system_error(errno, std::generic_category(), "epoll_wait on HostDevice");
    }
    // Only the eventfds epoll reported: each read is a system call on a
    // blocking receiver's wake-up path.
    std::uint64_t vectors = 0;  // bit v: our eventfd for vector v is readable
    bool woken = false;
    for (int i = 0; i < count; ++i) {
      if (ready[i].data.u64 == kSocketTag) {
        drain_socket(events);
      } else if (ready[i].data.u64 == kWakeTag) {
        woken = true;
      } else if (ready[i].data.u64 < vectors_) {
        vectors |= std::uint64_t{1} << ready[i].data.u64;
      }
    }
    drain_own_eventfds(vectors, events);
    if (!events.empty() || woken || Clock::now() >= deadline) return events;
  }
}

bool HostDevice::add_wake_fd(int fd) {
  epoll_event watch{};
  watch.events = EPOLLIN;
  watch.data.u64 = kWakeTag;
  if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &watch) != 0) {
    throw std::system_error(errno, std::generic_category(), "epoll_ctl on the wake-up fd");
  }
  return true;
}

void HostDevice::drain_own_eventfds(std::uint64_t vectors, std::vector<DeviceEvent>& events) {
  for (std::uint32_t vector = 0; vector < vectors_; ++vector) {
    if ((vectors & (std::uint64_t{1} << vector)) == 0) continue;
    std::uint64_t count = 0;
    if (::read(own_eventfds_[vector].get(), &count, sizeof(count)) == sizeof(count)) {
      events.push_back({DeviceEvent::Kind::doorbell, vector, count, 0, {}});
    }
  }
}

void HostDevice::drain_socket(std::vector<DeviceEvent>& events) {
  while (socket_) {
    Message message;
    int error = 0;
    switch (server_protocol::receive_message(socket_.get(), message, error)) {
      case ReceiveStatus::message:
        handle_message(message.value, std::move(message.fd), events);
        break;
      case ReceiveStatus::would_block: return;
      case ReceiveStatus::too_many_fds:
        fail_protocol("a message carried several fds", events);
        return;
      case ReceiveStatus::end_of_stream:
      case ReceiveStatus::error: on_daemon_lost(events); return;
    }
  }
}

void HostDevice::on_daemon_lost(std::vector<DeviceEvent>& events) {
  socket_.reset();  // closing the only reference also removes it from epoll
  connected_.store(false, std::memory_order_relaxed);
  events.push_back({DeviceEvent::Kind::daemon_lost, 0, 0, 0,
                    "daemon connection closed; existing doorbells keep working"});
  next_reattach_attempt_ = Clock::now();
}

void HostDevice::try_reattach(std::vector<DeviceEvent>& events) {
  next_reattach_attempt_ = Clock::now() + options_.reattach_interval;
  int error = 0;
  UniqueFd candidate = connect_unix(reattach_path_, error);
  if (!candidate) return;  // daemon still down: try again later

  reattach::Request request{};
  request.magic = reattach::kRequestMagic;
  request.version = reattach::kReattachVersion;
  request.size = sizeof(request);
  request.peer_id = id_;
  request.vectors = vectors_;
  request.memory_size = memory_size_;
  {
    std::lock_guard lock(peers_mutex_);
    for (std::uint32_t peer = 0; peer < peers_.size(); ++peer) {
      if (peers_[peer].present) request.known_peers |= std::uint64_t{1} << peer;
    }
  }

  std::vector<int> fds;
  fds.push_back(memory_fd_.get());
  for (const UniqueFd& fd : own_eventfds_) fds.push_back(fd.get());
  if (send_with_fds(candidate.get(), &request, sizeof(request), fds) != 0) return;
  reattach::Reply reply{};
  if (!wait_readable(candidate.get(), Clock::now() + std::chrono::seconds(2)) ||
      ::recv(candidate.get(), &reply, sizeof(reply), MSG_WAITALL) !=
          static_cast<ssize_t>(sizeof(reply))) {
    return;  // daemon restarting again, or not answering: retry later
  }
  if (reply.magic != reattach::kReplyMagic || reply.version != reattach::kReattachVersion) {
    events.push_back({DeviceEvent::Kind::reattach_refused, 0, 0, 0,
                      "the daemon's re-attach reply is malformed"});
    reattach_enabled_ = false;
    return;
  }
  const auto status = static_cast<reattach::Status>(reply.status);
  if (status != reattach::Status::accepted) {
    events.push_back({DeviceEvent::Kind::reattach_refused, 0, 0, 0,
                      std::string("re-attach refused: ") + reattach::describe(status)});
    // The daemon may not yet have noticed our previous connection close.
    reattach_enabled_ = status == reattach::Status::already_attached;
    return;
  }
  socket_ = std::move(candidate);
  watch_socket();
  events.push_back({DeviceEvent::Kind::daemon_reattached, 0, 0, 0, reattach_path_.string()});
}

}  // namespace cellink::linux_uio
