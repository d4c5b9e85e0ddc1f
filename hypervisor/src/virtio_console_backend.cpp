// VirtioConsoleBackend: see virtio_console_backend.hpp.
#include "cellink/hypervisor/virtio_console_backend.hpp"

#include <sys/epoll.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cstring>
#include <system_error>
#include <utility>

#include <fmt/format.h>

#include "cellink/transports/virtio_ivshmem_fault.hpp"

namespace cellink::hypervisor {
namespace {

namespace vt = cellink::transports;

// The safety poll: a doorbell lost to a bug (ours or the guest's) costs at
// most this long, and the connection is retried at this pace too.
constexpr std::chrono::milliseconds kSafetyPoll{100};
// A guest without a terminal size gets the classic one.
constexpr vt::VirtioConsoleConfig kDefaultConfig{80, 25, 1, 0};

}  // namespace

VirtioConsoleBackend::VirtioConsoleBackend(ConsoleLoop& loop, Console& console,
                                           VirtioConsoleBackendOptions options)
    : loop_(loop), console_(console), options_(std::move(options)) {
  console_.on_input([this] { pump(); });
  console_.on_resize([this](console_protocol::TerminalSize) { resize_guest(); });
  poll_timer_ = loop_.every(std::max(kSafetyPoll, options_.connect_retry), [this] {
    if (link_) {
      pump();
    } else {
      try_connect();
    }
  });
  try_connect();
}

VirtioConsoleBackend::~VirtioConsoleBackend() {
  if (poll_timer_ >= 0) loop_.cancel(poll_timer_);
  console_.on_input({});
  console_.on_resize({});
  if (!link_) return;
  loop_.unwatch(link_->event_fd());
  // Our state 0: the guest's front end marks its device broken and probes
  // again when a back end is READY (docs/console.md, "Restarts").
  device_.stop();
}

std::uint16_t VirtioConsoleBackend::queue_size_for(std::uint64_t rw_bytes) noexcept {
  if (rw_bytes <= vt::kVirtioIvshmemPoolOffset) return 1;
  const std::uint64_t pages = (rw_bytes - vt::kVirtioIvshmemPoolOffset) / 4096 / 2;
  const std::uint64_t size = std::bit_floor(std::max<std::uint64_t>(pages, 1));
  return static_cast<std::uint16_t>(std::min<std::uint64_t>(size, 64));
}

void VirtioConsoleBackend::try_connect() {
  linux_uio::HostDeviceOptions options;
  options.runtime_dir = options_.runtime_dir;
  options.link = options_.link;
  options.cell = options_.backend_cell;
  std::error_code error;
  std::string detail;
  auto link = linux_uio::HostDevice::connect(options, error, detail);
  if (!link) {
    const std::string text = fmt::format("waiting for the daemon: {}", detail);
    if (text != connect_error_) {
      connect_error_ = text;
      console_.set_state(text);
    }
    return;
  }
  const vt::VirtioConsoleConfig config = device_config();
  const vt::VirtioIvshmemSpec spec{
      vt::virtio_device_id::kConsole, vt::feature_bit(vt::virtio_console::kFeatureSize),
      vt::virtio_console::kQueueCount, queue_size_for(link->layout().rw_section().size),
      std::as_bytes(std::span{&config, 1})};
  const vt::VirtioIvshmemError attached = device_.attach(*link, spec);
  if (attached != vt::VirtioIvshmemError::ok) {
    // A link that cannot carry a console (the daemon runs another
    // configuration than ours) is not fixed by retrying, and each retry
    // would be a join and a leave in the daemon's log: give up, say why.
    console_.set_state(
        fmt::format("cannot serve link '{}': {}; give the daemon and "
                    "`cellink console serve` the same --config",
                    options_.link, vt::describe(attached)));
    loop_.cancel(poll_timer_);
    poll_timer_ = -1;
    return;
  }
  link_ = std::move(link);
  connect_error_.clear();
  loop_.watch(link_->event_fd(), EPOLLIN, [this](std::uint32_t) { on_link_event(); });
  pump();
}

void VirtioConsoleBackend::on_link_event() {
  // Doorbells, joins and leaves all mean "look again": the device half reads
  // the state table and the header itself. wait(0) only drains the events.
  (void)link_->wait(std::chrono::milliseconds{0});
  pump();
}

void VirtioConsoleBackend::pump() {
  if (!link_ || pumping_) return;
  pumping_ = true;
  auto last_moved = std::chrono::steady_clock::now();
  for (;;) {
    const Device::Events events = device_.service();
    if (events.has(Device::Events::kReset)) console_.discard_input();
    if (events.has(Device::Events::kDriverOk)) resize_guest();
    std::uint64_t moved = 0;
    if (device_.running()) moved = drain_transmit() + fill_receive();
    const auto now = std::chrono::steady_clock::now();
    if (moved > 0 || events.has(Device::Events::kMorePending)) {
      last_moved = now;
      continue;
    }
    if (now - last_moved < options_.spin) continue;
    // Sleep only when arming found nothing new on either queue and no
    // register write is pending (the arm re-checks after its fence).
    const bool armed =
        device_.arm(vt::virtio_console::kTransmitQueue) &&
        (console_.input_pending() == 0 || device_.arm(vt::virtio_console::kReceiveQueue)) &&
        !device_.write_pending();
    if (armed) break;
  }
  pumping_ = false;
  report_state();
}

std::uint64_t VirtioConsoleBackend::drain_transmit() {
  Device::Queue* const queue = device_.queue(vt::virtio_console::kTransmitQueue);
  if (queue == nullptr) return 0;
  queue->disable_notify();
  // Copy first, return the chains, then hand the bytes on: a Linux guest
  // spins until its page is used, so it writes the next one while the log,
  // the PTY and the viewers take this one.
  output_.clear();
  std::uint64_t chains = 0;
  Device::Queue::Chain chain;
  while (queue->pop(chain) == vt::VirtqError::ok) {
    for (std::size_t i = 0; i < chain.readable_count(); ++i) {
      // The guest may change these bytes while we copy them: it only harms
      // its own output, and the copy never leaves the validated buffer.
      const std::span<const std::byte> bytes = chain.readable(i);
      output_.insert(output_.end(), bytes.begin(), bytes.end());
    }
    (void)queue->push(chain.head(), 0);
    ++chains;
  }
  if (chains > 0) (void)device_.notify(vt::virtio_console::kTransmitQueue);
  if (!output_.empty()) console_.guest_output(output_);
  return chains;
}

std::uint64_t VirtioConsoleBackend::fill_receive() {
  if (console_.input_pending() == 0) return 0;
  Device::Queue* const queue = device_.queue(vt::virtio_console::kReceiveQueue);
  if (queue == nullptr) return 0;
  queue->disable_notify();
  std::uint64_t chains = 0;
  Device::Queue::Chain chain;
  while (console_.input_pending() > 0 && queue->pop(chain) == vt::VirtqError::ok) {
    std::uint32_t written = 0;
    for (std::size_t i = 0; i < chain.writable_count() && console_.input_pending() > 0; ++i) {
      written += static_cast<std::uint32_t>(console_.take_input(chain.writable(i)));
    }
    (void)queue->push(chain.head(), written);
    ++chains;
  }
  if (chains > 0) (void)device_.notify(vt::virtio_console::kReceiveQueue);
  return chains;
}

vt::VirtioConsoleConfig VirtioConsoleBackend::device_config() const {
  vt::VirtioConsoleConfig config = kDefaultConfig;
  if (const auto size = console_.terminal_size(); size && size->cols > 0 && size->rows > 0) {
    config.cols = size->cols;
    config.rows = size->rows;
  }
  return config;
}

void VirtioConsoleBackend::resize_guest() {
  if (!link_) return;
  const vt::VirtioConsoleConfig config = device_config();
  (void)device_.update_config(std::as_bytes(std::span{&config, 1}));
}

void VirtioConsoleBackend::report_state() {
  std::string state;
  if (device_.broken()) {
    std::array<char, 256> line{};
    const std::size_t length = vt::describe_fault(device_.fault(), line);
    state = "broken: " + std::string{line.data(), length};
  } else if (device_.running()) {
    state = fmt::format("running: link '{}', features {:#x}{}", options_.link,
                        device_.negotiated_features(),
                        device_.event_idx() ? ", event-idx" : ", flag suppression");
  } else if (device_.phase() == Device::Phase::waiting) {
    state = "waiting for the guest's previous driver to reset";
  } else {
    state = "waiting for the guest's driver";
  }
  if (state == last_state_) return;
  last_state_ = state;
  console_.set_state(state);
}

}  // namespace cellink::hypervisor
