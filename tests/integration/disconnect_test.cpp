// What the survivors and the daemon see when a peer goes away: killed with
// SIGKILL or leaving cleanly, the result must be the same.
#include <csignal>
#include <cstdint>
#include <ostream>
#include <string>

#include "fixture.hpp"

namespace cellink::integration {
namespace {

constexpr std::uint32_t kState = 0x302;  // READY, epoch 3

enum class Departure { killed, quit };

const char* name(Departure departure) {
  return departure == Departure::killed ? "KilledWithSigkill" : "QuitCleanly";
}
// Names the parameter in test listings (and so in ctest).
void PrintTo(Departure departure, std::ostream* out) {
  *out << name(departure);
}

class DisconnectTest : public IntegrationTest, public ::testing::WithParamInterface<Departure> {
 protected:
  void SetUp() override { start_daemon(write_config(link_config("ring", {"a", "b", "c"}, 2))); }

  // Attaches a, b and c; a publishes kState, and b and c have seen it.
  void attach_all() {
    a_ = &start_agent("ring", "a");
    b_ = &start_agent("ring", "b");
    c_ = &start_agent("ring", "c");
    // set_state() rings only the peers a already knows: wait for the joins.
    (void)a_->expect_event("peer_joined", "peer=1");
    (void)a_->expect_event("peer_joined", "peer=2");
    (void)b_->expect_event("peer_joined", "peer=2");
    a_->set_state(kState);
    for (Agent* survivor : {b_, c_}) {
      (void)survivor->await_doorbells(0, 1);
      ASSERT_EQ(survivor->peer_state(0), kState);
    }
  }

  void make_a_leave() {
    if (GetParam() == Departure::killed) {
      a_->process().kill(SIGKILL);
      EXPECT_EQ(a_->process().wait_exit(), 128 + SIGKILL);
    } else {
      a_->quit();
    }
  }

  Agent* a_ = nullptr;
  Agent* b_ = nullptr;
  Agent* c_ = nullptr;
};

TEST_P(DisconnectTest, EverySurvivorGetsPeerLeftAndAVectorZeroDoorbell) {
  attach_all();
  make_a_leave();

  for (Agent* survivor : {b_, c_}) {
    SCOPED_TRACE(survivor->cell());
    (void)survivor->expect_event("peer_left", "peer=0");
    EXPECT_EQ(survivor->await_doorbells(0, 1), 1U);
  }
}

TEST_P(DisconnectTest, SurvivorsReadTheLeftPeersStateAsZero) {
  attach_all();
  make_a_leave();

  for (Agent* survivor : {b_, c_}) {
    (void)survivor->expect_event("peer_left", "peer=0");
    EXPECT_EQ(survivor->peer_state(0), 0U) << survivor->cell();
  }
}

TEST_P(DisconnectTest, StatusShowsTheLeftPeerDisconnectedWithStateZero) {
  attach_all();
  make_a_leave();
  (void)b_->expect_event("peer_left", "peer=0");

  const nlohmann::json peer = peer_status(daemon().status_json(), "ring", "a");
  EXPECT_EQ(peer.at("connected"), false);
  EXPECT_EQ(peer.at("state").at("raw"), 0);
  EXPECT_FALSE(peer.contains("pid"));
}

TEST_P(DisconnectTest, DoorbellToThePeerThatLeftReportsPeerAbsent) {
  attach_all();
  make_a_leave();
  (void)b_->expect_event("peer_left", "peer=0");

  EXPECT_EQ(b_->doorbell(0, 1), "peer_absent");
  EXPECT_EQ(b_->present(), (std::vector<std::uint32_t>{1, 2}));
}

TEST_P(DisconnectTest, TheCellCanAttachAgainAndTalk) {
  attach_all();
  make_a_leave();
  (void)b_->expect_event("peer_left", "peer=0");
  (void)c_->expect_event("peer_left", "peer=0");

  Agent& again = start_agent("ring", "a");

  EXPECT_EQ(again.id(), 0U);
  EXPECT_EQ(again.present_at_start(), (std::vector<std::uint32_t>{0, 1, 2}));
  (void)b_->expect_event("peer_joined", "peer=0");
  b_->ring(0, 1, 2);
  EXPECT_EQ(again.await_doorbells(1, 2), 2U);
  again.ring(2, 1, 1);
  EXPECT_EQ(c_->await_doorbells(1, 1), 1U);
}

INSTANTIATE_TEST_SUITE_P(Departures, DisconnectTest,
                         ::testing::Values(Departure::killed, Departure::quit),
                         [](const ::testing::TestParamInfo<Departure>& info) {
                           return name(info.param);
                         });

}  // namespace
}  // namespace cellink::integration
