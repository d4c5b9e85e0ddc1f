// Doorbells and the state table between three cellink-test-peer processes
// on one link with 3 vectors.
#include <array>
#include <cstdint>
#include <map>
#include <string>

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

}  // namespace
}  // namespace cellink::integration
