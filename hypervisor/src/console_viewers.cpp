// ConsoleViewers: the viewer socket, one writer, bounded queues (contract in
// the header; the wire format in console_viewer_protocol.hpp).
#include "cellink/hypervisor/console_viewers.hpp"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <deque>
#include <optional>
#include <stdexcept>
#include <system_error>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

namespace cellink::hypervisor {

namespace protocol = console_protocol;
using protocol::FrameType;
using protocol::ViewerMode;

struct ConsoleViewers::Viewer {
  std::uint64_t id = 0;
  linux_uio::UniqueFd fd;
  pid_t pid = 0;
  protocol::FrameReader reader;
  bool greeted = false;  // hello received and answered
  ViewerMode mode = ViewerMode::read_only;
  std::deque<std::string> queue;  // whole frames; the front may be partly sent
  std::size_t front_sent = 0;
  std::size_t queued = 0;                                              // unsent bytes in queue
  std::optional<std::chrono::steady_clock::time_point> leaving_since;  // refused: close soon
  std::chrono::steady_clock::time_point connected = std::chrono::steady_clock::now();
};

namespace {

std::string errno_text(int error) {
  return std::system_category().message(error);
}

}  // namespace

ConsoleViewers::ConsoleViewers(ConsoleLoop& loop, std::string cell,
                               std::filesystem::path socket_path, ViewerEvents events,
                               std::size_t queue_limit)
    : loop_(loop),
      cell_(std::move(cell)),
      socket_path_(std::move(socket_path)),
      events_(std::move(events)),
      queue_limit_(queue_limit) {
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  if (socket_path_.string().size() >= sizeof(address.sun_path)) {
    throw std::runtime_error(fmt::format(
        "socket path {} is longer than the {} bytes a UNIX socket allows; choose a shorter "
        "--runtime-dir",
        socket_path_.string(), sizeof(address.sun_path) - 1));
  }
  socket_path_.string().copy(address.sun_path, sizeof(address.sun_path) - 1);
  listener_.reset(::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  std::error_code ignored;
  std::filesystem::remove(socket_path_, ignored);
  if (!listener_ ||
      ::bind(listener_.get(), reinterpret_cast<const sockaddr*>(&address), sizeof(address)) != 0 ||
      ::listen(listener_.get(), 16) != 0) {
    throw std::runtime_error(
        fmt::format("cannot listen on {}: {}", socket_path_.string(), errno_text(errno)));
  }
  loop_.watch(listener_.get(), EPOLLIN, [this](std::uint32_t) { accept_all(); });
}

ConsoleViewers::~ConsoleViewers() {
  events_ = {};  // the owner is going away too: tell it nothing more
  while (!viewers_.empty()) close(viewers_.begin()->first);
  loop_.unwatch(listener_.get());
  std::error_code ignored;
  std::filesystem::remove(socket_path_, ignored);
}

void ConsoleViewers::accept_all() {
  for (;;) {
    linux_uio::UniqueFd fd(
        ::accept4(listener_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
    if (!fd) {
      if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
        spdlog::warn("console '{}': accept on {}: {}", cell_, socket_path_.string(),
                     errno_text(errno));
      }
      return;
    }
    auto viewer = std::make_unique<Viewer>();
    viewer->id = next_id_++;
    ucred credentials{};
    socklen_t length = sizeof(credentials);
    if (::getsockopt(fd.get(), SOL_SOCKET, SO_PEERCRED, &credentials, &length) == 0) {
      viewer->pid = credentials.pid;
    }
    viewer->fd = std::move(fd);
    const std::uint64_t id = viewer->id;
    const int raw_fd = viewer->fd.get();
    const bool full = viewers_.size() >= kMaxViewers;
    Viewer& added = *viewers_.emplace(id, std::move(viewer)).first->second;
    loop_.watch(raw_fd, EPOLLIN, [this, id](std::uint32_t events) { on_event(id, events); });
    if (full) {
      refuse(added, fmt::format("console '{}' already has {} viewers; detach one first", cell_,
                                kMaxViewers));
    }
  }
}

void ConsoleViewers::on_event(std::uint64_t id, std::uint32_t events) {
  auto found = viewers_.find(id);
  if (found == viewers_.end()) return;
  Viewer& viewer = *found->second;
  if ((events & EPOLLOUT) != 0) {
    flush(viewer);
    if (viewers_.find(id) == viewers_.end()) return;
  }
  if ((events & (EPOLLIN | EPOLLHUP | EPOLLERR)) == 0) return;
  char bytes[16 * 1024];
  const ssize_t got = ::read(viewer.fd.get(), bytes, sizeof(bytes));
  if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
  if (got <= 0) {
    close(id);
    return;
  }
  if (viewer.leaving_since) return;  // told to go: what it says no longer matters
  viewer.reader.feed(bytes, static_cast<std::size_t>(got));
  while (auto frame = viewer.reader.next()) {
    handle_frame(viewer, std::move(*frame));
    if (viewers_.find(id) == viewers_.end() || viewer.leaving_since) return;
  }
  if (!viewer.reader.error().empty()) {
    refuse(viewer, fmt::format("protocol error: {}", viewer.reader.error()));
  }
}

void ConsoleViewers::handle_frame(Viewer& viewer, protocol::Frame frame) {
  if (!viewer.greeted) {
    if (frame.type != FrameType::hello) {
      refuse(viewer, fmt::format("protocol error: the first frame must be hello, not {}",
                                 protocol::describe(frame.type)));
      return;
    }
    handle_hello(viewer, frame);
    return;
  }
  const bool writer = viewer.id == writer_;
  switch (frame.type) {
    case FrameType::input:
      if (!writer) {
        refuse(viewer, "protocol error: a read-only viewer sent input");
        return;
      }
      if (events_.input) events_.input(std::as_bytes(std::span(frame.payload)));
      return;
    case FrameType::resize:
      if (auto size = protocol::decode_resize(frame.payload)) {
        if (writer && events_.resize) events_.resize(*size);
        return;
      }
      refuse(viewer, "protocol error: a resize frame must carry 4 bytes");
      return;
    default:
      refuse(viewer,
             fmt::format("protocol error: a viewer may not send {} (type {})",
                         protocol::describe(frame.type), static_cast<unsigned>(frame.type)));
  }
}

void ConsoleViewers::handle_hello(Viewer& viewer, const protocol::Frame& frame) {
  const std::optional<protocol::Hello> hello = protocol::decode_hello(frame.payload);
  if (!hello) {
    refuse(viewer, "protocol error: a hello frame must carry 8 bytes with mode 0 or 1");
    return;
  }
  if (hello->version != protocol::kViewerProtocolVersion) {
    refuse(viewer, fmt::format("viewer protocol version {} is not supported; this service "
                               "speaks version {} (use the cellink of the same build)",
                               hello->version, protocol::kViewerProtocolVersion));
    return;
  }
  if (hello->mode == ViewerMode::read_write) {
    if (writer_ != 0) {
      const pid_t holder = viewers_.at(writer_)->pid;
      refuse(viewer, fmt::format("console '{}' already has a viewer that types (pid {}); attach "
                                 "with --read-only, or wait until it detaches",
                                 cell_, holder));
      return;
    }
    writer_ = viewer.id;
    update_events(viewer);  // honours a pause already in force
  }
  viewer.mode = hello->mode;
  viewer.greeted = true;
  std::string frames =
      protocol::encode_welcome(protocol::Welcome{protocol::kViewerProtocolVersion, viewer.mode});
  const std::string scrollback = events_.scrollback ? events_.scrollback() : std::string();
  frames += protocol::encode_data(FrameType::output, std::as_bytes(std::span(scrollback)));
  spdlog::info("console '{}': viewer attached, pid {}, {}", cell_, viewer.pid,
               viewer.mode == ViewerMode::read_write ? "read-write" : "read-only");
  const std::uint64_t id = viewer.id;
  send(viewer, std::move(frames));
  if (viewer.mode == ViewerMode::read_write && hello->size.cols != 0 && hello->size.rows != 0 &&
      viewers_.contains(id) && events_.resize) {
    events_.resize(hello->size);
  }
  if (events_.changed) events_.changed();
}

void ConsoleViewers::broadcast(std::span<const std::byte> output) {
  if (output.empty() || viewers_.empty()) return;
  const std::string frames = protocol::encode_data(FrameType::output, output);
  std::vector<std::uint64_t> ids;
  for (const auto& [id, viewer] : viewers_) {
    if (viewer->greeted && !viewer->leaving_since) ids.push_back(id);
  }
  for (std::uint64_t id : ids) {
    auto found = viewers_.find(id);
    if (found != viewers_.end()) send(*found->second, frames);
  }
}

void ConsoleViewers::notice(const std::string& text) {
  for (auto& [id, viewer] : viewers_) {
    if (viewer->greeted && !viewer->leaving_since) {
      send(*viewer, protocol::encode_frame(FrameType::notice, text));
    }
  }
}

void ConsoleViewers::send(Viewer& viewer, std::string frames) {
  if (viewer.leaving_since) return;
  if (viewer.queued + frames.size() > queue_limit_) {
    ++overflowed_;
    spdlog::warn("console '{}': viewer pid {} fell {} bytes behind; disconnecting it", cell_,
                 viewer.pid, viewer.queued + frames.size());
    // Keep the frame in flight whole, so the goodbye is read as a frame.
    if (viewer.front_sent > 0) {
      viewer.queue.resize(1);
      viewer.queued = viewer.queue.front().size() - viewer.front_sent;
    } else {
      viewer.queue.clear();
      viewer.queued = 0;
    }
    refuse(viewer, fmt::format("console '{}': this viewer fell more than {} KiB behind the "
                               "guest's output and was disconnected (the guest and the other "
                               "viewers were not slowed down); attach again",
                               cell_, queue_limit_ / 1024));
    return;
  }
  viewer.queued += frames.size();
  viewer.queue.push_back(std::move(frames));
  flush(viewer);
}

void ConsoleViewers::flush(Viewer& viewer) {
  while (!viewer.queue.empty()) {
    const std::string& front = viewer.queue.front();
    const ssize_t wrote = ::send(viewer.fd.get(), front.data() + viewer.front_sent,
                                 front.size() - viewer.front_sent, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (wrote < 0 && errno == EINTR) continue;
    if (wrote < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    if (wrote <= 0) {
      close(viewer.id);  // the viewer went away; its EOF would tell us too
      return;
    }
    viewer.front_sent += static_cast<std::size_t>(wrote);
    viewer.queued -= static_cast<std::size_t>(wrote);
    if (viewer.front_sent == front.size()) {
      viewer.queue.pop_front();
      viewer.front_sent = 0;
    }
  }
  if (viewer.queue.empty() && viewer.leaving_since) {
    close(viewer.id);
    return;
  }
  update_events(viewer);
}

void ConsoleViewers::refuse(Viewer& viewer, const std::string& why) {
  if (viewer.leaving_since) return;
  spdlog::info("console '{}': viewer pid {} refused: {}", cell_, viewer.pid, why);
  std::string frame = protocol::encode_frame(FrameType::refused, why);
  viewer.queued += frame.size();
  viewer.queue.push_back(std::move(frame));
  viewer.leaving_since = std::chrono::steady_clock::now();
  if (viewer.id == writer_) writer_ = 0;
  if (viewer.greeted && events_.changed) events_.changed();
  flush(viewer);
}

void ConsoleViewers::update_events(Viewer& viewer) {
  std::uint32_t events = 0;
  // A leaving viewer is still read, to notice its close; the bytes are ignored.
  if (!(viewer.id == writer_ && input_paused_)) events |= EPOLLIN;
  if (!viewer.queue.empty()) events |= EPOLLOUT;
  loop_.modify(viewer.fd.get(), events);
}

void ConsoleViewers::set_input_paused(bool paused) {
  if (input_paused_ == paused) return;
  input_paused_ = paused;
  if (auto found = viewers_.find(writer_); found != viewers_.end()) {
    update_events(*found->second);
  }
}

void ConsoleViewers::close(std::uint64_t id) {
  auto found = viewers_.find(id);
  if (found == viewers_.end()) return;
  Viewer& viewer = *found->second;
  const bool was_attached = viewer.greeted && !viewer.leaving_since;
  loop_.unwatch(viewer.fd.get());
  if (was_attached) spdlog::info("console '{}': viewer pid {} detached", cell_, viewer.pid);
  if (writer_ == id) writer_ = 0;
  viewers_.erase(found);
  if (was_attached && events_.changed) events_.changed();
}

void ConsoleViewers::reap(std::chrono::steady_clock::time_point now) {
  std::vector<std::uint64_t> late;
  for (const auto& [id, viewer] : viewers_) {
    if (viewer->leaving_since && now - *viewer->leaving_since > kGoodbyeGrace) late.push_back(id);
    // A client that never says hello holds nothing but its socket; not for ever.
    if (!viewer->greeted && !viewer->leaving_since && now - viewer->connected > kHelloTimeout) {
      late.push_back(id);
    }
  }
  for (std::uint64_t id : late) close(id);
}

std::vector<ViewerInfo> ConsoleViewers::attached() const {
  std::vector<ViewerInfo> list;
  for (const auto& [id, viewer] : viewers_) {
    if (viewer->greeted && !viewer->leaving_since) {
      list.push_back(ViewerInfo{viewer->pid, viewer->mode, viewer->queued});
    }
  }
  return list;
}

}  // namespace cellink::hypervisor
