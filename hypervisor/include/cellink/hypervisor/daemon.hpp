// Daemon: plays the hypervisor for cells on a plain Linux host.
//
// For every link it owns the shared memory (LinkMemory) and, for every
// attached peer, the doorbell eventfds. It serves QEMU's ivshmem-server
// protocol on one socket per (link, cell), `<runtime-dir>/<link>/<cell>.sock`,
// so the socket decides the peer id; the cellink re-attach extension on
// `<cell>.reattach.sock`; and `cellink status` on `<runtime-dir>/control.sock`.
// It tracks joins and leaves and, when a peer's socket closes, writes its
// state entry 0, tells the others and rings their vector 0. It stays off the
// data path: a message between peers costs it nothing.
//
// Spec: docs/daemon-protocol.md.
//
// Threading: run() drives a single-threaded event loop on the calling
// thread; request_stop() may be called from any thread or a signal context
// is handled internally (SIGTERM, SIGINT).
#pragma once

#include <chrono>
#include <filesystem>
#include <memory>

#include "cellink/hypervisor/config.hpp"

namespace cellink::hypervisor {

struct DaemonOptions {
  Config config;
  std::filesystem::path runtime_dir;
  // After a restart, peers that were attached before it get this long to
  // re-attach before the daemon marks them gone (state 0, leave, vector 0).
  std::chrono::milliseconds reattach_grace{3000};
  // Handle SIGTERM and SIGINT by shutting down cleanly.
  bool handle_signals = true;
};

class Daemon {
 public:
  // Claims the runtime directory and creates every link's memory and
  // sockets. Throws std::runtime_error with a remedy when the directory is
  // held by a live daemon, a socket cannot be bound, or a backing cannot be
  // created or adopted. Nothing is left behind on failure.
  explicit Daemon(DaemonOptions options);
  ~Daemon();
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;

  // Serves until a stop is requested; then removes its sockets and lock.
  void run();
  void request_stop();

  // Opaque implementation (hypervisor/src/daemon_state.hpp).
  struct State;

 private:
  std::unique_ptr<State> state_;
};

// The default runtime directory: $XDG_RUNTIME_DIR/cellink, or /run/cellink
// as root, or /tmp/cellink-<uid> as a last resort.
[[nodiscard]] std::filesystem::path default_runtime_dir();

}  // namespace cellink::hypervisor
