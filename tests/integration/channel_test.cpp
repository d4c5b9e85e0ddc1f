// Channels through the real daemon between real processes
// (cellink-test-channel-peer, channel_peer.cpp). Every receiver checks every
// message's sequence number and every byte, and exits with `error` at the
// first gap, duplicate or corrupt byte; so `done` from a receiver means the
// whole stream arrived in order and intact.
//
// Scale: CELLINK_CHANNEL_MESSAGES (default 1,000,000: the load test's total
// and each restart test's stream) and CELLINK_RESTARTS (default 50) may be
// lowered for quick local runs. Each test prints the seed of its message
// contents and kill moments; CELLINK_CHANNEL_SEED replays one.
#include <time.h>

#include <algorithm>
#include <csignal>
#include <cstdint>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "fixture.hpp"

namespace cellink::integration {
namespace {

// A peer's death must reach the survivor's application this fast.
constexpr std::uint64_t kDetectionLimitNs = 100'000'000;
// The million-message test must stay under the ctest TIMEOUT (120 s).
constexpr milliseconds kMillionBudget{110'000};
// The longest a restarted peer may take to attach, hand-shake and report.
constexpr milliseconds kRestartTimeout{10'000};

std::uint64_t env_or(const char* name, std::uint64_t fallback) {
  const char* text = std::getenv(name);
  return text != nullptr && *text != '\0' ? std::stoull(text) : fallback;
}

std::uint64_t message_count() {
  return env_or("CELLINK_CHANNEL_MESSAGES", 1'000'000);
}

std::uint64_t monotonic_ns() {  // the clock the peers print as t=
  timespec now{};
  ::clock_gettime(CLOCK_MONOTONIC, &now);
  return static_cast<std::uint64_t>(now.tv_sec) * 1'000'000'000U +
         static_cast<std::uint64_t>(now.tv_nsec);
}

std::uint64_t test_seed() {
  const std::uint64_t seed = env_or("CELLINK_CHANNEL_SEED", std::random_device{}());
  std::cout << "[   seed   ] " << seed << " (replay with CELLINK_CHANNEL_SEED=" << seed << ")\n";
  ::testing::Test::RecordProperty("seed", std::to_string(seed));
  return seed;
}

// The number after `key` in `line` ("resume=" in "reset ... resume=42 ...").
std::uint64_t number_after(const std::string& line, const std::string& key) {
  const std::size_t at = line.find(key);
  if (at == std::string::npos) {
    throw ExpectationFailed("no '" + key + "' in the line '" + line + "'");
  }
  return std::stoull(line.substr(at + key.size()));
}

std::string two_peer_link(const std::string& name) {
  return "[[link]]\nname = \"" + name +
         "\"\ncells = [\"sender\", \"receiver\"]\noutput_section = \"64KiB\"\n\n";
}

// "stream" for the load and restart tests, one link per start order, and a
// three-peer link. 64 KiB output sections: 32 KiB rings between two peers.
std::string channel_config() {
  std::string text;
  for (const char* cell : {"sender", "receiver", "a", "b", "c"}) {
    text += "[[cell]]\nname = \"" + std::string(cell) + "\"\n\n";
  }
  text += two_peer_link("stream") + two_peer_link("receiver-first") + two_peer_link("sender-first");
  text += "[[link]]\nname = \"trio\"\ncells = [\"a\", \"b\", \"c\"]\noutput_section = \"64KiB\"\n";
  return text;
}

class ChannelPeerTest : public IntegrationTest {
 protected:
  void SetUp() override { start_daemon(write_config(channel_config())); }

  void TearDown() override {
    if (HasFailure()) {
      for (const auto& peer : peers_) std::cerr << peer->transcript();
    }
    IntegrationTest::TearDown();
  }

  // Starts cellink-test-channel-peer `mode` as `cell` on `link`.
  Process& start_peer(const std::string& mode, const std::string& link, const std::string& cell,
                      std::uint64_t seed, const std::vector<std::string>& arguments) {
    std::vector<std::string> argv = {CELLINK_TEST_CHANNEL_PEER_BIN,
                                     mode,
                                     "--runtime-dir",
                                     runtime_dir().string(),
                                     "--link",
                                     link,
                                     "--cell",
                                     cell,
                                     "--seed",
                                     std::to_string(seed)};
    argv.insert(argv.end(), arguments.begin(), arguments.end());
    peers_.push_back(std::make_unique<Process>(std::move(argv)));
    return *peers_.back();
  }

  // The sender or the receiver of `channels` streams of `count` messages.
  Process& start_stream(const std::string& mode, const std::string& link, std::uint64_t seed,
                        unsigned channels, std::uint64_t count,
                        std::vector<std::string> arguments = {}) {
    arguments.insert(arguments.begin(),
                     {"--channels", std::to_string(channels), "--count", std::to_string(count)});
    return start_peer(mode, link, mode == "stream-send" ? "sender" : "receiver", seed, arguments);
  }

  std::vector<std::unique_ptr<Process>> peers_;
};

class ChannelTest : public ChannelPeerTest {};

// Waits for the peer's `done` line and returns it; an `error` line fails.
std::string expect_done(Process& peer, milliseconds timeout = kEventTimeout) {
  const std::string line = peer.expect_line("^(done|error)", timeout);
  if (line.starts_with("error")) {
    throw ExpectationFailed("`" + peer.command() + "` failed: " + line + "\n" + peer.transcript());
  }
  return line;
}

// Waits for the peer's `ready` line (attached, channels open).
void expect_ready(Process& peer) {
  const std::string line = peer.expect_line("^(ready|error)", kRestartTimeout);
  if (line.starts_with("error")) {
    throw ExpectationFailed("`" + peer.command() + "` failed: " + line + "\n" + peer.transcript());
  }
}

TEST_F(ChannelTest, MillionMixedMessagesOnThreeChannelsArriveInOrderAndIntact) {
  const std::uint64_t total = message_count();
  const std::uint64_t per_channel = (total + 2) / 3;
  const std::uint64_t seed = test_seed();
  const Clock::time_point started = Clock::now();

  Process& receiver = start_stream("stream-receive", "stream", seed, 3, per_channel);
  Process& sender = start_stream("stream-send", "stream", seed, 3, per_channel);
  (void)expect_done(receiver, kMillionBudget);
  (void)expect_done(sender);

  const auto elapsed = std::chrono::duration_cast<milliseconds>(Clock::now() - started);
  std::cout << "[  timing  ] " << 3 * per_channel << " messages in " << elapsed.count() << " ms\n";
  RecordProperty("elapsed_ms", std::to_string(elapsed.count()));
  EXPECT_LT(elapsed, kMillionBudget);
  for (unsigned channel = 0; channel < 3; ++channel) {
    EXPECT_EQ(receiver.take_lines("^progress " + std::to_string(channel) + " ").size(),
              per_channel / 1000)
        << "channel " << channel;
  }
}

TEST_F(ChannelTest, SlowReceiverForcesBackPressureWithoutLoss) {
  // Beyond the receiver's 4096 queued messages plus a full ring.
  constexpr std::uint64_t kCount = 8000;
  const std::uint64_t seed = test_seed();

  Process& receiver =
      start_stream("stream-receive", "stream", seed, 1, kCount, {"--slow-us", "150"});
  Process& sender = start_stream("stream-send", "stream", seed, 1, kCount);
  (void)expect_done(receiver, milliseconds(30'000));
  const std::string done = expect_done(sender);

  EXPECT_GT(number_after(done, "waits="), 0U) << "the sender never found the ring full";
  EXPECT_EQ(receiver.take_lines("^progress 0 ").size(), kCount / 1000);
}

TEST_F(ChannelTest, EitherStartOrderConnects) {
  constexpr std::uint64_t kCount = 3000;
  const std::uint64_t seed = test_seed();
  for (const bool receiver_first : {true, false}) {
    const std::string link = receiver_first ? "receiver-first" : "sender-first";
    SCOPED_TRACE(link);
    const std::string first_mode = receiver_first ? "stream-receive" : "stream-send";
    const std::string second_mode = receiver_first ? "stream-send" : "stream-receive";

    Process& first = start_stream(first_mode, link, seed, 2, kCount);
    expect_ready(first);
    Process& second = start_stream(second_mode, link, seed, 2, kCount);

    (void)expect_done(receiver_first ? first : second);
    (void)expect_done(receiver_first ? second : first);
  }
}

TEST_F(ChannelTest, ThreePeerLinkCarriesTrafficBetweenEveryPair) {
  constexpr std::uint64_t kCount = 2000;
  const std::uint64_t seed = test_seed();
  const std::vector<std::string> cells = {"a", "b", "c"};
  std::vector<Process*> peers;
  for (const std::string& cell : cells) {
    peers.push_back(&start_peer("mesh", "trio", cell, seed, {"--count", std::to_string(kCount)}));
  }

  for (std::size_t self = 0; self < cells.size(); ++self) {
    SCOPED_TRACE(cells[self]);
    (void)expect_done(*peers[self], milliseconds(30'000));
    for (std::size_t other = 0; other < cells.size(); ++other) {
      if (other == self) continue;
      EXPECT_TRUE(peers[self]->saw_line("^received " + std::to_string(other) + " " +
                                        std::to_string(kCount) + "$"))
          << "from " << cells[other];
    }
  }
}

// Kills one peer of a 1-channel stream with SIGKILL at `restarts` random
// moments and restarts it. The receiver checks that the stream stays
// contiguous; the test checks how fast the survivor noticed each death.
class PeerRestartTest : public ChannelPeerTest {
 protected:
  void SetUp() override {
    ChannelPeerTest::SetUp();
    seed_ = test_seed();
    random_.seed(seed_);
    count_ = message_count();
    restarts_ = static_cast<unsigned>(env_or("CELLINK_RESTARTS", 50));
    // One kill point per slice of the middle 90% of the stream, so every kill
    // lands mid-stream and the last one leaves the rest to finish.
    const double low = 0.05 * static_cast<double>(count_);
    const double slice = 0.9 * static_cast<double>(count_) / restarts_;
    std::uniform_real_distribution<double> within(0.0, 1.0);
    for (unsigned k = 0; k < restarts_; ++k) {
      kill_points_.push_back(static_cast<std::uint64_t>(low + (k + within(random_)) * slice));
    }
  }

  // Waits for the receiver's first `progress` at or past `point`; returns the
  // message it names (received and released, so counted as delivered).
  std::uint64_t await_progress(Process& receiver, std::uint64_t point) {
    for (;;) {
      const std::uint64_t seen =
          number_after(receiver.expect_line("^progress 0 ", kRestartTimeout), "progress 0 ");
      if (seen >= point) return seen;
    }
  }

  // SIGKILLs `victim` at a random moment of the next 10 ms, about the time a
  // stream takes for 1000 messages (a chosen moment, not a wait for anything),
  // and returns when it died, in CLOCK_MONOTONIC ns.
  std::uint64_t kill_at_random_moment(Process& victim) {
    std::uniform_int_distribution<int> pause_us(0, 10'000);
    std::this_thread::sleep_for(std::chrono::microseconds(pause_us(random_)));
    const std::uint64_t killed_at = monotonic_ns();
    victim.kill(SIGKILL);
    EXPECT_EQ(victim.wait_exit(), 128 + SIGKILL);
    return killed_at;
  }

  // Checks one survivor observation, printed with t=, against the kill time.
  void check_detection(const std::string& line, std::uint64_t killed_at) {
    const std::uint64_t seen_at = number_after(line, " t=");
    ASSERT_GE(seen_at, killed_at) << "the survivor saw a reset before the kill: " << line;
    detection_ns_.push_back(seen_at - killed_at);
    EXPECT_LT(seen_at - killed_at, kDetectionLimitNs) << line;
  }

  void report_detection() {
    if (detection_ns_.empty()) return;
    std::sort(detection_ns_.begin(), detection_ns_.end());
    const auto ms = [](std::uint64_t ns) { return std::to_string(ns / 1000 / 1000.0); };
    std::cout << "[ detected ] kill to survivor: median "
              << ms(detection_ns_[detection_ns_.size() / 2]) << " ms, max "
              << ms(detection_ns_.back()) << " ms over " << detection_ns_.size() << " kills\n";
  }

  std::uint64_t seed_ = 0;
  std::mt19937_64 random_;
  std::uint64_t count_ = 0;
  unsigned restarts_ = 0;
  std::vector<std::uint64_t> kill_points_;
  std::vector<std::uint64_t> detection_ns_;
};

TEST_F(PeerRestartTest, ReceiverKilledFiftyTimes) {
  Process& sender = start_stream("stream-send", "stream", seed_, 1, count_);
  Process* receiver = &start_stream("stream-receive", "stream", seed_, 1, count_);
  std::uint64_t resume = 0;

  for (unsigned k = 0; k < restarts_; ++k) {
    SCOPED_TRACE("kill " + std::to_string(k + 1) + " at message " +
                 std::to_string(kill_points_[k]));
    // The restarted receiver starts exactly where the sender resumed.
    ASSERT_EQ(number_after(receiver->expect_line("^first 0 ", kRestartTimeout), "first 0 "),
              resume);
    const std::uint64_t seen = await_progress(*receiver, kill_points_[k]);
    const std::uint64_t killed_at = kill_at_random_moment(*receiver);

    const std::string reset = sender.expect_line("^reset ", kRestartTimeout);
    check_detection(reset, killed_at);
    resume = number_after(reset, "resume=");
    // The dead receiver released `seen`, so it counts as delivered: no duplicate.
    ASSERT_GT(resume, seen) << reset;
    receiver = &start_stream("stream-receive", "stream", seed_, 1, count_, {"--resume"});
  }
  ASSERT_EQ(number_after(receiver->expect_line("^first 0 ", kRestartTimeout), "first 0 "), resume);
  (void)expect_done(*receiver, milliseconds(60'000));
  (void)expect_done(sender);
  report_detection();
}

TEST_F(PeerRestartTest, SenderKilledFiftyTimes) {
  const std::string state_file = (temp_.path() / "sender.state").string();
  Process& receiver = start_stream("stream-receive", "stream", seed_, 1, count_);
  Process* sender =
      &start_stream("stream-send", "stream", seed_, 1, count_, {"--state-file", state_file});
  std::uint64_t seen = 0;

  for (unsigned k = 0; k < restarts_; ++k) {
    SCOPED_TRACE("kill " + std::to_string(k + 1) + " at message " +
                 std::to_string(kill_points_[k]));
    // Killed earlier, a sender would lose its predecessor's delivery count
    // (channel_peer.cpp); `resume` says the state file is up to date.
    const std::uint64_t resume =
        number_after(sender->expect_line("^resume seq=", kRestartTimeout), "seq=");
    if (k > 0) {
      ASSERT_GT(resume, seen) << "the new sender repeats delivered messages";
    }
    seen = await_progress(receiver, kill_points_[k]);
    const std::uint64_t killed_at = kill_at_random_moment(*sender);

    check_detection(receiver.expect_line("^peer_reset 0 t=", kRestartTimeout), killed_at);
    sender = &start_stream("stream-send", "stream", seed_, 1, count_, {"--state-file", state_file});
  }
  // The receiver exits with `error` at the first gap or duplicate.
  (void)expect_done(receiver, milliseconds(60'000));
  (void)expect_done(*sender);
  report_detection();
}

}  // namespace
}  // namespace cellink::integration
