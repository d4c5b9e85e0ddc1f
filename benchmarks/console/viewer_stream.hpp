// ViewerStream: console_bench as a read-only viewer of a console
// (`cellink console CELL`'s protocol, console_viewer_protocol.hpp): it
// connects to RUNTIME_DIR/console/<cell>.sock, says hello, and turns the
// frames it reads back into the guest's output bytes.
//
// Why the virtio rows read here and not from the PTY: the service never
// stalls the guest for a slow reader. The PTY keeps about 20 KiB in the
// kernel (handed out 4 KiB per read by the line discipline) and 64 KiB in
// the service, then drops, counted only in the status file; a viewer gets a
// 1 MiB queue plus the socket's buffer, and one that falls further behind is
// disconnected with a `refused` frame. A virtio console moving megabytes a
// second outruns a PTY reader on a busy 2-CPU machine; over the viewer
// socket a reader that cannot keep up fails loudly instead of seeing holes.
//
// Threading: one thread.
#pragma once

#include <filesystem>
#include <string>
#include <string_view>

#include "cellink/hypervisor/console_viewer_protocol.hpp"
#include "cellink/linux-uio/unique_fd.hpp"

namespace cellink::bench::console {

class ViewerStream {
 public:
  // Connects and sends the hello; throws std::runtime_error when it cannot.
  explicit ViewerStream(const std::filesystem::path& socket);

  // Non-blocking.
  [[nodiscard]] int fd() const noexcept { return fd_.get(); }

  // The guest output carried by the frames in `raw` (what read() gave),
  // valid until the next call. Throws std::runtime_error on a `refused`
  // frame (its text) or a malformed stream.
  std::string_view decode(std::string_view raw);

  // The notices the service sent, one per line.
  [[nodiscard]] const std::string& notices() const noexcept { return notices_; }

 private:
  linux_uio::UniqueFd fd_;
  hypervisor::console_protocol::FrameReader reader_;
  std::string output_;
  std::string notices_;
};

}  // namespace cellink::bench::console
