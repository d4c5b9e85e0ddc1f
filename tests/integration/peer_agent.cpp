// cellink-test-peer: one cell as a scriptable process, for the integration
// tests.
//
//   cellink-test-peer --runtime-dir D --link L --cell C
//
// Attaches with HostDevice and prints, one line each, flushed:
//   ready id=<id> peers=<n> vectors=<n> present=<ids, self included>
//   event <kind> vector=<v> count=<c> peer=<p> detail=<text>   (every DeviceEvent)
// and answers commands read from stdin, one per line:
//   doorbell <peer> <vector>   -> doorbell <peer> <vector> <ok|no_such_peer|peer_absent|
//                                                            no_such_vector|failed>
//   set_state <value>          -> state_set <value as 0x...>
//   peer_state <peer>          -> peer_state <peer> <value as 0x...>
//   present                    -> present <ids, self included>
//   write_output <offset> <b>  -> output_written <offset> <b>   (own output section)
//   read_output <peer> <off>   -> output <peer> <off> <b>
//   sync <token>               -> synced <token>
//   quit                       -> exit 0 (so does EOF on stdin)
// Numbers may be decimal or 0x-hex. A failed connect prints `error <what>`
// and exits 2; a bad command prints `error <what>` and carries on.
//
// `sync` is the tests' barrier: device events are drained before each batch
// of commands, so once `synced` is printed, every doorbell rung before the
// `sync` was sent has been printed too.
//
// The poll loop wakes at least every 50 ms to call wait(0), which is what
// drives re-attach while the daemon is down.
#include <poll.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "cellink/ivshmem/device.hpp"
#include "cellink/linux-uio/host_device.hpp"

namespace {

using cellink::ivshmem::DoorbellStatus;
using cellink::linux_uio::DeviceEvent;
using cellink::linux_uio::HostDevice;

constexpr int kPollIntervalMs = 50;

void print_line(const std::string& line) {
  std::fputs(line.c_str(), stdout);
  std::fputc('\n', stdout);
  std::fflush(stdout);
}

const char* token(DoorbellStatus status) {
  switch (status) {
    case DoorbellStatus::ok: return "ok";
    case DoorbellStatus::no_such_peer: return "no_such_peer";
    case DoorbellStatus::peer_absent: return "peer_absent";
    case DoorbellStatus::no_such_vector: return "no_such_vector";
    case DoorbellStatus::failed: return "failed";
  }
  return "unknown";
}

std::string hex(std::uint64_t value) {
  char text[24];
  std::snprintf(text, sizeof(text), "0x%llx", static_cast<unsigned long long>(value));
  return text;
}

std::string present_list(const HostDevice& device) {
  std::string list;
  for (std::uint32_t peer = 0; peer < device.peer_count(); ++peer) {
    if (!device.peer_present(peer)) continue;
    if (!list.empty()) list += ',';
    list += std::to_string(peer);
  }
  return list;
}

// Parses a decimal or 0x-hex number; false on anything else.
bool parse_number(const std::string& text, std::uint64_t& value) {
  if (text.empty() || text[0] == '-') return false;
  try {
    std::size_t used = 0;
    value = std::stoull(text, &used, 0);
    return used == text.size();
  } catch (const std::exception&) {
    return false;
  }
}

class Agent {
 public:
  explicit Agent(std::unique_ptr<HostDevice> device) : device_(std::move(device)) {}

  // Returns false when the agent should exit.
  bool run_command(const std::string& line) {
    std::istringstream words(line);
    std::string command;
    words >> command;
    std::vector<std::uint64_t> numbers;
    std::vector<std::string> texts;
    for (std::string word; words >> word;) texts.push_back(word);
    if (command == "quit") return false;
    if (command == "sync") {
      print_line("synced " + (texts.empty() ? std::string{} : texts[0]));
      return true;
    }
    for (const std::string& text : texts) {
      std::uint64_t value = 0;
      if (!parse_number(text, value)) {
        print_line(std::string("error not a number: '")
                       .append(text)
                       .append("' in '")
                       .append(line)
                       .append("'"));
        return true;
      }
      numbers.push_back(value);
    }
    if (command == "doorbell" && numbers.size() == 2) {
      const DoorbellStatus status = device_->doorbell(static_cast<std::uint32_t>(numbers[0]),
                                                      static_cast<std::uint32_t>(numbers[1]));
      print_line("doorbell " + std::to_string(numbers[0]) + " " + std::to_string(numbers[1]) + " " +
                 token(status));
    } else if (command == "set_state" && numbers.size() == 1) {
      device_->set_state(static_cast<std::uint32_t>(numbers[0]));
      print_line("state_set " + hex(numbers[0]));
    } else if (command == "peer_state" && numbers.size() == 1) {
      if (numbers[0] >= device_->peer_count()) {
        print_line("error peer " + std::to_string(numbers[0]) + " is not on the link");
        return true;
      }
      print_line("peer_state " + std::to_string(numbers[0]) + " " +
                 hex(device_->peer_state(static_cast<std::uint32_t>(numbers[0]))));
    } else if (command == "present" && numbers.empty()) {
      print_line("present " + present_list(*device_));
    } else if (command == "write_output" && numbers.size() == 2) {
      const auto section = device_->own_output_section();
      if (numbers[0] >= section.size() || numbers[1] > 0xff) {
        print_line("error offset or byte out of range: '" + line + "'");
        return true;
      }
      section[numbers[0]] = static_cast<std::byte>(numbers[1]);
      print_line("output_written " + std::to_string(numbers[0]) + " " + hex(numbers[1]));
    } else if (command == "read_output" && numbers.size() == 2) {
      if (numbers[0] >= device_->peer_count()) {
        print_line("error peer " + std::to_string(numbers[0]) + " is not on the link");
        return true;
      }
      const auto section = device_->output_section(static_cast<std::uint32_t>(numbers[0]));
      if (numbers[1] >= section.size()) {
        print_line("error offset " + std::to_string(numbers[1]) + " is outside the section");
        return true;
      }
      print_line("output " + std::to_string(numbers[0]) + " " + std::to_string(numbers[1]) + " " +
                 hex(static_cast<std::uint8_t>(section[numbers[1]])));
    } else {
      print_line("error unknown command '" + line + "'");
    }
    return true;
  }

  void print_events() {
    for (const DeviceEvent& event : device_->wait(std::chrono::milliseconds(0))) {
      print_line(std::string("event ") + cellink::linux_uio::event_kind_name(event.kind) +
                 " vector=" + std::to_string(event.vector) +
                 " count=" + std::to_string(event.count) + " peer=" + std::to_string(event.peer) +
                 " detail=" + event.detail);
    }
  }

  // Serves until quit or EOF on stdin.
  int serve() {
    std::string pending;
    for (;;) {
      pollfd watched[2] = {{STDIN_FILENO, POLLIN, 0}, {device_->event_fd(), POLLIN, 0}};
      if (::poll(watched, 2, kPollIntervalMs) < 0 && errno != EINTR) {
        print_line(std::string("error poll: ") + std::strerror(errno));
        return 3;
      }
      // Events first: this is what makes `sync` a barrier.
      print_events();
      if ((watched[0].revents & (POLLIN | POLLHUP | POLLERR)) == 0) continue;
      char bytes[4096];
      const ssize_t got = ::read(STDIN_FILENO, bytes, sizeof(bytes));
      if (got < 0 && errno == EINTR) continue;
      if (got <= 0) return 0;
      pending.append(bytes, static_cast<std::size_t>(got));
      for (std::size_t end; (end = pending.find('\n')) != std::string::npos;) {
        const std::string line = pending.substr(0, end);
        pending.erase(0, end + 1);
        if (!run_command(line)) return 0;
      }
    }
  }

  const HostDevice& device() const { return *device_; }

 private:
  std::unique_ptr<HostDevice> device_;
};

}  // namespace

int main(int argc, char** argv) {
  cellink::linux_uio::HostDeviceOptions options;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (i + 1 >= argc) {
      print_line("error " + flag + " needs a value");
      return 64;
    }
    const std::string value = argv[++i];
    if (flag == "--runtime-dir") {
      options.runtime_dir = value;
    } else if (flag == "--link") {
      options.link = value;
    } else if (flag == "--cell") {
      options.cell = value;
    } else {
      print_line("error unknown option " + flag +
                 "; usage: cellink-test-peer --runtime-dir D --link L --cell C");
      return 64;
    }
  }
  if (options.runtime_dir.empty() || options.link.empty() || options.cell.empty()) {
    print_line("error usage: cellink-test-peer --runtime-dir D --link L --cell C");
    return 64;
  }

  std::error_code error;
  std::string detail;
  std::unique_ptr<HostDevice> device = HostDevice::connect(options, error, detail);
  if (!device) {
    print_line("error " + detail);
    return 2;
  }
  Agent agent(std::move(device));
  const HostDevice& attached = agent.device();
  print_line("ready id=" + std::to_string(attached.id()) +
             " peers=" + std::to_string(attached.peer_count()) + " vectors=" +
             std::to_string(attached.vector_count()) + " present=" + present_list(attached));
  try {
    return agent.serve();
  } catch (const std::exception& failure) {
    print_line(std::string("error ") + failure.what());
    return 3;
  }
}
