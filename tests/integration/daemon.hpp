// Daemon: `cellink daemon` as a child process, for the integration tests.
//
// Each Daemon serves its own runtime directory (normally inside the test's
// TempDir), so tests can run in parallel. The constructor returns once the
// daemon logged that it is ready and its control socket answered a status
// query. kill9() and terminate() stop it; restart() starts a new one with
// the same arguments, as an operator would after a crash. The logs of every
// incarnation stay available for failure messages.
//
// Threading: one test thread.
#pragma once

#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "process.hpp"

namespace cellink::integration {

struct DaemonSettings {
  std::filesystem::path runtime_dir;
  std::optional<std::filesystem::path> config;  // the embedded default when empty
  std::optional<int> reattach_grace_ms;
};

class Daemon {
 public:
  explicit Daemon(DaemonSettings settings);

  [[nodiscard]] const std::filesystem::path& runtime_dir() const { return settings_.runtime_dir; }
  [[nodiscard]] Process& process() { return *incarnations_.back(); }
  [[nodiscard]] pid_t pid() const { return incarnations_.back()->pid(); }

  // The control socket's answer to "status".
  [[nodiscard]] nlohmann::json status_json() const;
  // Waits for a log line of the current incarnation.
  std::string expect_log(const std::string& pattern, milliseconds timeout = kEventTimeout);

  void kill9();
  // SIGTERM, then waits for the exit; returns the exit code.
  int terminate();
  // Starts a new daemon with the same arguments; the previous one must have
  // exited.
  void restart();

  // Every incarnation's command line, output and exit status.
  [[nodiscard]] std::string transcript() const;

 private:
  void start();

  DaemonSettings settings_;
  std::vector<std::unique_ptr<Process>> incarnations_;  // the last one is current
};

// Asks the daemon serving `runtime_dir` for its status over control.sock.
// Throws ExpectationFailed when nobody answers with JSON within `timeout`.
[[nodiscard]] nlohmann::json query_status(const std::filesystem::path& runtime_dir,
                                          milliseconds timeout = kEventTimeout);

// The status entry of `cell` on `link`; throws when there is none.
[[nodiscard]] const nlohmann::json& peer_status(const nlohmann::json& status,
                                                const std::string& link, const std::string& cell);

// A configuration with one cell per name in `cells` and one link over all of
// them, in that order (so cells[i] is peer i).
[[nodiscard]] std::string link_config(const std::string& link,
                                      const std::vector<std::string>& cells, unsigned vectors,
                                      const std::string& backing = "memfd");

}  // namespace cellink::integration
