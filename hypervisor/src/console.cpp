// Console: one cell's log, scrollback, PTY and viewers, and the back end's
// interface (contract in the header).
#include "cellink/hypervisor/console.hpp"

#include <algorithm>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

namespace cellink::hypervisor {

using console_protocol::TerminalSize;
using console_protocol::ViewerMode;

Console::Console(ConsoleLoop& loop, ConsoleSettings settings, const ConsolePlaces& places,
                 std::function<void(bool urgent)> changed)
    : loop_(loop),
      settings_(std::move(settings)),
      console_dir_(places.console_dir),
      changed_(std::move(changed)),
      log_(ConsoleLogOptions{places.log_dir, settings_.cell, settings_.log_size,
                             settings_.log_files}),
      scrollback_(settings_.scrollback) {
  pty_ = std::make_unique<ConsolePty>(console_dir_ / (settings_.cell + ".pty"),
                                      places.pty_pending_limit);
  ViewerEvents events;
  events.scrollback = [this] { return scrollback_.contents(); };
  events.input = [this](std::span<const std::byte> bytes) {
    bytes_typed_by_viewers_ += bytes.size();
    accept_input(bytes);
  };
  events.resize = [this](TerminalSize size) { resize(size); };
  events.changed = [this] {
    if (!viewers_ || !viewers_->has_writer()) writer_size_.reset();
    changed_(true);
  };
  viewers_ = std::make_unique<ConsoleViewers>(loop_, settings_.cell,
                                              console_dir_ / (settings_.cell + ".sock"),
                                              std::move(events), places.viewer_queue_limit);
  watch_pty();
}

Console::~Console() {
  viewers_.reset();
  if (pty_) loop_.unwatch(pty_->master_fd());
}

std::filesystem::path Console::status_path() const {
  return console_dir_ / (settings_.cell + ".status.json");
}

void Console::watch_pty() {
  std::uint32_t events = 0;
  if (!input_paused_) events |= EPOLLIN;
  if (pty_->has_pending()) events |= EPOLLOUT;
  // EPOLLHUP is always reported, paused or not; on_pty_event handles it.
  // modify(), not watch(), when already watched: this may run inside the
  // PTY's own callback, which watch() would replace while it runs.
  if (loop_.watching(pty_->master_fd())) {
    loop_.modify(pty_->master_fd(), events);
  } else {
    loop_.watch(pty_->master_fd(), events, [this](std::uint32_t ready) { on_pty_event(ready); });
  }
}

void Console::on_pty_event(std::uint32_t events) {
  if ((events & EPOLLOUT) != 0) pty_->flush();
  bool hung_up = false;
  if ((events & (EPOLLIN | EPOLLHUP | EPOLLERR)) != 0 && !input_paused_) {
    std::byte bytes[4096];
    const std::size_t room =
        std::min(sizeof(bytes), kInputLimit - std::min(kInputLimit, input_.size()));
    const ConsolePty::ReadResult got = pty_->read(std::span(bytes, std::max<std::size_t>(room, 1)));
    if (got.bytes > 0) {
      bytes_typed_in_pty_ += got.bytes;
      accept_input(std::span(bytes, got.bytes));
    }
    hung_up = got.hung_up;
  } else if ((events & EPOLLHUP) != 0) {
    hung_up = true;  // paused: what was typed before the hang-up is lost with the PTY
  }
  if (hung_up) {
    // The last program on the slave closed it: a fresh PTY behind the same
    // link, so the next program sees neither stale output nor a dead line.
    loop_.unwatch(pty_->master_fd());
    try {
      pty_->reopen();
      spdlog::info("console '{}': the PTY was closed; re-opened as {} behind {}", settings_.cell,
                   pty_->slave_path(), pty_->link().string());
    } catch (const std::exception& error) {
      spdlog::error("console '{}': cannot re-open the PTY: {}; keeping the old one", settings_.cell,
                    error.what());
    }
    watch_pty();
    changed_(true);
    return;
  }
  watch_pty();
}

void Console::guest_output(std::span<const std::byte> bytes) {
  if (bytes.empty()) return;
  bytes_from_guest_ += bytes.size();
  log_.write(bytes);
  scrollback_.append(bytes);
  const bool had_pending = pty_->has_pending();
  pty_->write(bytes);
  if (pty_->has_pending() != had_pending) watch_pty();
  viewers_->broadcast(bytes);
  changed_(false);
}

void Console::accept_input(std::span<const std::byte> bytes) {
  input_.append(reinterpret_cast<const char*>(bytes.data()), bytes.size());
  update_input_pause();
  changed_(false);
  if (input_callback_) input_callback_();
}

std::size_t Console::take_input(std::span<std::byte> into) {
  const std::size_t taken = std::min(into.size(), input_.size());
  std::copy_n(reinterpret_cast<const std::byte*>(input_.data()), taken, into.begin());
  input_.erase(0, taken);
  bytes_to_guest_ += taken;
  update_input_pause();
  return taken;
}

void Console::discard_input() {
  input_.clear();
  update_input_pause();
}

void Console::update_input_pause() {
  // Pause when full; resume below half, so a back end that takes a byte at
  // a time does not flip the watches on every byte.
  const bool pause = input_paused_ ? input_.size() > kInputLimit / 2 : input_.size() >= kInputLimit;
  if (pause == input_paused_) return;
  input_paused_ = pause;
  viewers_->set_input_paused(pause);
  watch_pty();
}

std::optional<TerminalSize> Console::terminal_size() const {
  if (writer_size_) return writer_size_;
  return pty_->size();
}

void Console::resize(TerminalSize size) {
  if (size.cols == 0 || size.rows == 0) return;
  writer_size_ = size;
  pty_->set_size(size);
  if (resize_callback_) resize_callback_(size);
  changed_(true);
}

void Console::set_state(std::string state) {
  if (state == state_) return;
  spdlog::info("console '{}': {}", settings_.cell, state);
  state_ = std::move(state);
  changed_(true);
}

void Console::tick() {
  viewers_->reap(std::chrono::steady_clock::now());
}

nlohmann::json Console::status() const {
  nlohmann::json viewers = nlohmann::json::array();
  for (const ViewerInfo& viewer : viewers_->attached()) {
    viewers.push_back({{"pid", viewer.pid},
                       {"mode", viewer.mode == ViewerMode::read_write ? "read-write" : "read-only"},
                       {"queued_bytes", viewer.queued}});
  }
  nlohmann::json size = nullptr;
  if (const auto known = terminal_size()) size = {{"cols", known->cols}, {"rows", known->rows}};
  return {
      {"cell", settings_.cell},
      {"state", state_},
      {"pty", pty_->link().string()},
      {"pty_device", pty_->slave_path()},
      {"socket", viewers_->socket_path().string()},
      {"log", log_.path().string()},
      {"log_error", log_.error()},
      {"viewers", std::move(viewers)},
      {"terminal_size", std::move(size)},
      {"bytes_from_guest", bytes_from_guest_},
      {"bytes_to_guest", bytes_to_guest_},
      {"bytes_typed_in_pty", bytes_typed_in_pty_},
      {"bytes_typed_by_viewers", bytes_typed_by_viewers_},
      {"input_pending", input_.size()},
      {"pty_dropped_bytes", pty_->dropped()},
      {"pty_reopens", pty_->reopens()},
      {"viewers_disconnected_slow", viewers_->overflowed()},
      {"scrollback_bytes", scrollback_.size()},
  };
}

}  // namespace cellink::hypervisor
