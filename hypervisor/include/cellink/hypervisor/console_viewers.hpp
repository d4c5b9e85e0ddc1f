// ConsoleViewers: the viewer socket of one cell's console and the viewers
// attached to it (`cellink console CELL`).
//
// One listening UNIX stream socket, RUNTIME_DIR/console/<cell>.sock,
// speaking the viewer protocol (console_viewer_protocol.hpp). Any number of
// viewers; each gets the scrollback, then live output. Exactly one may type:
// the first that asks for read_write in its hello. A second one asking for
// it is refused ("... attach with --read-only, or wait until it
// detaches") and closed; read-only viewers never type (input from one is a
// protocol error).
//
// A slow viewer never stalls the guest or the others: each viewer has a
// bounded queue (`queue_limit` bytes of frames), and one that falls further
// behind gets a last `refused` frame saying so and is disconnected; the
// others lose nothing. A viewer that was told to go has 2 s to read its
// last frame, and a connection that says no hello 10 s (reap()). At most
// kMaxViewers connections at once.
//
// The owner (Console) gets the writer's input and resizes through
// ViewerEvents, and can pause reading input (back-pressure) while the back
// end has not taken what was typed.
//
// The destructor closes every viewer and removes the socket file.
//
// Threading: the console loop's thread only.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "cellink/hypervisor/console_loop.hpp"
#include "cellink/hypervisor/console_viewer_protocol.hpp"
#include "cellink/linux-uio/unique_fd.hpp"

namespace cellink::hypervisor {

struct ViewerEvents {
  std::function<std::string()> scrollback;                     // replayed on attach
  std::function<void(std::span<const std::byte>)> input;       // from the writer
  std::function<void(console_protocol::TerminalSize)> resize;  // from the writer
  std::function<void()> changed;                               // a viewer came or went
};

struct ViewerInfo {
  pid_t pid = 0;
  console_protocol::ViewerMode mode = console_protocol::ViewerMode::read_only;
  std::size_t queued = 0;  // bytes waiting for it
};

class ConsoleViewers {
 public:
  static constexpr std::size_t kDefaultQueueLimit = std::size_t{1024} * 1024;
  static constexpr std::chrono::milliseconds kGoodbyeGrace{2000};
  // A connection that sent no hello by then is closed.
  static constexpr std::chrono::milliseconds kHelloTimeout{10000};
  // More connections than this are refused.
  static constexpr std::size_t kMaxViewers = 64;

  // Binds `socket_path` (a stale file there is replaced: the caller holds
  // the service lock). Throws std::runtime_error naming the path.
  ConsoleViewers(ConsoleLoop& loop, std::string cell, std::filesystem::path socket_path,
                 ViewerEvents events, std::size_t queue_limit = kDefaultQueueLimit);
  ~ConsoleViewers();
  ConsoleViewers(const ConsoleViewers&) = delete;
  ConsoleViewers& operator=(const ConsoleViewers&) = delete;

  // Sends guest output to every attached viewer.
  void broadcast(std::span<const std::byte> output);
  // Sends a notice to every attached viewer.
  void notice(const std::string& text);
  // Stops (true) or resumes reading the writer's socket.
  void set_input_paused(bool paused);
  // Closes viewers that were told to go and did not read it in time, and
  // connections that never said hello.
  void reap(std::chrono::steady_clock::time_point now);

  [[nodiscard]] const std::filesystem::path& socket_path() const noexcept { return socket_path_; }
  [[nodiscard]] std::vector<ViewerInfo> attached() const;
  [[nodiscard]] bool has_writer() const noexcept { return writer_ != 0; }
  // Viewers disconnected because their queue overflowed.
  [[nodiscard]] std::uint64_t overflowed() const noexcept { return overflowed_; }

  struct Viewer;  // private to console_viewers.cpp

 private:
  void accept_all();
  void on_event(std::uint64_t id, std::uint32_t events);
  void handle_frame(Viewer& viewer, console_protocol::Frame frame);
  void handle_hello(Viewer& viewer, const console_protocol::Frame& frame);
  void send(Viewer& viewer, std::string frames);
  void flush(Viewer& viewer);
  // Queues a last `refused` frame and closes once it is read (or later).
  void refuse(Viewer& viewer, const std::string& why);
  void close(std::uint64_t id);
  void update_events(Viewer& viewer);

  ConsoleLoop& loop_;
  std::string cell_;
  std::filesystem::path socket_path_;
  ViewerEvents events_;
  std::size_t queue_limit_;
  linux_uio::UniqueFd listener_;
  std::map<std::uint64_t, std::unique_ptr<Viewer>> viewers_;
  std::uint64_t next_id_ = 1;
  std::uint64_t writer_ = 0;  // id of the viewer that may type; 0: none
  bool input_paused_ = false;
  std::uint64_t overflowed_ = 0;
};

}  // namespace cellink::hypervisor
