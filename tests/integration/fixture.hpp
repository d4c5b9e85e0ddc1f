// IntegrationTest: the gtest fixture every integration test uses.
//
// It owns a TempDir (config files, the runtime dir, file backings), at most
// one Daemon and any number of Agents, and tears them down agents first, so
// nothing outlives the test. When a test failed, TearDown() prints every
// process's output, so a failure in CI explains itself.
#pragma once

#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "agent.hpp"
#include "daemon.hpp"
#include "process.hpp"

namespace cellink::integration {

class IntegrationTest : public ::testing::Test {
 protected:
  void TearDown() override {
    if (!HasFailure()) return;
    std::cerr << "===== processes of the failed test =====\n";
    if (daemon_) std::cerr << daemon_->transcript();
    for (const auto& agent : agents_) std::cerr << agent->process().transcript();
  }

  [[nodiscard]] std::filesystem::path runtime_dir() const { return temp_.path() / "run"; }

  std::filesystem::path write_config(const std::string& text) {
    return temp_.write_file("cellink.toml", text);
  }

  Daemon& start_daemon(std::optional<std::filesystem::path> config,
                       std::optional<int> reattach_grace_ms = std::nullopt) {
    daemon_ = std::make_unique<Daemon>(
        DaemonSettings{runtime_dir(), std::move(config), reattach_grace_ms});
    return *daemon_;
  }

  Agent& start_agent(const std::string& link, const std::string& cell) {
    agents_.push_back(std::make_unique<Agent>(runtime_dir(), link, cell));
    return *agents_.back();
  }

  [[nodiscard]] Daemon& daemon() { return *daemon_; }

  TempDir temp_;
  std::unique_ptr<Daemon> daemon_;
  std::vector<std::unique_ptr<Agent>> agents_;
};

}  // namespace cellink::integration
