// A real Linux guest as a cell (guest_fixture.hpp): in the guest,
// uio_ivshmem.ko binds the ivshmem-doorbell device and cellink-guest-probe
// drives it through /dev/uioN, printing "CELLINK-GUEST..." lines on the
// serial console, which is QEMU's stdout here.
//
// Skips, saying why, when QEMU is missing or the kernel packages could not
// be downloaded at build time (guest/unavailable.txt). A failed test prints
// the guest's whole console.
#include <chrono>
#include <cstdint>
#include <iostream>
#include <string>

#include <gtest/gtest.h>

#include "cellink/ivshmem/peer_state.hpp"
#include "guest_fixture.hpp"

namespace cellink::integration {
namespace {

// The guest's own limit for the host's doorbell, passed on its command line.
constexpr int kGuestHostWaitMs = 60000;

class GuestBoot : public GuestTest {};

TEST_F(GuestBoot, UioIvshmemDeliversSelfAndHostDoorbellsToAGuestProcess) {
  const std::filesystem::path config = write_config(link_config("vm", {"host", "guest"}, 2));
  start_daemon(config);
  Agent& host = start_agent("vm", "host");
  boot("guest", config,
       "cellink.run=cellink-guest-probe cellink.arg=--host-peer=0 " +
           std::string("cellink.arg=--host-wait-ms=") + std::to_string(kGuestHostWaitMs));

  // The module loaded and bound the device, which the probe found in sysfs.
  expect_guest("CELLINK-GUEST: module uio_ivshmem loaded", kBootTimeout);
  expect_guest("CELLINK-GUEST: found ivshmem 1af4:1110 .* driver uio_ivshmem", kGuestStepTimeout);
  // Map 1 is the daemon's whole memory object.
  const nlohmann::json status = daemon().status_json();
  const auto memory_size = status["links"][0]["memory_size"].get<std::uint64_t>();
  expect_guest(
      "uio[0-9]+: map 0 registers 256 bytes, map 1 shmem " + std::to_string(memory_size) + " bytes",
      kGuestStepTimeout);
  // Its own doorbell came back as an MSI-X interrupt through read() on
  // /dev/uioN; masked through irqcontrol, a doorbell was held, not lost.
  expect_guest("CELLINK-GUEST-SELF: ok irq=1 ivposition=1 vector=1", kGuestStepTimeout);
  expect_guest("doorbell rung while masked arrived after unmask", kGuestStepTimeout);
  const double self_doorbell_at = seconds_since_boot();

  // Guest to host: its state-table write through the UIO map, announced on
  // vector 0 as the state-change protocol says.
  host.expect_event("doorbell", "vector=0", kGuestStepTimeout);
  EXPECT_EQ(host.peer_state(1), (ivshmem::PeerState{ivshmem::Phase::init, 1}.encode()));

  // Host to guest: the daemon's eventfd becomes an MSI-X interrupt in QEMU,
  // then a UIO event in the guest process.
  ASSERT_EQ(host.doorbell(1, 1), "ok");
  expect_guest("CELLINK-GUEST-RESULT: ok uio irq=1 ivposition=1 masked-held=ok host-doorbell=ok",
               kGuestStepTimeout);
  guest_->expect_line("cellink-guest-probe exited with status 0", kGuestStepTimeout);
  guest_->expect_line("CELLINK-GUEST: uptime", kGuestStepTimeout);
  EXPECT_EQ(guest_->wait_exit(kGuestStepTimeout), 0) << "QEMU must exit when the guest powers off";
  std::cout << "guest: self-doorbell after " << self_doorbell_at << " s, powered off after "
            << seconds_since_boot() << " s of wall time (TCG)\n";
}

}  // namespace
}  // namespace cellink::integration
