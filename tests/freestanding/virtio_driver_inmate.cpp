// The virtio-over-ivshmem front end as an inmate would build it: the console's
// two queues of 16 entries, every entry point instantiated, compiled -Os with
// the freestanding flags. The test freestanding.virtio_driver_needs_no_library
// checks that the object asks the linker for nothing and prints its size.
#include <cstddef>
#include <cstdint>
#include <span>

#include "cellink/transports/virtio_ivshmem_driver.hpp"

namespace {

using cellink::transports::VirtioDriverStatus;
using cellink::transports::VirtqBuffer;
using cellink::transports::VirtqCompletion;
using Driver = cellink::transports::VirtioIvshmemDriver</*MaxQueues=*/2, /*MaxQueueSize=*/16>;

}  // namespace

// One pass over every entry point; never called, only compiled. The
// caller owns the driver (an inmate makes it a global).
extern "C" int cellink_inmate_virtio_step(Driver* driver_pointer) {
  Driver& driver = *driver_pointer;
  cellink::transports::VirtioDriverOptions options;
  options.queue_count = 2;
  if (!driver.backend_ready() || driver.probe(options) != VirtioDriverStatus::ok) return -1;
  const std::uint64_t offset = driver.allocate(256);
  const VirtqBuffer buffer{offset, 256};
  (void)driver.queue(0).add({}, {&buffer, 1}, 0);
  (void)driver.notify(0);
  const cellink::transports::VirtioDriverEvents events = driver.handle_events();
  VirtqCompletion done;
  (void)driver.queue(0).collect(done);
  (void)driver.queue(0).arm_interrupt();
  (void)driver.queue(0).disarm_interrupt();
  std::byte config[4];
  (void)driver.read_config(0, config);
  if (events.reset) driver.reset();
  return static_cast<int>(driver.status()) + static_cast<int>(driver.buffer(offset, 1).size());
}
