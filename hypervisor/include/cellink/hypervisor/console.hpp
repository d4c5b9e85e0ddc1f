// Console: everything the host keeps for one cell's console, and the narrow
// interface a back end (the virtio-console device) drives it through.
//
// Guest output goes, in this order, to the log (ConsoleLog), the scrollback
// (ConsoleScrollback), the PTY (ConsolePty; dropped there when nobody reads
// it or its reader is 84 KiB behind) and every viewer (ConsoleViewers; a slow one is disconnected).
// Guest input comes from two places, merged in arrival order: bytes written
// into the PTY, and the keys of the one viewer allowed to type. It waits in
// a bounded queue (kInputLimit) until the back end takes it; while the
// queue is full the PTY and the typing viewer are not read (back-pressure,
// nothing is dropped).
//
// Back end contract (all on the service's loop thread; ConsoleService::loop()
// also takes the back end's own fds and timers):
//   - guest_output(bytes) for every byte the guest wrote;
//   - on_input(callback): called each time input arrives; then
//     take_input(buffer) as often as the back end has room;
//   - terminal_size() / on_resize(callback) for VIRTIO_CONSOLE_F_SIZE;
//   - set_state(text) for `cellink status`: e.g. "running", "waiting for
//     the driver", "broken: <diagnostic>".
// Without a back end, output is just never produced and input waits.
//
// Threading: the service's loop thread only.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>

#include <nlohmann/json_fwd.hpp>

#include "cellink/hypervisor/console_log.hpp"
#include "cellink/hypervisor/console_loop.hpp"
#include "cellink/hypervisor/console_pty.hpp"
#include "cellink/hypervisor/console_scrollback.hpp"
#include "cellink/hypervisor/console_viewers.hpp"

namespace cellink::hypervisor {

struct ConsoleSettings {
  std::string cell;
  std::uint64_t log_size = std::uint64_t{1} << 20;  // rotate at this size
  std::uint32_t log_files = 3;                      // the log plus rotated ones kept
  std::size_t scrollback = ConsoleScrollback::kDefaultCapacity;
};

// Where a console's files go and how big its queues are.
struct ConsolePlaces {
  std::filesystem::path console_dir;  // <cell>.pty, <cell>.sock, <cell>.status.json
  std::filesystem::path log_dir;      // <cell>.log, <cell>.log.1, ...
  std::size_t viewer_queue_limit = ConsoleViewers::kDefaultQueueLimit;
  std::size_t pty_pending_limit = ConsolePty::kDefaultPendingLimit;
};

class Console {
 public:
  static constexpr std::size_t kInputLimit = std::size_t{64} * 1024;

  // Opens the PTY and the viewer socket; throws std::runtime_error naming
  // what failed. `changed(urgent)` tells the service the status changed.
  Console(ConsoleLoop& loop, ConsoleSettings settings, const ConsolePlaces& places,
          std::function<void(bool urgent)> changed);
  ~Console();
  Console(const Console&) = delete;
  Console& operator=(const Console&) = delete;

  // --- the back end's interface ---
  void guest_output(std::span<const std::byte> bytes);
  [[nodiscard]] std::size_t take_input(std::span<std::byte> into);
  [[nodiscard]] std::size_t input_pending() const noexcept { return input_.size(); }
  // Forgets typed input not yet taken (e.g. when the guest's device resets).
  void discard_input();
  void on_input(std::function<void()> callback) { input_callback_ = std::move(callback); }
  // The size of the typing viewer's terminal, else the PTY's; nullopt when
  // neither is known.
  [[nodiscard]] std::optional<console_protocol::TerminalSize> terminal_size() const;
  void on_resize(std::function<void(console_protocol::TerminalSize)> callback) {
    resize_callback_ = std::move(callback);
  }
  void set_state(std::string state);
  // Shows `text` to every attached viewer (not to the PTY or the log).
  void notice(const std::string& text) { viewers_->notice(text); }

  // --- for the service and tests ---
  [[nodiscard]] const std::string& cell() const noexcept { return settings_.cell; }
  [[nodiscard]] const std::string& state() const noexcept { return state_; }
  [[nodiscard]] const ConsolePty& pty() const noexcept { return *pty_; }
  [[nodiscard]] const ConsoleLog& log() const noexcept { return log_; }
  [[nodiscard]] const ConsoleViewers& viewers() const noexcept { return *viewers_; }
  [[nodiscard]] std::filesystem::path status_path() const;
  // The status document (see docs: console status file).
  [[nodiscard]] nlohmann::json status() const;
  // Reaps viewers that overstayed their goodbye.
  void tick();

 private:
  void watch_pty();
  void on_pty_event(std::uint32_t events);
  void accept_input(std::span<const std::byte> bytes);
  void update_input_pause();
  void resize(console_protocol::TerminalSize size);

  ConsoleLoop& loop_;
  ConsoleSettings settings_;
  std::filesystem::path console_dir_;
  std::function<void(bool)> changed_;
  ConsoleLog log_;
  ConsoleScrollback scrollback_;
  std::unique_ptr<ConsolePty> pty_;
  std::unique_ptr<ConsoleViewers> viewers_;
  std::string input_;
  bool input_paused_ = false;
  std::optional<console_protocol::TerminalSize> writer_size_;
  std::function<void()> input_callback_;
  std::function<void(console_protocol::TerminalSize)> resize_callback_;
  std::string state_ = "no back end";
  std::uint64_t bytes_from_guest_ = 0;
  std::uint64_t bytes_to_guest_ = 0;
  std::uint64_t bytes_typed_in_pty_ = 0;
  std::uint64_t bytes_typed_by_viewers_ = 0;
};

}  // namespace cellink::hypervisor
