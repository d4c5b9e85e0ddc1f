// Re-attach after a daemon restart (docs/daemon-protocol.md): surviving
// cellink peers hand their memory and eventfds back; peers that do not come
// back within the grace period are marked gone.
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <filesystem>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "cellink/linux-uio/fd_passing.hpp"
#include "cellink/linux-uio/reattach_protocol.hpp"
#include "daemon_state.hpp"

namespace cellink::hypervisor {
namespace {

namespace reattach = linux_uio::reattach;

constexpr auto kRequestTimeout = std::chrono::seconds(2);

bool is_eventfd(int fd) {
  std::error_code error;
  const auto target = std::filesystem::read_symlink(fmt::format("/proc/self/fd/{}", fd), error);
  return !error && target == "anon_inode:[eventfd]";
}

void send_reply(local_stream::socket& socket, reattach::Status status) {
  reattach::Reply reply{};
  reply.magic = reattach::kReplyMagic;
  reply.version = reattach::kReattachVersion;
  reply.status = static_cast<std::uint16_t>(status);
  (void)::send(socket.native_handle(), &reply, sizeof(reply), MSG_NOSIGNAL | MSG_DONTWAIT);
}

}  // namespace

void Daemon::State::accept_reattach(std::size_t link, std::uint32_t peer) {
  PeerSlot& slot = links_[link].slots[peer];
  slot.reattach_acceptor->async_accept(
      [this, link, peer](const boost::system::error_code& error, local_stream::socket socket) {
        if (stopping_ || error == asio::error::operation_aborted) return;
        if (!error) {
          handle_reattach(link, peer, std::make_shared<local_stream::socket>(std::move(socket)));
        }
        accept_reattach(link, peer);
      });
}

void Daemon::State::handle_reattach(std::size_t link, std::uint32_t peer,
                                    const std::shared_ptr<local_stream::socket>& socket) {
  auto timer = std::make_shared<asio::steady_timer>(io_, kRequestTimeout);
  timer->async_wait([socket](const boost::system::error_code& error) {
    boost::system::error_code ignored;
    if (!error) socket->close(ignored);  // no request in time
  });
  socket->async_wait(local_stream::socket::wait_read, [this, link, peer, socket, timer](
                                                          const boost::system::error_code& error) {
    timer->cancel();
    if (error || stopping_) return;
    reattach::Request request{};
    linux_uio::Received received = linux_uio::receive_with_fds(socket->native_handle(), &request,
                                                               sizeof(request), MSG_DONTWAIT);
    const std::size_t size =
        received.bytes < 0 || received.truncated ? 0 : static_cast<std::size_t>(received.bytes);
    finish_reattach(link, peer, std::move(*socket), &request, size, std::move(received.fds));
  });
}

void Daemon::State::finish_reattach(std::size_t link_index, std::uint32_t peer,
                                    local_stream::socket socket, const void* bytes,
                                    std::size_t size, std::vector<UniqueFd> fds) {
  LinkRuntime& link = links_[link_index];
  PeerSlot& slot = link.slots[peer];
  const std::string who =
      fmt::format("link '{}' cell '{}' (peer {})", link.config->name, slot.cell, peer);
  auto refuse = [&](reattach::Status status, const std::string& detail) {
    spdlog::warn("{}: re-attach refused: {}{}", who, reattach::describe(status), detail);
    send_reply(socket, status);
  };

  reattach::Request request{};
  if (size != sizeof(request)) return refuse(reattach::Status::malformed, " (short request)");
  std::memcpy(&request, bytes, sizeof(request));
  const std::uint64_t valid_peers = (std::uint64_t{1} << link.slots.size()) - 1;
  if (request.magic != reattach::kRequestMagic || request.version != reattach::kReattachVersion ||
      request.size != sizeof(request) || (request.known_peers & ~valid_peers) != 0) {
    return refuse(reattach::Status::malformed, " (bad header)");
  }
  if (request.peer_id != peer) {
    return refuse(reattach::Status::wrong_peer,
                  fmt::format(" (it claims peer {})", request.peer_id));
  }
  if (slot.present()) return refuse(reattach::Status::already_attached, "");
  if (request.vectors != link.config->vectors) {
    return refuse(reattach::Status::vectors_mismatch,
                  fmt::format(" ({} instead of {})", request.vectors, link.config->vectors));
  }
  if (fds.size() != 1 + std::size_t{request.vectors}) {
    return refuse(reattach::Status::malformed,
                  fmt::format(" ({} fds instead of {})", fds.size(), 1 + request.vectors));
  }
  for (std::size_t i = 1; i < fds.size(); ++i) {
    if (!is_eventfd(fds[i].get())) {
      return refuse(reattach::Status::malformed, fmt::format(" (fd {} is not an eventfd)", i));
    }
  }
  if (!link.memory.same_object(fds[0].get())) {
    // A memfd dies with the daemon that made it; the survivors' copy is the
    // link's real memory, adoptable while no peer has seen our fresh one.
    if (link.config->backing.kind != LinkBacking::Kind::memfd || link.memory_handed_out) {
      return refuse(reattach::Status::memory_mismatch, "");
    }
    LinkMemory adopted;
    std::string why;
    if (!LinkMemory::adopt_fd(*link.config, std::move(fds[0]), adopted, why)) {
      return refuse(reattach::Status::memory_mismatch, " (" + why + ")");
    }
    link.memory = std::move(adopted);
    spdlog::info("link '{}': adopted the surviving peers' memfd from peer {}", link.config->name,
                 peer);
  }

  send_reply(socket, reattach::Status::accepted);
  auto connection = std::make_shared<Connection>(std::move(socket), *this, link_index, peer);
  fds.erase(fds.begin());
  slot.connection = connection;
  slot.qemu_holds = 0;
  slot.eventfds = std::move(fds);
  // The re-attached peer may have missed joins while the daemon was down;
  // a peer that already knows a joiner replaces its eventfds (idempotent).
  send_present_peers(link, slot);
  announce_join(link, slot);
  slot.reattached = true;
  slot.believed_present = request.known_peers & ~(std::uint64_t{1} << peer);
  slot.since = std::chrono::system_clock::now();
  link.memory_handed_out = true;
  connection->start_monitor();
  spdlog::info("{} re-attached: pid {} ({})", who, connection->pid(), connection->program());
  // Late (or adopted-memory) re-attach: apply what the grace period decided.
  if (grace_over_) forget_absent_peers(link);
}

void Daemon::State::end_grace_period() {
  grace_over_ = true;
  for (LinkRuntime& link : links_) forget_absent_peers(link);
  spdlog::info("re-attach grace period of {} ms is over", options_.reattach_grace.count());
}

void Daemon::State::forget_absent_peers(LinkRuntime& link) {
  for (const PeerSlot& gone : link.slots) {
    if (gone.present() || link.memory.peer_state(gone.id) == 0) continue;
    spdlog::info(
        "link '{}' cell '{}' (peer {}): not attached {} ms after the daemon started; "
        "state reset to 0",
        link.config->name, gone.cell, gone.id, options_.reattach_grace.count());
    link.memory.set_peer_state(gone.id, 0);
  }
  // Only a re-attached peer can still believe in a peer that died while the
  // daemon was down; peers that joined since never heard of it.
  for (PeerSlot& survivor : link.slots) {
    if (!survivor.present() || survivor.believed_present == 0) continue;
    bool told = false;
    for (const PeerSlot& gone : link.slots) {
      const std::uint64_t bit = std::uint64_t{1} << gone.id;
      if (gone.present() || (survivor.believed_present & bit) == 0) continue;
      survivor.connection->send(gone.id);
      survivor.believed_present &= ~bit;
      told = true;
    }
    if (told) ring(link, survivor, 0);
  }
}

}  // namespace cellink::hypervisor
