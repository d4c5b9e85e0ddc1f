// Daemon restarts: peers keep their link while the daemon is down,
// re-attach by themselves to the restarted daemon, and newcomers then reach
// them. Run with a named backing file (adopted by the new daemon) and with
// the default memfd (adopted from the first peer that re-attaches).
#include <csignal>
#include <cstdint>
#include <ostream>
#include <string>

#include "fixture.hpp"

namespace cellink::integration {
namespace {

enum class Backing { file, memfd };

const char* name(Backing backing) {
  return backing == Backing::file ? "NamedFile" : "Memfd";
}
// Names the parameter in test listings (and so in ctest).
void PrintTo(Backing backing, std::ostream* out) {
  *out << name(backing);
}

class RestartTest : public IntegrationTest, public ::testing::WithParamInterface<Backing> {
 protected:
  // Starts the daemon on a 3-cell link and attaches a and b.
  void start(std::optional<int> reattach_grace_ms = std::nullopt) {
    const std::string backing =
        GetParam() == Backing::file ? (temp_.path() / "link.shm").string() : "memfd";
    start_daemon(write_config(link_config("ring", {"a", "b", "c"}, 2, backing)), reattach_grace_ms);
    a_ = &start_agent("ring", "a");
    b_ = &start_agent("ring", "b");
  }

  // SIGKILLs the daemon; a and b notice.
  void crash_daemon() {
    daemon().kill9();
    (void)a_->expect_event("daemon_lost");
    (void)b_->expect_event("daemon_lost");
  }

  // Starts the daemon again and waits for a and b to re-attach.
  void restart_daemon() {
    daemon().restart();
    (void)a_->expect_event("daemon_reattached");
    (void)b_->expect_event("daemon_reattached");
  }

  Agent* a_ = nullptr;
  Agent* b_ = nullptr;
};

// Rings `from` -> `to` on vector 1 and checks arrival.
void expect_reaches(Agent& from, Agent& to, unsigned times) {
  from.ring(to.id(), 1, times);
  EXPECT_EQ(to.await_doorbells(1, times), times) << from.cell() << " -> " << to.cell();
}

TEST_P(RestartTest, PeersKeepRingingEachOtherWhileTheDaemonIsDown) {
  start();
  crash_daemon();

  expect_reaches(*a_, *b_, 3);
  expect_reaches(*b_, *a_, 2);
  EXPECT_EQ(a_->present(), (std::vector<std::uint32_t>{0, 1}));
}

TEST_P(RestartTest, GraceEndSendsNothingToSurvivorsWhoseKnownPeersAllCameBack) {
  start(500);
  crash_daemon();
  restart_daemon();

  (void)daemon().expect_log("grace period of 500 ms is over");
  a_->sync();
  b_->sync();
  // c never attached and nobody believed it present: no leave, no vector 0.
  EXPECT_TRUE(a_->take_events("peer_left").empty());
  EXPECT_TRUE(b_->take_events("peer_left").empty());
  EXPECT_EQ(a_->take_doorbells().count(0), 0U);
  EXPECT_EQ(b_->take_doorbells().count(0), 0U);
}

TEST_P(RestartTest, PeersReattachByThemselvesWhenTheDaemonRestarts) {
  start();
  crash_daemon();

  restart_daemon();

  const nlohmann::json status = daemon().status_json();
  for (Agent* agent : {a_, b_}) {
    const nlohmann::json peer = peer_status(status, "ring", agent->cell());
    EXPECT_EQ(peer.at("connected"), true) << agent->cell();
    EXPECT_EQ(peer.at("reattached"), true) << agent->cell();
    EXPECT_EQ(peer.at("pid"), agent->pid()) << agent->cell();
  }
  EXPECT_EQ(status.at("links").at(0).at("adopted"), true);
}

TEST_P(RestartTest, NewPeerAndReattachedPeersRingEachOtherBothWays) {
  start();
  crash_daemon();
  restart_daemon();

  Agent& c = start_agent("ring", "c");

  EXPECT_EQ(c.present_at_start(), (std::vector<std::uint32_t>{0, 1, 2}));
  (void)a_->expect_event("peer_joined", "peer=2");
  (void)b_->expect_event("peer_joined", "peer=2");
  expect_reaches(*a_, c, 1);
  expect_reaches(c, *a_, 2);
  expect_reaches(*b_, c, 3);
  expect_reaches(c, *b_, 4);
  expect_reaches(*a_, *b_, 1);
}

TEST_P(RestartTest, NewPeerSeesTheMemoryTheSurvivorsKeptUsing) {
  start();
  a_->set_state(0x103);
  a_->write_output(0, 0x5a);
  a_->write_output(4095, 0xa5);
  crash_daemon();
  a_->write_output(1, 0x3c);  // written while the daemon is down
  restart_daemon();

  Agent& c = start_agent("ring", "c");

  EXPECT_EQ(c.peer_state(0), 0x103U);
  EXPECT_EQ(c.read_output(0, 0), 0x5a);
  EXPECT_EQ(c.read_output(0, 1), 0x3c);
  EXPECT_EQ(c.read_output(0, 4095), 0xa5);
}

TEST_P(RestartTest, PeerThatDiesWhileTheDaemonIsDownIsReportedLeftAfterTheGrace) {
  start(500);
  b_->set_state(0x201);
  (void)a_->await_doorbells(0, 1);
  crash_daemon();
  b_->process().kill(SIGKILL);
  (void)b_->process().wait_exit();

  daemon().restart();
  (void)a_->expect_event("daemon_reattached");

  (void)a_->expect_event("peer_left", "peer=1");
  EXPECT_EQ(a_->peer_state(1), 0U);
  EXPECT_EQ(a_->doorbell(1, 1), "peer_absent");
  const nlohmann::json peer = peer_status(daemon().status_json(), "ring", "b");
  EXPECT_EQ(peer.at("connected"), false);
  EXPECT_EQ(peer.at("state").at("raw"), 0);
}

// With no grace at all, the survivor re-attaches after the daemon already
// gave up on the absent peers; it must still learn that b is gone.
TEST_P(RestartTest, SurvivorReattachingAfterTheGraceIsToldOfPeersThatDied) {
  start(0);
  crash_daemon();
  b_->process().kill(SIGKILL);
  (void)b_->process().wait_exit();

  daemon().restart();
  (void)a_->expect_event("daemon_reattached");

  (void)a_->expect_event("peer_left", "peer=1");
  EXPECT_EQ(a_->doorbell(1, 1), "peer_absent");
}

TEST_P(RestartTest, StateOfAPeerThatDiedReadsZeroWhenSurvivorsReattachAfterTheGrace) {
  start(0);
  b_->set_state(0x201);
  (void)a_->await_doorbells(0, 1);
  crash_daemon();
  b_->process().kill(SIGKILL);
  (void)b_->process().wait_exit();

  daemon().restart();
  (void)a_->expect_event("daemon_reattached");
  const nlohmann::json peer = peer_status(daemon().status_json(), "ring", "b");

  EXPECT_EQ(peer.at("state").at("raw"), 0);
  EXPECT_EQ(a_->peer_state(1), 0U);
}

INSTANTIATE_TEST_SUITE_P(Backings, RestartTest, ::testing::Values(Backing::file, Backing::memfd),
                         [](const ::testing::TestParamInfo<Backing>& info) {
                           return name(info.param);
                         });

}  // namespace
}  // namespace cellink::integration
