// cellink-guest-bulk [--wait] DEVICE BYTES: writes the bulk transfer of
// console_bulk_format.hpp to the terminal DEVICE (/dev/hvc0 for the virtio
// console, /dev/ttyS1 for QEMU's emulated 16550), in raw mode, and reports
// on stdout how long the writes took:
//   "CELLINK-GUEST: bulk DEVICE BYTES bytes written in S s"
// The host checks every byte and measures the rate on its side.
//
// --wait: retry opening DEVICE for up to 120 s. Run from /init at boot
// (`cellink.run=cellink-guest-bulk cellink.arg=--wait ...`, the console
// benchmark), /dev/hvc0 opens only once virtio_console has found the back
// end, some time after virtio_ivshmem.ko loaded; until then opening it fails
// (ENODEV).
#include <fcntl.h>
#include <termios.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "console_bulk_format.hpp"

namespace {

constexpr std::chrono::seconds kWaitForDevice{120};
constexpr std::chrono::milliseconds kWaitStep{50};

// open(), retried until `wait` passed when `wait` is nonzero.
int open_device(const char* device, std::chrono::milliseconds wait) {
  const auto deadline = std::chrono::steady_clock::now() + wait;
  for (;;) {
    const int fd = ::open(device, O_WRONLY | O_NOCTTY);
    if (fd >= 0 || std::chrono::steady_clock::now() >= deadline) return fd;
    std::this_thread::sleep_for(kWaitStep);
  }
}

bool write_all(int fd, const char* data, std::size_t size) {
  while (size > 0) {
    const ssize_t wrote = ::write(fd, data, size);
    if (wrote < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    data += wrote;
    size -= static_cast<std::size_t>(wrote);
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  using cellink::guest_test::bulk_byte;
  const bool wait = argc == 4 && std::strcmp(argv[1], "--wait") == 0;
  if (argc != 3 && !wait) {
    std::fprintf(stderr, "usage: %s [--wait] DEVICE BYTES\n", argv[0]);
    return 2;
  }
  const char* device = argv[wait ? 2 : 1];
  const unsigned long long bytes = std::strtoull(argv[wait ? 3 : 2], nullptr, 0);
  const int fd = open_device(device, wait ? kWaitForDevice : std::chrono::milliseconds{0});
  if (fd < 0) {
    std::printf("CELLINK-GUEST: bulk cannot open %s: %s\n", device, std::strerror(errno));
    return 1;
  }
  termios mode{};
  if (::tcgetattr(fd, &mode) == 0) {
    ::cfmakeraw(&mode);
    (void)::tcsetattr(fd, TCSANOW, &mode);
  }
  const auto start = std::chrono::steady_clock::now();
  const std::string begin =
      std::string{cellink::guest_test::kBulkBegin} + std::to_string(bytes) + "\n";
  bool ok = write_all(fd, begin.data(), begin.size());
  cellink::guest_test::Fnv1a64 checksum;
  std::vector<char> chunk(16384);
  for (unsigned long long sent = 0; ok && sent < bytes;) {
    const std::size_t size =
        static_cast<std::size_t>(std::min<unsigned long long>(chunk.size(), bytes - sent));
    for (std::size_t i = 0; i < size; ++i) {
      const std::uint8_t byte = bulk_byte(sent + i);
      chunk[i] = static_cast<char>(byte);
      checksum.add(byte);
    }
    ok = write_all(fd, chunk.data(), size);
    sent += size;
  }
  const std::string end = cellink::guest_test::bulk_end_line(bytes, checksum.value);
  ok = ok && write_all(fd, end.data(), end.size());
  (void)::tcdrain(fd);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (!ok) {
    std::printf("CELLINK-GUEST: bulk write to %s failed: %s\n", device, std::strerror(errno));
    return 1;
  }
  std::printf("CELLINK-GUEST: bulk %s %llu bytes written in %.3f s\n", device, bytes, seconds);
  return 0;
}
