// Misbehaving clients: garbage on the socket, a second client for an
// attached cell, and a storm of connect-and-hang-up. Each must cost only the
// misbehaving client, never the well-behaved peers.
#include <unistd.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "cellink/linux-uio/server_protocol.hpp"
#include "fixture.hpp"
#include "raw_client.hpp"

namespace cellink::integration {
namespace {

constexpr unsigned kVectors = 2;

class RobustnessTest : public IntegrationTest {
 protected:
  void SetUp() override {
    start_daemon(write_config(link_config("ring", {"a", "b", "c"}, kVectors)));
  }
  Agent& join(const std::string& cell) { return start_agent("ring", cell); }
  std::filesystem::path socket(const std::string& cell) {
    return runtime_dir() / "ring" / (cell + ".sock");
  }
};

std::vector<std::uint8_t> random_bytes(std::size_t size, std::uint32_t seed) {
  std::mt19937 generator(seed);
  std::uniform_int_distribution<int> byte(0, 255);
  std::vector<std::uint8_t> bytes(size);
  for (std::uint8_t& each : bytes) each = static_cast<std::uint8_t>(byte(generator));
  return bytes;
}

// Rings each way and checks arrival: the link between a and b still works.
void expect_talking(Agent& a, Agent& b) {
  a.ring(b.id(), 1, 2);
  EXPECT_EQ(b.await_doorbells(1, 2), 2U);
  b.ring(a.id(), 1, 3);
  EXPECT_EQ(a.await_doorbells(1, 3), 3U);
}

TEST_F(RobustnessTest, GarbageFromAClientDropsThatClientAndOnlyIt) {
  Agent& a = join("a");
  Agent& b = join("b");
  // 8 bytes look like a well-formed message; 1000 overflow the daemon's read.
  for (const std::size_t size :
       {std::size_t{1}, std::size_t{8}, std::size_t{64}, std::size_t{1000}}) {
    const auto seed = static_cast<std::uint32_t>(size * 7919);
    SCOPED_TRACE(std::to_string(size) + " bytes, seed " + std::to_string(seed));
    RawClient c(socket("c"));
    (void)c.receive_greeting(kVectors);
    (void)a.expect_event("peer_joined", "peer=2");
    (void)b.expect_event("peer_joined", "peer=2");

    c.send_bytes(random_bytes(size, seed));

    EXPECT_TRUE(c.receive().closed);
    (void)a.expect_event("peer_left", "peer=2");
    (void)b.expect_event("peer_left", "peer=2");
    expect_talking(a, b);
  }
  EXPECT_EQ(a.take_events("daemon_lost").size(), 0U);
  EXPECT_EQ(b.take_events("daemon_lost").size(), 0U);
}

TEST_F(RobustnessTest, GarbageIsLoggedWithTheCellAndWhatItSent) {
  Agent& a = join("a");
  RawClient c(socket("c"));
  (void)c.receive_greeting(kVectors);

  const std::vector<std::uint8_t> garbage = random_bytes(5, 1);
  c.send_bytes(garbage);
  (void)a.expect_event("peer_left", "peer=2");

  (void)daemon().expect_log("link 'ring' cell 'c' \\(peer 2, pid " + std::to_string(::getpid()) +
                            "\\) left: sent 5 unexpected byte");
}

TEST_F(RobustnessTest, SecondConnectionForAnAttachedCellGetsTheRefusalVersionThenEof) {
  Agent& a = join("a");
  (void)a;

  RawClient second(socket("a"));

  const RawClient::Received refusal = second.receive();
  ASSERT_FALSE(refusal.closed);
  EXPECT_EQ(refusal.value, linux_uio::server_protocol::kRefusedVersion);
  EXPECT_TRUE(second.receive().closed) << "nothing may follow the refusal";
}

TEST_F(RobustnessTest, RefusedSecondConnectionLeavesTheAttachedPeerUntouched) {
  Agent& a = join("a");
  Agent& b = join("b");

  RawClient second(socket("a"));
  ASSERT_EQ(second.receive().value, linux_uio::server_protocol::kRefusedVersion);
  ASSERT_TRUE(second.receive().closed);

  a.sync();
  b.sync();
  EXPECT_EQ(b.take_events("peer_left").size(), 0U);
  EXPECT_EQ(a.take_events("daemon_lost").size(), 0U);
  EXPECT_EQ(b.present(), (std::vector<std::uint32_t>{0, 1}));
  expect_talking(a, b);
  const nlohmann::json peer = peer_status(daemon().status_json(), "ring", "a");
  EXPECT_EQ(peer.at("connected"), true);
  EXPECT_EQ(peer.at("pid"), a.pid());
}

TEST_F(RobustnessTest, RefusedSecondConnectionIsLoggedWithBothPids) {
  Agent& a = join("a");

  RawClient second(socket("a"));
  ASSERT_EQ(second.receive().value, linux_uio::server_protocol::kRefusedVersion);
  ASSERT_TRUE(second.receive().closed);

  (void)daemon().expect_log("link 'ring' cell 'a': refusing a second connection from pid " +
                            std::to_string(::getpid()) + " .*already attached by pid " +
                            std::to_string(a.pid()));
}

TEST_F(RobustnessTest, SecondAgentForAnAttachedCellExitsWithAnError) {
  Agent& a = join("a");
  (void)a;

  Process second({CELLINK_TEST_PEER_BIN, "--runtime-dir", runtime_dir().string(), "--link", "ring",
                  "--cell", "a"});

  (void)second.expect_line("^error .*refused the connection: cell 'a' .* already attached");
  EXPECT_EQ(second.wait_exit(), 2);
}

TEST_F(RobustnessTest, ConnectAndHangUpStormDoesNotDisturbOtherPeers) {
  Agent& a = join("a");
  Agent& b = join("b");

  for (int i = 0; i < 100; ++i) RawClient hang_up(socket("c"));

  // The daemon works through the backlog in order; once a client for c is
  // attached again, it has seen every hang-up. A connection accepted while
  // the previous hang-up was still unnoticed is refused, so retry.
  std::unique_ptr<RawClient> probe;
  std::optional<RawClient::Greeting> greeting;
  const Clock::time_point deadline = Clock::now() + milliseconds(10000);
  int refusals = 0;
  while (!greeting) {
    ASSERT_LT(Clock::now(), deadline) << "c never attached again; refused " << refusals << "x";
    probe = std::make_unique<RawClient>(socket("c"));
    greeting = probe->try_receive_greeting(kVectors);
    if (!greeting) ++refusals;
  }
  RecordProperty("probe_refusals", refusals);

  a.sync();
  b.sync();
  EXPECT_EQ(a.take_events("daemon_lost").size(), 0U);
  EXPECT_EQ(b.take_events("daemon_lost").size(), 0U);
  EXPECT_EQ(a.present(), (std::vector<std::uint32_t>{0, 1, 2}));
  expect_talking(a, b);
  EXPECT_EQ(a.doorbell(2, 1), "ok");
  EXPECT_EQ(await_eventfd(greeting->eventfds.back().fd.get()), 1U);  // c's own vector 1
  const nlohmann::json status = daemon().status_json();
  EXPECT_EQ(peer_status(status, "ring", "a").at("pid"), a.pid());
  EXPECT_EQ(peer_status(status, "ring", "b").at("pid"), b.pid());
}

}  // namespace
}  // namespace cellink::integration
