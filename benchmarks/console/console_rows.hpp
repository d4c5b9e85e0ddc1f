// The rows of console_bench (docs/benchmarks.md, "Console throughput"): one
// bulk transfer each, guest or inmate -> host, every byte checked on the host,
// timed on the host from the BEGIN marker to the END marker.
//
//   linux-virtio   the Linux guest writes /dev/hvc0: virtio_console over
//                  virtio_ivshmem.ko, served by `cellink console serve` on a
//                  `cellink daemon`; the bench reads it as a read-only viewer
//                  (viewer_stream.hpp says why), or from its PTY (--via pty)
//   linux-16550    the same program on /dev/ttyS1, a second ISA 16550 whose
//                  chardev is a UNIX socket the bench listens on
//   inmate-virtio  examples/inmate-console answers "bulk N" typed on its PTY,
//                  read as the Linux row reads
//   inmate-16550   the same inmate without a console link: "bulk N" on
//                  QEMU's stdin, the answer on QEMU's stdout (its 16550)
//
// Threading: the main thread only.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace cellink::bench::console {

struct Context {
  std::string cellink_cli;           // `cellink`
  std::string qemu;                  // qemu-system-x86_64, empty when missing
  std::filesystem::path guest_dir;   // vmlinuz, initramfs.cpio.gz
  std::filesystem::path inmate_dir;  // inmate-console.elf
  std::filesystem::path work_dir;    // private, one subdirectory per row
  std::uint64_t bytes = 0;           // payload bytes per row
  bool via_pty = false;              // virtio rows: read the PTY instead of the viewer socket
};

enum class Outcome { measured, skipped, failed };

struct RowResult {
  std::string row;
  Outcome outcome = Outcome::skipped;
  double seconds = 0;  // BEGIN marker to END marker, host side
  std::string note;    // the reason of a skip or a failure; extra facts of a figure
  [[nodiscard]] double mb_per_s(std::uint64_t bytes) const {
    return seconds > 0 ? static_cast<double>(bytes) / seconds / 1e6 : 0;
  }
};

struct Row {
  std::string name;
  std::string what;  // one line for the table's legend
  RowResult (*run)(const Context&, const std::string& name);
};

// The four rows, in the order they run and print.
[[nodiscard]] std::vector<Row> console_rows();

}  // namespace cellink::bench::console
