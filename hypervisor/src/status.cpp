// The control socket: `cellink status` asks, the daemon answers in JSON.
// Request: one line, "status\n". Reply: one JSON document, then close.
// Schema: docs/daemon-protocol.md (section "Control socket").
#include <unistd.h>

#include <fstream>
#include <string>

#include <boost/asio/read_until.hpp>
#include <boost/asio/streambuf.hpp>
#include <boost/asio/write.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "cellink/ivshmem/peer_state.hpp"
#include "daemon_state.hpp"

namespace cellink::hypervisor {
namespace {

constexpr std::size_t kMaxRequest = 256;
constexpr auto kRequestTimeout = std::chrono::seconds(2);

// Doorbells not yet consumed by the peer, read without consuming them.
std::uint64_t pending_doorbells(int eventfd) {
  std::ifstream info(fmt::format("/proc/self/fdinfo/{}", eventfd));
  std::string key;
  while (info >> key) {
    if (key == "eventfd-count:") {
      std::string hex;
      info >> hex;
      return std::stoull(hex, nullptr, 16);
    }
  }
  return 0;
}

std::int64_t unix_seconds(std::chrono::system_clock::time_point when) {
  return std::chrono::duration_cast<std::chrono::seconds>(when.time_since_epoch()).count();
}

struct ControlSession : std::enable_shared_from_this<ControlSession> {
  ControlSession(local_stream::socket socket, asio::io_context& io)
      : socket(std::move(socket)), timer(io, kRequestTimeout), request(kMaxRequest) {}
  local_stream::socket socket;
  asio::steady_timer timer;
  asio::streambuf request;
  std::string reply;
};

}  // namespace

std::string Daemon::State::status_json() const {
  nlohmann::json links = nlohmann::json::array();
  for (const LinkRuntime& link : links_) {
    const LinkConfig& config = *link.config;
    nlohmann::json peers = nlohmann::json::array();
    for (const PeerSlot& slot : link.slots) {
      const std::uint32_t raw = link.memory.peer_state(slot.id);
      ivshmem::PeerState state;
      const bool valid = ivshmem::PeerState::decode(raw, state);
      nlohmann::json peer = {
          {"id", slot.id},
          {"cell", slot.cell},
          {"connected", slot.present()},
          {"state",
           {{"raw", raw},
            {"phase", valid ? ivshmem::phase_name(state.phase) : "INVALID"},
            {"epoch", valid ? state.epoch : 0}}},
          {"doorbells_rung_by_daemon", slot.rung_by_daemon},
      };
      if (slot.present()) {
        std::vector<std::uint64_t> pending;
        for (const UniqueFd& fd : slot.eventfds) pending.push_back(pending_doorbells(fd.get()));
        peer["client"] = slot.connection->is_qemu() ? "qemu" : "process";
        peer["pid"] = slot.connection->pid();
        peer["program"] = slot.connection->program();
        peer["reattached"] = slot.reattached;
        peer["since"] = unix_seconds(slot.since);
        peer["doorbells_pending"] = pending;
      }
      peers.push_back(std::move(peer));
    }
    links.push_back({
        {"name", config.name},
        {"peers", peers},
        {"vectors", config.vectors},
        {"protocol", protocol_name(config.protocol)},
        {"protocol_id", config.protocol},
        {"backing", config.backing.kind == LinkBacking::Kind::memfd ? std::string("memfd")
                                                                    : config.backing.path.string()},
        {"memory_size", link.memory.size()},
        {"used_size", config.layout.used_size()},
        {"adopted", link.memory.adopted()},
    });
  }
  const nlohmann::json status = {
      {"daemon",
       {{"pid", ::getpid()},
        {"runtime_dir", options_.runtime_dir.string()},
        {"config", options_.config.source},
        {"started", unix_seconds(started_)},
        {"reattach_grace_ms", options_.reattach_grace.count()},
        {"reattach_grace_over", grace_over_}}},
      {"links", links},
  };
  return status.dump(2, ' ', false, nlohmann::json::error_handler_t::replace);
}

void Daemon::State::accept_control() {
  control_acceptor_->async_accept(
      [this](const boost::system::error_code& error, local_stream::socket socket) {
        if (stopping_ || error == asio::error::operation_aborted) return;
        if (!error) {
          auto session = std::make_shared<ControlSession>(std::move(socket), io_);
          session->timer.async_wait([session](const boost::system::error_code& timeout) {
            boost::system::error_code ignored;
            if (!timeout) session->socket.close(ignored);
          });
          asio::async_read_until(
              session->socket, session->request, '\n',
              [this, session](const boost::system::error_code& read_error, std::size_t length) {
                session->timer.cancel();
                if (read_error) return;  // too long, closed or timed out: just drop it
                std::string command(asio::buffers_begin(session->request.data()),
                                    asio::buffers_begin(session->request.data()) +
                                        static_cast<std::ptrdiff_t>(length) - 1);
                if (command == "status") {
                  session->reply = status_json() + "\n";
                } else {
                  session->reply =
                      nlohmann::json{{"error", fmt::format("unknown command '{}'; the daemon "
                                                           "understands: status",
                                                           command)}}
                          .dump() +
                      "\n";
                }
                asio::async_write(session->socket, asio::buffer(session->reply),
                                  [session](const boost::system::error_code&, std::size_t) {
                                    boost::system::error_code ignored;
                                    session->socket.close(ignored);
                                  });
              });
        }
        accept_control();
      });
}

}  // namespace cellink::hypervisor
