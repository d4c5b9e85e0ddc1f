// One thread's buffers for a copying transport (pipe, UNIX socket, boost
// spsc_queue): the message it builds before the copy in, and the buffer the
// copy out lands in, which it then reads and checks like every other row
// (the whole payload written, one word per 64 bytes read, the sequence
// number checked).
#pragma once

#include <cstddef>
#include <cstdint>

#include "../harness.hpp"
#include "../workload.hpp"

namespace cellink::bench::suite {

class CopyBuffers {
 public:
  // `what` names the transport in a failure; a string literal.
  CopyBuffers(std::size_t size, const char* what)
      : size_(size), what_(what), out_(size), in_(size) {}

  // Builds message `sequence`; returns it for the copy in.
  [[nodiscard]] const std::byte* build(std::uint64_t sequence) noexcept {
    write_payload(out_.data(), size_, sequence, Workload::fill);
    return out_.data();
  }
  // Where the copy out goes.
  [[nodiscard]] std::byte* inbox() const noexcept { return in_.data(); }
  // Reads the received message; aborts unless it is message `sequence`.
  void check(std::uint64_t sequence) {
    const std::uint64_t got = read_payload(in_.data(), size_, Workload::fill, sink_);
    if (got != sequence) {
      fail("%s: message %llu arrived where %llu was expected", what_,
           static_cast<unsigned long long>(got), static_cast<unsigned long long>(sequence));
    }
  }
  [[nodiscard]] std::size_t size() const noexcept { return size_; }
  [[nodiscard]] std::uint64_t sink() const noexcept { return sink_; }

 private:
  std::size_t size_;
  const char* what_;
  AlignedBuffer out_;
  AlignedBuffer in_;
  std::uint64_t sink_ = 0;
};

}  // namespace cellink::bench::suite
