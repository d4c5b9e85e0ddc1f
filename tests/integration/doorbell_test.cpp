// Doorbells and the state table between three cellink-test-peer processes
// on one link with 3 vectors.
#include <array>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "cellink/linux-uio/host_device.hpp"
#include "fixture.hpp"

namespace cellink::integration {
namespace {

constexpr std::uint32_t kVectors = 3;

class DoorbellTest : public IntegrationTest {
 protected:
  void SetUp() override {
    start_daemon(write_config(link_config("ring", {"a", "b", "c"}, kVectors)));
  }
  Agent& join(const std::string& cell) { return start_agent("ring", cell); }
};

// A distinct count for every (sender, receiver, vector), so a doorbell
// delivered to the wrong peer or vector changes some sum.
unsigned rings(std::uint32_t sender, std::uint32_t receiver, std::uint32_t vector) {
  return 1 + sender * 9 + receiver * 3 + vector;
}

TEST_F(DoorbellTest, EachDoorbellReachesOnlyItsTargetPeerOnItsVector) {
  std::array<Agent*, 3> agents = {&join("a"), &join("b"), &join("c")};
  for (Agent* agent : agents) agent->sync();  // every join has been seen
  for (Agent* agent : agents) (void)agent->take_events("peer_joined");

  for (Agent* sender : agents) {
    SCOPED_TRACE("sender " + sender->cell());
    for (Agent* receiver : agents) {
      if (receiver == sender) continue;
      for (std::uint32_t vector = 0; vector < kVectors; ++vector) {
        sender->ring(receiver->id(), vector, rings(sender->id(), receiver->id(), vector));
      }
    }
    for (Agent* receiver : agents) {
      receiver->sync();
      std::map<std::uint32_t, std::uint64_t> expected;
      if (receiver != sender) {
        for (std::uint32_t vector = 0; vector < kVectors; ++vector) {
          expected[vector] = rings(sender->id(), receiver->id(), vector);
        }
      }
      EXPECT_EQ(receiver->take_doorbells(), expected) << "received by " << receiver->cell();
    }
  }
}

TEST_F(DoorbellTest, DoorbellToAnAbsentPeerReportsPeerAbsent) {
  Agent& a = join("a");
  Agent& b = join("b");

  EXPECT_EQ(a.doorbell(2, 0), "peer_absent");
  EXPECT_EQ(b.doorbell(2, kVectors - 1), "peer_absent");
}

TEST_F(DoorbellTest, DoorbellOnAVectorOutOfRangeReportsNoSuchVectorAndRingsNothing) {
  Agent& a = join("a");
  Agent& b = join("b");

  EXPECT_EQ(a.doorbell(b.id(), kVectors), "no_such_vector");
  EXPECT_EQ(a.doorbell(b.id(), 0xffff), "no_such_vector");

  b.sync();
  EXPECT_EQ(b.take_doorbells(), (std::map<std::uint32_t, std::uint64_t>{}));
}

TEST_F(DoorbellTest, DoorbellToAPeerIdBeyondTheLinkReportsNoSuchPeer) {
  Agent& a = join("a");

  EXPECT_EQ(a.doorbell(3, 0), "no_such_peer");
}

TEST_F(DoorbellTest, SetStateRingsVectorZeroOnEveryOtherPeerOnly) {
  Agent& a = join("a");
  Agent& b = join("b");
  Agent& c = join("c");
  a.sync();  // a has taken the joins of b and c: set_state() rings the peers a knows

  a.set_state(0x203);

  EXPECT_EQ(b.await_doorbells(0, 1), 1U);
  EXPECT_EQ(c.await_doorbells(0, 1), 1U);
  for (Agent* agent : {&a, &b, &c}) {
    agent->sync();
    EXPECT_EQ(agent->take_doorbells(), (std::map<std::uint32_t, std::uint64_t>{}))
        << "extra doorbells at " << agent->cell();
  }
}

TEST_F(DoorbellTest, SetStateIsReadBackByEveryPeerAndTheDaemon) {
  Agent& a = join("a");
  Agent& b = join("b");
  Agent& c = join("c");

  b.set_state(0x503);

  EXPECT_EQ(a.peer_state(b.id()), 0x503U);
  EXPECT_EQ(c.peer_state(b.id()), 0x503U);
  EXPECT_EQ(b.peer_state(b.id()), 0x503U);
  const nlohmann::json state = peer_status(daemon().status_json(), "ring", "b").at("state");
  EXPECT_EQ(state.at("raw"), 0x503);
  EXPECT_EQ(state.at("phase"), "RUN");
  EXPECT_EQ(state.at("epoch"), 5);
}

TEST_F(DoorbellTest, StateOfAPeerThatNeverSetOneReadsZero) {
  Agent& a = join("a");
  Agent& b = join("b");

  EXPECT_EQ(a.peer_state(b.id()), 0U);
  EXPECT_EQ(a.peer_state(2), 0U);
}

// The race the demo hit: `a` sets its state before it has processed `b`'s
// join, so set_state() rings nobody, while `b` read a's entry as 0 at its
// connect. When `a` then processes the join, it rings b's vector 0, so `b`
// reads the entry again instead of waiting forever. In-process HostDevices,
// so the order is exact.
TEST_F(DoorbellTest, AStateSetBeforeAJoinWasSeenStillReachesTheJoiner) {
  using linux_uio::DeviceEvent;
  const auto a = linux_uio::HostDevice::connect({runtime_dir(), "ring", "a"});
  const auto b = linux_uio::HostDevice::connect({runtime_dir(), "ring", "b"});
  ASSERT_TRUE(b->peer_present(a->id())) << "b learns of a in its greeting";
  ASSERT_EQ(b->peer_state(a->id()), 0U);
  ASSERT_FALSE(a->peer_present(b->id())) << "a has not read b's join yet";
  a->set_state(0x1234);  // rings no one: a knows no other peer

  // a processes b's join (any wait() does).
  bool joined = false;
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!joined && std::chrono::steady_clock::now() < give_up) {
    for (const DeviceEvent& event : a->wait(std::chrono::milliseconds(100))) {
      joined |= event.kind == DeviceEvent::Kind::peer_joined && event.peer == b->id();
    }
  }
  ASSERT_TRUE(joined);

  bool rung = false;
  for (const DeviceEvent& event : b->wait(std::chrono::milliseconds(2000))) {
    rung |= event.kind == DeviceEvent::Kind::doorbell && event.vector == 0;
  }
  EXPECT_TRUE(rung) << "b was never told to read a's state again";
  EXPECT_EQ(b->peer_state(a->id()), 0x1234U);
}

}  // namespace
}  // namespace cellink::integration
