// Agent: one cellink-test-peer process (peer_agent.cpp) attached as a cell,
// with a method per stdin command. Each method waits for the command's
// answer and throws ExpectationFailed, with the agent's whole output, when it
// does not come or says something else.
//
// Threading: one test thread.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "process.hpp"

namespace cellink::integration {

class Agent {
 public:
  // Starts the agent and waits for its ready line.
  Agent(const std::filesystem::path& runtime_dir, const std::string& link, const std::string& cell);

  [[nodiscard]] const std::string& cell() const noexcept { return cell_; }
  [[nodiscard]] std::uint32_t id() const noexcept { return id_; }
  [[nodiscard]] std::uint32_t peers() const noexcept { return peers_; }
  [[nodiscard]] std::uint32_t vectors() const noexcept { return vectors_; }
  // Present peers (self included) when the greeting completed.
  [[nodiscard]] const std::vector<std::uint32_t>& present_at_start() const noexcept {
    return present_at_start_;
  }
  [[nodiscard]] Process& process() noexcept { return *process_; }
  [[nodiscard]] pid_t pid() const noexcept { return process_->pid(); }

  // The doorbell's status token: ok, no_such_peer, peer_absent, ...
  std::string doorbell(std::uint32_t peer, std::uint32_t vector);
  // Rings `times` doorbells; each must report ok.
  void ring(std::uint32_t peer, std::uint32_t vector, unsigned times);
  void set_state(std::uint32_t value);
  [[nodiscard]] std::uint32_t peer_state(std::uint32_t peer);
  [[nodiscard]] std::vector<std::uint32_t> present();
  void write_output(std::uint64_t offset, std::uint8_t byte);
  [[nodiscard]] std::uint8_t read_output(std::uint32_t peer, std::uint64_t offset);
  // Barrier: returns once every doorbell rung at this agent before the call
  // has been printed as an event.
  void sync();
  void quit();

  // Waits for `event <kind> ...` whose line also matches `fields` (a regex
  // such as "peer=2" or "vector=0"); returns the line.
  std::string expect_event(const std::string& kind, const std::string& fields = "",
                           milliseconds timeout = kEventTimeout);
  // Consumes every event line of `kind` printed so far. Never waits.
  std::vector<std::string> take_events(const std::string& kind);
  // Consumes the doorbell events printed so far and sums their counts per
  // vector. Call after sync() to get everything rung before it.
  std::map<std::uint32_t, std::uint64_t> take_doorbells();
  // Waits until the doorbells on `vector` (consumed from now on) add up to
  // at least `count`; returns the sum.
  std::uint64_t await_doorbells(std::uint32_t vector, std::uint64_t count,
                                milliseconds timeout = kEventTimeout);

 private:
  std::string command(const std::string& line, const std::string& answer_pattern);

  std::string cell_;
  std::unique_ptr<Process> process_;
  std::uint32_t id_ = 0;
  std::uint32_t peers_ = 0;
  std::uint32_t vectors_ = 0;
  std::vector<std::uint32_t> present_at_start_;
  unsigned next_sync_ = 0;
};

// "0,2,3" -> {0, 2, 3}
[[nodiscard]] std::vector<std::uint32_t> parse_id_list(const std::string& text);

}  // namespace cellink::integration
