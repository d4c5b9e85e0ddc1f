// HostDevice: a cell that is a plain Linux process, attached to `cellink
// daemon` over its UNIX socket. Implements ivshmem::Device.
//
// connect() speaks QEMU's ivshmem-server protocol on
// `<runtime-dir>/<link>/<cell>.sock`: it receives the shared-memory fd (mapped
// once, never remapped), the eventfds of every present peer and its own
// eventfds. doorbell() writes the peer's eventfd for that vector; wait()
// epolls the own eventfds plus the socket, which carries join and leave
// messages.
//
// Daemon restarts: the link keeps working while the daemon is down, because
// this object holds every fd it needs. When the socket closes, wait() reports
// daemon_lost and then re-attaches by itself through
// `<cell>.reattach.sock` (docs/daemon-protocol.md), handing its memory and
// eventfds back to the new daemon, and reports daemon_reattached.
//
// Threading: wait() from one thread at a time. doorbell(), set_state(),
// peer_state(), peer_present() and the accessors may be called from any
// thread concurrently with wait(). The spans stay valid until destruction.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <mutex>
#include <string>
#include <system_error>
#include <vector>

#include "cellink/ivshmem/device.hpp"
#include "cellink/ivshmem/layout.hpp"
#include "cellink/ivshmem/link_descriptor.hpp"
#include "cellink/linux-uio/unique_fd.hpp"
#include "cellink/linux-uio/waitable_device.hpp"

namespace cellink::linux_uio {

struct HostDeviceOptions {
  std::filesystem::path runtime_dir;  // as given to `cellink daemon --runtime-dir`
  std::string link;
  std::string cell;
  // How long connect() waits for the daemon's greeting to complete.
  std::chrono::milliseconds greeting_timeout{5000};
  // Re-attach automatically after the daemon connection drops.
  bool reattach = true;
  // Delay between re-attach attempts while the daemon is down.
  std::chrono::milliseconds reattach_interval{100};
};

class HostDevice final : public WaitableDevice {
 public:
  // Connects and completes the greeting. Throws std::system_error whose
  // what() names the socket, the problem and a remedy.
  [[nodiscard]] static std::unique_ptr<HostDevice> connect(const HostDeviceOptions& options);
  // As above; on failure returns nullptr and sets `error` (and `detail`).
  [[nodiscard]] static std::unique_ptr<HostDevice> connect(const HostDeviceOptions& options,
                                                           std::error_code& error,
                                                           std::string& detail) noexcept;
  ~HostDevice() override;

  // ivshmem::Device
  [[nodiscard]] std::uint32_t id() const noexcept override { return id_; }
  [[nodiscard]] std::uint32_t peer_count() const noexcept override { return layout_.peers(); }
  [[nodiscard]] std::uint32_t vector_count() const noexcept override { return vectors_; }
  [[nodiscard]] bool peer_present(std::uint32_t peer) const noexcept override;
  [[nodiscard]] const ivshmem::Layout& layout() const noexcept override { return layout_; }
  [[nodiscard]] std::span<std::byte> rw_section() noexcept override;
  [[nodiscard]] std::span<std::byte> own_output_section() noexcept override;
  [[nodiscard]] std::span<const std::byte> output_section(
      std::uint32_t peer) const noexcept override;
  [[nodiscard]] ivshmem::DoorbellStatus doorbell(std::uint32_t peer,
                                                 std::uint32_t vector) noexcept override;
  // Release-stores our state entry, then rings vector 0 on every peer this
  // device knows. A peer whose join wait() has not read yet is rung when
  // wait() reads it (while our entry is not 0), so it reads the entry again.
  void set_state(std::uint32_t value) noexcept override;
  [[nodiscard]] std::uint32_t peer_state(std::uint32_t peer) const noexcept override;

  // Blocks until at least one event is available or `timeout` passes
  // (0 = just poll), and returns every event collected, in arrival order.
  // Throws std::system_error only on an unexpected epoll failure.
  [[nodiscard]] std::vector<DeviceEvent> wait(std::chrono::milliseconds timeout) override;

  // An fd that becomes readable whenever wait() would return events (for
  // epoll or Boost.Asio integration). While the daemon is down it does not
  // time re-attach attempts; call wait() periodically then.
  [[nodiscard]] int event_fd() const noexcept override { return epoll_.get(); }
  [[nodiscard]] bool add_wake_fd(int fd) override;

  [[nodiscard]] bool daemon_connected() const noexcept {
    return connected_.load(std::memory_order_relaxed);
  }
  [[nodiscard]] const std::string& link_name() const noexcept { return link_name_; }
  [[nodiscard]] const std::filesystem::path& socket_path() const noexcept { return socket_path_; }

 private:
  HostDevice() = default;
  struct PeerDoorbells {
    std::vector<UniqueFd> eventfds;  // index = vector; complete when size() == vectors_
    bool present = false;
  };

  void complete_greeting(std::chrono::milliseconds timeout);
  void map_memory(UniqueFd memory);
  void handle_message(std::int64_t value, UniqueFd fd, std::vector<DeviceEvent>& events);
  void drain_socket(std::vector<DeviceEvent>& events);
  // Reads our eventfds of the vectors in `vectors` (bit v: vector v).
  void drain_own_eventfds(std::uint64_t vectors, std::vector<DeviceEvent>& events);
  void on_daemon_lost(std::vector<DeviceEvent>& events);
  void try_reattach(std::vector<DeviceEvent>& events);
  void watch_socket();
  void fail_protocol(const std::string& what, std::vector<DeviceEvent>& events);

  HostDeviceOptions options_;
  std::filesystem::path socket_path_;
  std::filesystem::path reattach_path_;
  std::string link_name_;
  std::uint32_t id_ = 0;
  std::uint32_t vectors_ = 0;
  ivshmem::Layout layout_;

  UniqueFd memory_fd_;
  std::byte* memory_ = nullptr;
  std::uint64_t memory_size_ = 0;

  UniqueFd epoll_;
  UniqueFd socket_;  // daemon connection; invalid while the daemon is down
  std::vector<UniqueFd> own_eventfds_;
  std::chrono::steady_clock::time_point next_reattach_attempt_{};
  bool reattach_enabled_ = true;
  std::atomic<bool> connected_{false};  // relaxed: a status flag, orders nothing

  // Protects peers_: orders a join/leave seen by wait() against doorbell()
  // and peer_present() on other threads.
  mutable std::mutex peers_mutex_;
  std::vector<PeerDoorbells> peers_;  // index = peer id
};

}  // namespace cellink::linux_uio
