// Private to the daemon: its event loop, links, peer slots and connections.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <deque>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>

#include "cellink/hypervisor/daemon.hpp"
#include "cellink/hypervisor/link_memory.hpp"
#include "cellink/hypervisor/pid_lock.hpp"
#include "cellink/linux-uio/unique_fd.hpp"

namespace cellink::hypervisor {

namespace asio = boost::asio;
using local_stream = asio::local::stream_protocol;
using linux_uio::UniqueFd;

// One client socket speaking the ivshmem-server protocol (server side).
// Sends never block the loop: a full socket queues, and a client that stops
// reading for kMaxQueued messages is dropped.
class Connection : public std::enable_shared_from_this<Connection> {
 public:
  static constexpr std::size_t kMaxQueued = 4096;

  Connection(local_stream::socket socket, Daemon::State& daemon, std::size_t link,
             std::uint32_t peer);

  // Queues one message; `fd` is duplicated if it has to wait.
  void send(std::int64_t value, int fd = -1);
  // Watches for bytes (a protocol violation) and for the close.
  void start_monitor();
  void close() noexcept;

  [[nodiscard]] bool closed() const noexcept { return closed_; }
  [[nodiscard]] pid_t pid() const noexcept { return pid_; }
  [[nodiscard]] const std::string& program() const noexcept { return program_; }
  [[nodiscard]] bool is_qemu() const noexcept;
  // True when the client has already hung up, though its EOF may not have
  // been processed yet.
  [[nodiscard]] bool hung_up() noexcept;

 private:
  struct Pending {
    std::int64_t value;
    UniqueFd fd;
  };
  void flush();
  void fail(const std::string& reason);

  local_stream::socket socket_;
  Daemon::State& daemon_;
  std::size_t link_;
  std::uint32_t peer_;
  std::deque<Pending> queue_;
  bool waiting_for_write_ = false;
  bool closed_ = false;
  pid_t pid_ = 0;
  std::string program_;  // /proc/<pid>/comm
};

struct PeerSlot {
  std::uint32_t id = 0;
  std::string cell;
  std::shared_ptr<Connection> connection;  // null while absent
  // One per vector, created at the peer's first attach and kept while it is
  // absent: a returning peer gets the same ones back, so a QEMU client that
  // was never told it left (see qemu_holds) still rings the right eventfds.
  std::vector<UniqueFd> eventfds;
  // QEMU clients only: bit i set once peer i's eventfds were sent to this
  // client. QEMU's ivshmem frees a peer's eventfd array when told the peer
  // left and writes into the freed array when that id joins again (a heap
  // corruption, seen here as "malloc(): unaligned tcache chunk detected"
  // when the guest powered off). So a QEMU client is never told that a peer
  // left, and is sent a peer's eventfds only once per connection.
  std::uint64_t qemu_holds = 0;
  std::vector<std::uint64_t> rung_by_daemon;
  bool reattached = false;  // present through the re-attach extension
  // Re-attached peers only: bit i set while this peer may still believe peer
  // i present (it held i's eventfds when it re-attached) and nobody has told
  // it otherwise since.
  std::uint64_t believed_present = 0;
  std::chrono::system_clock::time_point since{};
  std::filesystem::path socket_path;
  std::filesystem::path reattach_path;
  std::unique_ptr<local_stream::acceptor> acceptor;
  std::unique_ptr<local_stream::acceptor> reattach_acceptor;

  [[nodiscard]] bool present() const noexcept { return connection != nullptr; }
};

struct LinkRuntime {
  const LinkConfig* config = nullptr;
  LinkMemory memory;
  std::vector<PeerSlot> slots;  // index = peer id
  // Set once any peer received this memory from this daemon; from then on a
  // re-attaching peer's memfd can no longer replace it.
  bool memory_handed_out = false;
};

struct Daemon::State {
  explicit State(DaemonOptions options);
  ~State();

  void run();
  void stop();

  // Called by connections.
  void peer_left(std::size_t link, std::uint32_t peer, const std::string& reason);

  [[nodiscard]] std::string status_json() const;

  void claim_runtime_dir();
  void release_runtime_dir() noexcept;
  void open_links();
  void bind_sockets();
  void accept_next(std::size_t link, std::uint32_t peer);
  void attach(std::size_t link, std::uint32_t peer, local_stream::socket socket);
  void accept_reattach(std::size_t link, std::uint32_t peer);
  void handle_reattach(std::size_t link, std::uint32_t peer,
                       const std::shared_ptr<local_stream::socket>& socket);
  void finish_reattach(std::size_t link, std::uint32_t peer, local_stream::socket socket,
                       const void* request, std::size_t size, std::vector<UniqueFd> fds);
  void end_grace_period();
  // Resets the state of peers that are absent after the grace period and
  // tells each re-attached peer about those it still believed present.
  void forget_absent_peers(LinkRuntime& link);
  // Sends `to` (attached) a join (N eventfds) for every other present peer.
  void send_present_peers(const LinkRuntime& link, PeerSlot& to);
  // Sends every other present peer a join with `joined`'s eventfds.
  void announce_join(LinkRuntime& link, const PeerSlot& joined);
  // One join message set: `peer`'s eventfds to `to`; to a QEMU client only
  // the first time on its connection (PeerSlot::qemu_holds).
  void send_eventfds(const PeerSlot& peer, PeerSlot& to);
  // Gives `slot` its eventfds: the ones it had (their stale counts read
  // away) or new ones. False, logged, when eventfd() fails.
  [[nodiscard]] bool ensure_eventfds(const LinkRuntime& link, PeerSlot& slot);
  void ring(LinkRuntime& link, PeerSlot& slot, std::uint32_t vector);
  void accept_control();

  DaemonOptions options_;
  asio::io_context io_;
  asio::signal_set signals_;
  asio::steady_timer grace_timer_;
  std::unique_ptr<local_stream::acceptor> control_acceptor_;
  std::vector<LinkRuntime> links_;
  PidLock lock_;
  std::filesystem::path control_path_;
  std::vector<std::filesystem::path> created_paths_;  // sockets and dirs to remove
  std::chrono::system_clock::time_point started_{};
  bool grace_over_ = false;
  bool stopping_ = false;
};

}  // namespace cellink::hypervisor
