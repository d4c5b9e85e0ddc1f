// The virtio-over-ivshmem back end as a freestanding device model would
// build it: a console (two queues of 64 entries), every entry point
// instantiated, compiled -Os with the freestanding flags. The test
// freestanding.virtio_device_needs_no_library checks that the object asks
// the linker for nothing (no libc, no memcpy, no operator new) and prints
// its size.
#include <cstddef>
#include <cstdint>
#include <span>

#include "cellink/ivshmem/device.hpp"
#include "cellink/transports/virtio_ivshmem_device.hpp"

namespace {

using cellink::transports::VirtioIvshmemError;
using cellink::transports::VirtioIvshmemSpec;
using cellink::transports::VirtqError;
using Backend = cellink::transports::VirtioIvshmemDevice</*MaxQueues=*/2, /*MaxQueueSize=*/64,
                                                         /*MaxSegments=*/8>;

}  // namespace

// One pass over every entry point; never called, only compiled. The caller
// owns the back end (a device model makes it a global).
extern "C" int cellink_virtio_device_step(Backend* back_pointer, cellink::ivshmem::Device* link,
                                          const std::byte* config, std::size_t config_size,
                                          char* text, std::size_t text_size) {
  Backend& back = *back_pointer;
  VirtioIvshmemSpec spec;
  spec.device_id = 3;
  spec.queue_count = 2;
  spec.max_queue_size = 64;
  spec.config = {config, config_size};
  if (back.attach(*link, spec) != VirtioIvshmemError::ok) return -1;
  const Backend::Events events = back.service();
  if (Backend::Queue* queue = back.queue(1)) {
    queue->disable_notify();
    Backend::Queue::Chain chain;
    if (queue->pop(chain) == VirtqError::ok) (void)queue->push(chain.head(), 0);
  }
  const bool rang = back.notify(1);
  const bool idle = back.arm(1) && !back.write_pending();
  (void)back.update_config(spec.config);
  const std::size_t length = back.fault().describe({text, text_size});
  back.stop();
  return static_cast<int>(events.bits) + (rang ? 1 : 0) + (idle ? 2 : 0) + static_cast<int>(length);
}
