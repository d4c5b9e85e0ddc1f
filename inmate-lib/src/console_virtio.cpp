// console_virtio: the inmate console over a virtio-console link
// (console.hpp, console_attach_virtio()). Finds the link, owns the
// VirtioConsole (virtio_console.hpp) and installs it as console.cpp's sink.
//
// One user at a time: `busy` is set while the main loop is inside the
// VirtioConsole; a console_write() that comes meanwhile (from an interrupt
// handler, or a print of the probe itself) finds it set and goes to the
// 16550.
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <new>

#include "cellink/inmate-lib/console.hpp"
#include "cellink/inmate-lib/cpu.hpp"
#include "cellink/inmate-lib/ivshmem_probe.hpp"
#include "cellink/inmate-lib/lapic.hpp"
#include "cellink/inmate-lib/print.hpp"
#include "cellink/inmate-lib/timing.hpp"
#include "cellink/inmate-lib/virtio_console.hpp"
#include "cellink/ivshmem/protocol.hpp"
#include "console_sink.hpp"

namespace cellink::inmate {
namespace {

// How many ivshmem functions console_attach_virtio() looks at.
constexpr unsigned kMaxFunctions = 8;
constexpr std::uint16_t kConsoleProtocol =
    ivshmem::protocol::kVirtioFrontBase + ivshmem::protocol::kVirtioDeviceConsole;

IvshmemFunction g_function;
alignas(VirtioConsole) std::byte g_storage[sizeof(VirtioConsole)];
VirtioConsole* g_console = nullptr;
// Set while someone is inside g_console. An interrupt handler may come in
// between any two instructions of the main loop, so taking it is one atomic
// exchange (acquire: nothing of the virtio path moves above it) and leaving
// it a release store (nothing moves below it); one CPU, so no fence more.
std::atomic<bool> g_busy{false};
bool g_was_up = false;  // for the "up" / "gone" lines
std::uint64_t g_virtio_bytes = 0;
std::uint64_t g_dropped = 0;
std::uint64_t g_timeouts_reported = 0;  // tx_timeouts() when the last drop line was printed

bool enter() noexcept {
  return !g_busy.exchange(true, std::memory_order_acquire);
}
void leave() noexcept {
  g_busy.store(false, std::memory_order_release);
}

std::uint64_t clock_now(void*) noexcept {
  return now_ns();
}
void clock_relax(void*) noexcept {
  cpu_relax();
}

// Prints on the 16550 only (g_busy is held around every call).
void report_change(bool up) {
  if (up == g_was_up) return;
  g_was_up = up;
  if (up) {
    print("inmate: virtio console up: %s, %llu-byte buffers; output moves to it\n",
          g_console->driver().event_idx() ? "EVENT_IDX" : "flag suppression",
          static_cast<unsigned long long>(g_console->buffer_size()));
  } else {
    print("inmate: virtio console down (%s); output goes to the 16550\n",
          transports::describe(g_console->driver().status()));
  }
}

bool service_locked() {
  const bool up = g_console->service();
  report_change(up);
  return up;
}

std::size_t sink_write(const char* bytes, std::size_t size) noexcept {
  if (g_console == nullptr || !enter()) return 0;
  std::size_t taken = 0;
  if (service_locked()) {
    taken = g_console->write(bytes, size, /*crlf=*/true);
    g_virtio_bytes += taken;
    if (taken < size && g_console->up()) {
      // The host kept every buffer: drop the rest, counted, and say so on
      // the 16550 once per stall (later writes drop without waiting).
      g_dropped += size - taken;
      if (g_console->tx_timeouts() != g_timeouts_reported) {
        g_timeouts_reported = g_console->tx_timeouts();
        print(
            "inmate: virtio console: the host took no buffer back for 1 s; dropping output "
            "until it does (%llu bytes dropped so far)\n",
            static_cast<unsigned long long>(g_dropped));
      }
      taken = size;
    } else {
      report_change(g_console->up());
    }
  }
  leave();
  return taken;
}

std::size_t sink_read(char* out, std::size_t size) noexcept {
  if (g_console == nullptr || !enter()) return 0;
  const std::size_t got = service_locked() ? g_console->read(out, size) : 0;
  leave();
  return got;
}

constexpr ConsoleSink kSink{sink_write, sink_read};

}  // namespace

bool console_attach_virtio(bool event_idx) {
  if (g_console != nullptr) return true;
  // The MSI-X routes of the probe target this CPU's local APIC.
  lapic_init();
  for (unsigned index = 0; index < kMaxFunctions; ++index) {
    const ProbeResult result = probe_ivshmem_protocol(index, g_function, kConsoleProtocol);
    if (result == ProbeResult::no_function) break;
    if (result != ProbeResult::ok) continue;
    static constexpr VirtioConsoleClock kClock{clock_now, clock_relax, nullptr};
    g_console = new (g_storage) VirtioConsole(*g_function.device(), kClock, event_idx);
    console_set_sink(&kSink);
    print("inmate: console link found (virtio-front:console); back end %s\n",
          g_console->driver().backend_ready() ? "READY" : "not READY yet: the 16550 until it is");
    (void)console_service();
    return true;
  }
  print("inmate: no console link (protocol 0x%x): the console stays on the 16550\n",
        kConsoleProtocol);
  return false;
}

bool console_service() {
  if (g_console == nullptr || !enter()) return false;
  const bool up = service_locked();
  leave();
  return up;
}

bool console_prepare_to_sleep() {
  if (g_console == nullptr || !enter()) return true;
  // A v2 device in one-shot mode: interrupts back on before we halt.
  g_function.device()->rearm_interrupts();
  const bool safe = g_console->prepare_to_sleep();
  leave();
  return safe;
}

ConsoleCounters console_counters() {
  ConsoleCounters counters;
  counters.uart_bytes = console_uart_bytes();
  counters.received = console_received_bytes();
  counters.virtio_bytes = g_virtio_bytes;
  counters.dropped = g_dropped;
  if (g_console != nullptr) {
    counters.virtio_attached = true;
    counters.virtio_up = g_console->up();
    counters.virtio_probes = g_console->probes();
    counters.virtio_resets = g_console->resets();
    counters.virtio_buffer = g_console->buffer_size();
  }
  return counters;
}

}  // namespace cellink::inmate
