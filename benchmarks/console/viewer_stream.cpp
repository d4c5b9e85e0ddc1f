#include "viewer_stream.hpp"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <optional>
#include <stdexcept>

namespace cellink::bench::console {

namespace protocol = hypervisor::console_protocol;

ViewerStream::ViewerStream(const std::filesystem::path& socket) {
  fd_ = linux_uio::UniqueFd{::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)};
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  if (!fd_ || socket.string().size() >= sizeof address.sun_path) {
    throw std::runtime_error("cannot make a socket for " + socket.string());
  }
  std::strcpy(address.sun_path, socket.c_str());
  if (::connect(fd_.get(), reinterpret_cast<const sockaddr*>(&address), sizeof address) != 0) {
    throw std::runtime_error("cannot connect to " + socket.string() + ": " + std::strerror(errno));
  }
  const std::string hello = protocol::encode_hello(
      {protocol::kViewerProtocolVersion, protocol::ViewerMode::read_only, {80, 25}});
  if (::write(fd_.get(), hello.data(), hello.size()) != static_cast<ssize_t>(hello.size())) {
    throw std::runtime_error("cannot say hello on " + socket.string() + ": " +
                             std::strerror(errno));
  }
  (void)::fcntl(fd_.get(), F_SETFL, O_NONBLOCK);
}

std::string_view ViewerStream::decode(std::string_view raw) {
  output_.clear();
  reader_.feed(raw.data(), raw.size());
  while (std::optional<protocol::Frame> frame = reader_.next()) {
    switch (frame->type) {
      case protocol::FrameType::output: output_ += frame->payload; break;
      case protocol::FrameType::notice: notices_ += frame->payload + "\n"; break;
      case protocol::FrameType::refused:
        throw std::runtime_error("the console service disconnected the bench's viewer: " +
                                 frame->payload);
      case protocol::FrameType::welcome: break;
      default:
        throw std::runtime_error("the console service sent a " +
                                 std::string(protocol::describe(frame->type)) + " frame");
    }
  }
  if (!reader_.error().empty()) {
    throw std::runtime_error("the viewer stream is malformed: " + reader_.error());
  }
  return output_;
}

}  // namespace cellink::bench::console
