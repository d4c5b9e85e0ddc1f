// Agent for the integration tests. See agent.hpp.
#include "agent.hpp"

#include <regex>

namespace cellink::integration {
namespace {

std::string hex(std::uint64_t value) {
  char text[24];
  std::snprintf(text, sizeof(text), "0x%llx", static_cast<unsigned long long>(value));
  return text;
}

// The capture groups of `pattern` in `line`; group 0 is the whole match.
std::vector<std::string> match(const std::string& line, const std::string& pattern) {
  std::smatch found;
  if (!std::regex_search(line, found, std::regex(pattern))) {
    throw ExpectationFailed("line '" + line + "' does not match /" + pattern + "/");
  }
  return {found.begin(), found.end()};
}

}  // namespace

std::vector<std::uint32_t> parse_id_list(const std::string& text) {
  std::vector<std::uint32_t> ids;
  std::size_t start = 0;
  while (start < text.size()) {
    const std::size_t end = std::min(text.find(',', start), text.size());
    ids.push_back(static_cast<std::uint32_t>(std::stoul(text.substr(start, end - start))));
    start = end + 1;
  }
  return ids;
}

Agent::Agent(const std::filesystem::path& runtime_dir, const std::string& link,
             const std::string& cell)
    : cell_(cell),
      process_(std::make_unique<Process>(
          std::vector<std::string>{CELLINK_TEST_PEER_BIN, "--runtime-dir", runtime_dir.string(),
                                   "--link", link, "--cell", cell})) {
  const std::string line = process_->expect_line("^(ready|error) ");
  if (line.starts_with("error")) {
    throw ExpectationFailed("agent for cell '" + cell + "' did not attach\n" +
                            process_->transcript());
  }
  const std::vector<std::string> fields =
      match(line, "^ready id=(\\d+) peers=(\\d+) vectors=(\\d+) present=([0-9,]*)$");
  id_ = static_cast<std::uint32_t>(std::stoul(fields[1]));
  peers_ = static_cast<std::uint32_t>(std::stoul(fields[2]));
  vectors_ = static_cast<std::uint32_t>(std::stoul(fields[3]));
  present_at_start_ = parse_id_list(fields[4]);
}

std::string Agent::command(const std::string& line, const std::string& answer_pattern) {
  process_->send_line(line);
  return process_->expect_line(answer_pattern);
}

std::string Agent::doorbell(std::uint32_t peer, std::uint32_t vector) {
  const std::string prefix = "doorbell " + std::to_string(peer) + " " + std::to_string(vector);
  const std::string answer = command(prefix, "^" + prefix + " ");
  return answer.substr(prefix.size() + 1);
}

void Agent::ring(std::uint32_t peer, std::uint32_t vector, unsigned times) {
  const std::string prefix = "doorbell " + std::to_string(peer) + " " + std::to_string(vector);
  for (unsigned i = 0; i < times; ++i) process_->send_line(prefix);
  for (unsigned i = 0; i < times; ++i) {
    const std::string answer = process_->expect_line("^" + prefix + " ");
    if (answer != prefix + " ok") {
      throw ExpectationFailed("cell '" + cell_ + "': '" + answer + "' instead of ok\n" +
                              process_->transcript());
    }
  }
}

void Agent::set_state(std::uint32_t value) {
  (void)command("set_state " + hex(value), "^state_set " + hex(value) + "$");
}

std::uint32_t Agent::peer_state(std::uint32_t peer) {
  const std::string answer =
      command("peer_state " + std::to_string(peer),
              "^(peer_state " + std::to_string(peer) + " 0x[0-9a-f]+|error .*)$");
  const std::vector<std::string> fields = match(answer, "^peer_state \\d+ (0x[0-9a-f]+)$");
  return static_cast<std::uint32_t>(std::stoul(fields[1], nullptr, 16));
}

std::vector<std::uint32_t> Agent::present() {
  const std::string answer = command("present", "^present ");
  return parse_id_list(answer.substr(std::string("present ").size()));
}

void Agent::write_output(std::uint64_t offset, std::uint8_t byte) {
  (void)command("write_output " + std::to_string(offset) + " " + hex(byte),
                "^output_written " + std::to_string(offset) + " " + hex(byte) + "$");
}

std::uint8_t Agent::read_output(std::uint32_t peer, std::uint64_t offset) {
  const std::string prefix = "output " + std::to_string(peer) + " " + std::to_string(offset);
  const std::string answer =
      command("read_output " + std::to_string(peer) + " " + std::to_string(offset),
              "^(" + prefix + " 0x[0-9a-f]+|error .*)$");
  const std::vector<std::string> fields = match(answer, "^output \\d+ \\d+ (0x[0-9a-f]+)$");
  return static_cast<std::uint8_t>(std::stoul(fields[1], nullptr, 16));
}

void Agent::sync() {
  const std::string token = std::to_string(++next_sync_);
  (void)command("sync " + token, "^synced " + token + "$");
}

void Agent::quit() {
  process_->send_line("quit");
  const int code = process_->wait_exit();
  if (code != 0) {
    throw ExpectationFailed("agent '" + cell_ + "' exited with " + std::to_string(code) +
                            " after quit\n" + process_->transcript());
  }
}

std::string Agent::expect_event(const std::string& kind, const std::string& fields,
                                milliseconds timeout) {
  std::string pattern = "^event " + kind + " ";
  if (!fields.empty()) pattern += ".*\\b" + fields + "( |$)";
  return process_->expect_line(pattern, timeout);
}

std::vector<std::string> Agent::take_events(const std::string& kind) {
  return process_->take_lines("^event " + kind + " ");
}

std::map<std::uint32_t, std::uint64_t> Agent::take_doorbells() {
  std::map<std::uint32_t, std::uint64_t> counts;
  for (const std::string& line : take_events("doorbell")) {
    const std::vector<std::string> fields = match(line, "vector=(\\d+) count=(\\d+)");
    counts[static_cast<std::uint32_t>(std::stoul(fields[1]))] += std::stoull(fields[2]);
  }
  return counts;
}

std::uint64_t Agent::await_doorbells(std::uint32_t vector, std::uint64_t count,
                                     milliseconds timeout) {
  const Clock::time_point deadline = Clock::now() + timeout;
  std::uint64_t sum = 0;
  while (sum < count) {
    const auto left = std::chrono::ceil<milliseconds>(deadline - Clock::now());
    const std::string line = expect_event("doorbell", "vector=" + std::to_string(vector),
                                          std::max(left, milliseconds(0)));
    sum += std::stoull(match(line, "count=(\\d+)")[1]);
  }
  return sum;
}

}  // namespace cellink::integration
