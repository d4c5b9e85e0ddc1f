// The example programs (examples/) through the real daemon: both ends of
// each pair are real processes on the embedded config's link 'demo' (cells
// host = 0 and guest = 1). The tests hold the programs to the exit statuses
// and the output lines their file comments promise.
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "fixture.hpp"

namespace cellink::integration {
namespace {

// An example pair runs in well under a second; TSan builds are many times
// slower, and the suite must fail rather than hang.
constexpr milliseconds kRunTimeout{60000};

// The ping's last line, every figure a decimal.
const std::string kPercentiles =
    R"(^ping: round trip us  p50 [0-9]+\.[0-9]  p90 [0-9]+\.[0-9]  p99 [0-9]+\.[0-9]  )"
    R"(p99\.9 [0-9]+\.[0-9]  max [0-9]+\.[0-9]$)";

class ExamplesTest : public IntegrationTest {
 protected:
  void SetUp() override { start_daemon(std::nullopt); }

  void TearDown() override {
    if (HasFailure()) {
      for (const auto& program : programs_) std::cerr << program->transcript();
    }
    IntegrationTest::TearDown();
  }

  // Starts `binary --runtime-dir <ours> --cell <cell> <arguments>`.
  Process& start(const std::string& binary, const std::string& cell,
                 const std::vector<std::string>& arguments) {
    std::vector<std::string> argv = {binary, "--runtime-dir", runtime_dir().string(), "--cell",
                                     cell};
    argv.insert(argv.end(), arguments.begin(), arguments.end());
    programs_.push_back(std::make_unique<Process>(std::move(argv)));
    return *programs_.back();
  }

  std::vector<std::unique_ptr<Process>> programs_;
};

TEST_F(ExamplesTest, PingPongBlockingEchoesEveryMessageAndPrintsPercentiles) {
  Process& pong = start(CELLINK_PING_PONG_BIN, "guest", {"--role", "pong", "--mode", "block"});
  Process& ping = start(CELLINK_PING_PONG_BIN, "host",
                        {"--role", "ping", "--mode", "block", "--count", "500", "--warmup", "20"});

  ping.expect_line("^ping: 500 round trips of 64 B, mode block, every echo intact$", kRunTimeout);
  ping.expect_line(kPercentiles, kRunTimeout);
  EXPECT_EQ(ping.wait_exit(kRunTimeout), 0);
  pong.expect_line("^pong: echoed 520 messages; the ping left$", kRunTimeout);
  EXPECT_EQ(pong.wait_exit(kRunTimeout), 0);
}

// Single-threaded Sessions (no locks, no progress thread) through the real
// daemon: the handshake, blocking wake-ups and fragments still work.
TEST_F(ExamplesTest, PingPongSingleThreadedSessionsEchoEveryMessage) {
  Process& pong = start(CELLINK_PING_PONG_BIN, "guest",
                        {"--role", "pong", "--mode", "adaptive", "--single-thread"});
  Process& ping = start(CELLINK_PING_PONG_BIN, "host",
                        {"--role", "ping", "--mode", "block", "--single-thread", "--count", "300",
                         "--warmup", "0", "--size", "20000"});

  ping.expect_line("single-threaded Session$", kRunTimeout);
  ping.expect_line("^ping: 300 round trips of 20000 B, mode block, every echo intact$",
                   kRunTimeout);
  EXPECT_EQ(ping.wait_exit(kRunTimeout), 0);
  pong.expect_line("^pong: echoed 300 messages; the ping left$", kRunTimeout);
  EXPECT_EQ(pong.wait_exit(kRunTimeout), 0);
}

TEST_F(ExamplesTest, PingPongPollingCarriesFragmentedMessagesIntact) {
  // 40000 B: three records each way (a record carries 16376 B on this link).
  Process& pong = start(CELLINK_PING_PONG_BIN, "guest", {"--role", "pong", "--mode", "poll"});
  Process& ping = start(
      CELLINK_PING_PONG_BIN, "host",
      {"--role", "ping", "--mode", "poll", "--count", "200", "--warmup", "0", "--size", "40000"});

  ping.expect_line("^ping: 200 round trips of 40000 B, mode poll, every echo intact$", kRunTimeout);
  ping.expect_line(kPercentiles, kRunTimeout);
  EXPECT_EQ(ping.wait_exit(kRunTimeout), 0);
  pong.expect_line("^pong: echoed 200 messages; the ping left$", kRunTimeout);
  EXPECT_EQ(pong.wait_exit(kRunTimeout), 0);
}

TEST_F(ExamplesTest, PingPongAsyncCallbacksEchoEveryMessageAndPrintPercentiles) {
  Process& pong = start(CELLINK_PING_PONG_ASYNC_BIN, "guest", {"--role", "pong"});
  Process& ping = start(CELLINK_PING_PONG_ASYNC_BIN, "host",
                        {"--role", "ping", "--count", "500", "--warmup", "20", "--size", "100"});

  ping.expect_line("^ping: 500 round trips of 100 B, mode async, every echo intact$", kRunTimeout);
  ping.expect_line(kPercentiles, kRunTimeout);
  EXPECT_EQ(ping.wait_exit(kRunTimeout), 0);
  pong.expect_line("^pong: echoed 520 messages; the ping left$", kRunTimeout);
  EXPECT_EQ(pong.wait_exit(kRunTimeout), 0);
}

TEST_F(ExamplesTest, AsyncPongServesTheBlockingPing) {
  Process& pong = start(CELLINK_PING_PONG_ASYNC_BIN, "guest", {"--role", "pong"});
  Process& ping = start(CELLINK_PING_PONG_BIN, "host",
                        {"--role", "ping", "--count", "300", "--warmup", "0", "--size", "20000"});

  ping.expect_line("^ping: 300 round trips of 20000 B, mode adaptive, every echo intact$",
                   kRunTimeout);
  EXPECT_EQ(ping.wait_exit(kRunTimeout), 0);
  pong.expect_line("^pong: echoed 300 messages; the ping left$", kRunTimeout);
  EXPECT_EQ(pong.wait_exit(kRunTimeout), 0);
}

TEST_F(ExamplesTest, TelemetryConsumerCoroutineReceivesEverySampleInOrder) {
  Process& consumer = start(CELLINK_TELEMETRY_CONSUMER_BIN, "guest", {"--count", "300"});
  Process& producer = start(CELLINK_TELEMETRY_PRODUCER_BIN, "host",
                            {"--count", "300", "--rate", "0", "--sensors", "8"});

  for (const char* window : {"0-99", "100-199", "200-299"}) {
    consumer.expect_line(std::string("^consumer: samples ") + window +
                             R"(: mean [0-9.]+ C \([0-9.]+\.\.[0-9.]+\), ok [0-9]+ degraded )"
                             R"([0-9]+ fault 0, latency mean [0-9.]+ us max [0-9.]+ us$)",
                         kRunTimeout);
  }
  consumer.expect_line("^consumer: received 300 samples, 0 malformed$", kRunTimeout);
  EXPECT_EQ(consumer.wait_exit(kRunTimeout), 0);
  producer.expect_line("^producer: sent 300 samples in [0-9.]+ s$", kRunTimeout);
  producer.expect_line("^producer: the consumer left after releasing 300 of 300 samples$",
                       kRunTimeout);
  EXPECT_EQ(producer.wait_exit(kRunTimeout), 0);
}

TEST_F(ExamplesTest, TelemetryConsumerReportsAProducerThatStoppedShort) {
  Process& consumer =
      start(CELLINK_TELEMETRY_CONSUMER_BIN, "guest", {"--count", "300", "--timeout", "1"});
  Process& producer = start(CELLINK_TELEMETRY_PRODUCER_BIN, "host", {"--count", "100"});

  consumer.expect_line("^consumer: received 100 samples, 0 malformed$", kRunTimeout);
  consumer.expect_line("error: no sample for 1 s after 100 of 300$", kRunTimeout, Stream::err);
  EXPECT_EQ(consumer.wait_exit(kRunTimeout), 1);
  producer.expect_line("^producer: the consumer left after releasing 100 of 100 samples$",
                       kRunTimeout);
  EXPECT_EQ(producer.wait_exit(kRunTimeout), 0);
}

TEST_F(ExamplesTest, PingWithoutAPongFailsAndSaysWhatIsMissing) {
  Process& ping = start(CELLINK_PING_PONG_BIN, "host", {"--role", "ping", "--timeout", "0.5"});

  ping.expect_line(R"(error: channel 'ping-pong': timed out waiting for the other cell of link )"
                   R"('demo' to open it \(is the pong running\?\)$)",
                   kRunTimeout, Stream::err);
  EXPECT_EQ(ping.wait_exit(kRunTimeout), 1);
}

TEST_F(ExamplesTest, AnUnknownCellFailsWithTheReasonFromTheConnection) {
  Process& ping = start(CELLINK_PING_PONG_ASYNC_BIN, "nosuch", {"--role", "ping"});

  ping.expect_line("cellink-ping-pong-async \\(ping\\): error: .*nosuch", kRunTimeout, Stream::err);
  EXPECT_EQ(ping.wait_exit(kRunTimeout), 1);
}

}  // namespace
}  // namespace cellink::integration
