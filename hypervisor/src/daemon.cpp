// The daemon: start-up, the runtime directory, joins and leaves.
// Re-attach after a restart lives in reattach.cpp, `cellink status` in
// status.cpp, the per-client socket in connection.cpp.
#include "cellink/hypervisor/daemon.hpp"

#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <fstream>
#include <stdexcept>
#include <system_error>

#include <boost/asio/post.hpp>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "cellink/linux-uio/server_protocol.hpp"
#include "daemon_state.hpp"

namespace cellink::hypervisor {
namespace {

std::string errno_text(int error) {
  return std::system_category().message(error);
}

void check_socket_path(const std::filesystem::path& path) {
  if (path.string().size() >= sizeof(sockaddr_un::sun_path)) {
    throw std::runtime_error(fmt::format(
        "socket path {} is longer than the {} bytes a UNIX socket allows; choose a shorter "
        "--runtime-dir",
        path.string(), sizeof(sockaddr_un::sun_path) - 1));
  }
}

}  // namespace

std::filesystem::path default_runtime_dir() {
  if (::geteuid() == 0) return "/run/cellink";
  if (const char* xdg = std::getenv("XDG_RUNTIME_DIR"); xdg != nullptr && xdg[0] == '/') {
    return std::filesystem::path(xdg) / "cellink";
  }
  return std::filesystem::path("/tmp") / fmt::format("cellink-{}", ::geteuid());
}

Daemon::Daemon(DaemonOptions options) : state_(std::make_unique<State>(std::move(options))) {}
Daemon::~Daemon() = default;
void Daemon::run() {
  state_->run();
}
void Daemon::request_stop() {
  asio::post(state_->io_, [state = state_.get()] { state->stop(); });
}

Daemon::State::State(DaemonOptions options)
    : options_(std::move(options)), signals_(io_), grace_timer_(io_) {
  claim_runtime_dir();
  try {
    open_links();
    bind_sockets();
  } catch (...) {
    release_runtime_dir();
    throw;
  }
}

Daemon::State::~State() {
  release_runtime_dir();
}

void Daemon::State::claim_runtime_dir() {
  const std::filesystem::path& dir = options_.runtime_dir;
  std::error_code error;
  std::filesystem::create_directories(dir, error);
  if (error) {
    throw std::runtime_error(
        fmt::format("cannot create runtime dir {}: {} (choose another "
                    "--runtime-dir)",
                    dir.string(), error.message()));
  }
  lock_ = PidLock::acquire(dir / "daemon.lock", [&dir](const std::string& pid) {
    return fmt::format(
        "runtime dir {} is served by a live daemon (pid {}); stop it first (`kill {}`) or "
        "choose another --runtime-dir",
        dir.string(), pid, pid);
  });
}

void Daemon::State::release_runtime_dir() noexcept {
  std::error_code ignored;
  for (auto it = created_paths_.rbegin(); it != created_paths_.rend(); ++it) {
    std::filesystem::remove(*it, ignored);  // directories only if empty
  }
  created_paths_.clear();
  lock_.release();
}

void Daemon::State::open_links() {
  links_.reserve(options_.config.links.size());
  for (const LinkConfig& config : options_.config.links) {
    LinkRuntime link;
    link.config = &config;
    link.memory = LinkMemory::open(config);
    if (link.memory.adopted()) {
      spdlog::info("link '{}': adopted existing backing {} ({} bytes)", config.name,
                   config.backing.path.string(), link.memory.size());
    }
    link.slots.resize(config.cells.size());
    for (std::uint32_t id = 0; id < config.cells.size(); ++id) {
      PeerSlot& slot = link.slots[id];
      slot.id = id;
      slot.cell = config.cells[id];
      slot.rung_by_daemon.assign(config.vectors, 0);
    }
    links_.push_back(std::move(link));
  }
}

void Daemon::State::bind_sockets() {
  auto bind = [&](const std::filesystem::path& path) {
    check_socket_path(path);
    std::error_code ignored;
    // We hold the lock, so a socket file here is a dead daemon's leftover.
    std::filesystem::remove(path, ignored);
    auto acceptor = std::make_unique<local_stream::acceptor>(io_);
    boost::system::error_code error;
    acceptor->open(local_stream(), error);
    if (!error) acceptor->bind(local_stream::endpoint(path.string()), error);
    if (!error) acceptor->listen(asio::socket_base::max_listen_connections, error);
    if (error) {
      throw std::runtime_error(
          fmt::format("cannot listen on {}: {}", path.string(), error.message()));
    }
    created_paths_.push_back(path);
    return acceptor;
  };

  for (std::size_t index = 0; index < links_.size(); ++index) {
    LinkRuntime& link = links_[index];
    const std::filesystem::path dir = options_.runtime_dir / link.config->name;
    std::error_code error;
    if (std::filesystem::create_directory(dir, error)) created_paths_.push_back(dir);
    if (error) {
      throw std::runtime_error(fmt::format("cannot create {}: {}", dir.string(), error.message()));
    }
    for (PeerSlot& slot : link.slots) {
      slot.socket_path = dir / (slot.cell + ".sock");
      slot.reattach_path = dir / (slot.cell + ".reattach.sock");
      slot.acceptor = bind(slot.socket_path);
      slot.reattach_acceptor = bind(slot.reattach_path);
    }
  }
  control_path_ = options_.runtime_dir / "control.sock";
  control_acceptor_ = bind(control_path_);
}

void Daemon::State::run() {
  started_ = std::chrono::system_clock::now();
  if (options_.handle_signals) {
    signals_.add(SIGTERM);
    signals_.add(SIGINT);
    signals_.async_wait([this](const boost::system::error_code& error, int signal) {
      if (error) return;
      spdlog::info("received {}; shutting down", signal == SIGTERM ? "SIGTERM" : "SIGINT");
      stop();
    });
  }
  for (std::size_t link = 0; link < links_.size(); ++link) {
    for (std::uint32_t peer = 0; peer < links_[link].slots.size(); ++peer) {
      accept_next(link, peer);
      accept_reattach(link, peer);
    }
  }
  accept_control();
  grace_timer_.expires_after(options_.reattach_grace);
  grace_timer_.async_wait([this](const boost::system::error_code& error) {
    if (!error) end_grace_period();
  });
  spdlog::info("cellink daemon ready: {} link(s), runtime dir {}, config {}", links_.size(),
               options_.runtime_dir.string(), options_.config.source);
  io_.run();
  release_runtime_dir();
  spdlog::info("cellink daemon stopped; sockets removed");
}

void Daemon::State::stop() {
  if (stopping_) return;
  stopping_ = true;
  boost::system::error_code ignored;
  for (LinkRuntime& link : links_) {
    for (PeerSlot& slot : link.slots) {
      if (slot.acceptor) slot.acceptor->close(ignored);
      if (slot.reattach_acceptor) slot.reattach_acceptor->close(ignored);
      // Peers keep their fds and their link; they re-attach to the next
      // daemon. Their state entries are theirs, so they are left alone.
      if (slot.connection) slot.connection->close();
    }
  }
  if (control_acceptor_) control_acceptor_->close(ignored);
  grace_timer_.cancel();
  signals_.cancel(ignored);
  io_.stop();
}

void Daemon::State::accept_next(std::size_t link, std::uint32_t peer) {
  PeerSlot& slot = links_[link].slots[peer];
  slot.acceptor->async_accept(
      [this, link, peer](const boost::system::error_code& error, local_stream::socket socket) {
        if (stopping_ || error == asio::error::operation_aborted) return;
        if (error) {
          spdlog::warn("accept on {}: {}", links_[link].slots[peer].socket_path.string(),
                       error.message());
        } else {
          attach(link, peer, std::move(socket));
        }
        accept_next(link, peer);
      });
}

void Daemon::State::attach(std::size_t link_index, std::uint32_t peer,
                           local_stream::socket socket) {
  LinkRuntime& link = links_[link_index];
  PeerSlot& slot = link.slots[peer];
  auto connection = std::make_shared<Connection>(std::move(socket), *this, link_index, peer);
  // A client that reconnects at once may beat its own EOF to the loop.
  if (slot.present() && slot.connection->hung_up())
    peer_left(link_index, peer, "closed its connection");
  if (slot.present()) {
    spdlog::warn(
        "link '{}' cell '{}': refusing a second connection from pid {} ({}); the cell is "
        "already attached by pid {} ({}), which is unaffected",
        link.config->name, slot.cell, connection->pid(), connection->program(),
        slot.connection->pid(), slot.connection->program());
    connection->send(linux_uio::server_protocol::kRefusedVersion);
    connection->close();
    return;
  }
  if (!ensure_eventfds(link, slot)) {
    connection->close();
    return;
  }

  // The greeting (docs/daemon-protocol.md): version, id, memory, the present
  // peers' eventfds, then the client's own.
  connection->send(0);
  connection->send(peer);
  connection->send(-1, link.memory.fd());
  slot.connection = connection;
  slot.qemu_holds = 0;
  send_present_peers(link, slot);
  for (const UniqueFd& fd : slot.eventfds) connection->send(peer, fd.get());
  announce_join(link, slot);

  slot.reattached = false;
  slot.since = std::chrono::system_clock::now();
  link.memory_handed_out = true;
  connection->start_monitor();
  spdlog::info("link '{}' cell '{}' (peer {}) attached: {} pid {} ({})", link.config->name,
               slot.cell, peer, connection->is_qemu() ? "qemu" : "process", connection->pid(),
               connection->program());
}

void Daemon::State::peer_left(std::size_t link_index, std::uint32_t peer,
                              const std::string& reason) {
  LinkRuntime& link = links_[link_index];
  PeerSlot& slot = link.slots[peer];
  if (!slot.present()) return;
  const pid_t pid = slot.connection->pid();
  slot.connection->close();
  slot.connection.reset();
  slot.qemu_holds = 0;
  slot.reattached = false;  // its eventfds stay, for its return (PeerSlot::eventfds)

  // Order (docs/daemon-protocol.md): state 0, leave messages, then vector 0,
  // so a survivor woken by the doorbell already reads the reset entry.
  link.memory.set_peer_state(peer, 0);
  std::size_t survivors = 0;
  for (PeerSlot& other : link.slots) {
    other.believed_present &= ~(std::uint64_t{1} << peer);
    if (!other.present()) continue;
    ++survivors;
    // Not to QEMU (PeerSlot::qemu_holds): its guest learns from the state
    // entry and the vector-0 doorbell below.
    if (!other.connection->is_qemu()) other.connection->send(peer);
  }
  for (PeerSlot& other : link.slots) {
    if (other.present()) ring(link, other, 0);
  }
  spdlog::info(
      "link '{}' cell '{}' (peer {}, pid {}) left: {}; state reset to 0, {} survivor(s) "
      "notified",
      link.config->name, slot.cell, peer, pid, reason, survivors);
}

// Sends `peer`'s eventfds to `to`, once per connection for a QEMU client.
void Daemon::State::send_eventfds(const PeerSlot& peer, PeerSlot& to) {
  const std::uint64_t bit = std::uint64_t{1} << peer.id;
  if (to.connection->is_qemu()) {
    if ((to.qemu_holds & bit) != 0) return;  // the same eventfds, still valid
    to.qemu_holds |= bit;
  }
  for (const UniqueFd& fd : peer.eventfds) to.connection->send(peer.id, fd.get());
}

void Daemon::State::send_present_peers(const LinkRuntime& link, PeerSlot& to) {
  for (const PeerSlot& other : link.slots) {
    if (other.id == to.id || !other.present()) continue;
    send_eventfds(other, to);
  }
}

void Daemon::State::announce_join(LinkRuntime& link, const PeerSlot& joined) {
  for (PeerSlot& other : link.slots) {
    if (other.id == joined.id || !other.present()) continue;
    send_eventfds(joined, other);
  }
}

bool Daemon::State::ensure_eventfds(const LinkRuntime& link, PeerSlot& slot) {
  if (slot.eventfds.size() == link.config->vectors) {
    // Back from an absence: what was rung meanwhile is stale.
    for (const UniqueFd& fd : slot.eventfds) {
      std::uint64_t stale = 0;
      (void)::read(fd.get(), &stale, sizeof(stale));  // non-blocking
    }
    return true;
  }
  std::vector<UniqueFd> eventfds;
  for (std::uint32_t vector = 0; vector < link.config->vectors; ++vector) {
    UniqueFd fd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!fd) {
      spdlog::error("link '{}' cell '{}': eventfd failed: {}; refusing the connection",
                    link.config->name, slot.cell, errno_text(errno));
      return false;
    }
    eventfds.push_back(std::move(fd));
  }
  slot.eventfds = std::move(eventfds);
  return true;
}

void Daemon::State::ring(LinkRuntime& link, PeerSlot& slot, std::uint32_t vector) {
  (void)link;
  if (vector >= slot.eventfds.size()) return;
  const std::uint64_t one = 1;
  if (::write(slot.eventfds[vector].get(), &one, sizeof(one)) == sizeof(one)) {
    ++slot.rung_by_daemon[vector];
  }
}

}  // namespace cellink::hypervisor
