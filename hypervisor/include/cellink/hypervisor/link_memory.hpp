// LinkMemory: the shared-memory object of one link, owned by the daemon.
//
// Allocated once at start-up and never remapped: a memfd, or a named file on
// /dev/shm or hugetlbfs that a restarted daemon adopts. The object's size is
// a power of two (QEMU maps it whole as a PCI BAR); the layout fills a prefix.
// On creation the state table is zeroed and the v1 link descriptor written.
//
// Threading: owned by the daemon's single event-loop thread. The memory
// itself is shared with every peer, who may write anything into it.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>

#include "cellink/hypervisor/config.hpp"
#include "cellink/ivshmem/link_descriptor.hpp"
#include "cellink/linux-uio/unique_fd.hpp"

namespace cellink::hypervisor {

class LinkMemory {
 public:
  // Creates the link's memory, or adopts an existing named backing whose
  // descriptor matches `link`. Throws std::runtime_error naming the link,
  // the path and a remedy.
  [[nodiscard]] static LinkMemory open(const LinkConfig& link);

  // Validates that `fd` is memory laid out for `link` (size, descriptor) and
  // wraps it. Returns false with `why` set otherwise. Used when a surviving
  // peer hands a memfd back to a restarted daemon.
  [[nodiscard]] static bool adopt_fd(const LinkConfig& link, linux_uio::UniqueFd fd,
                                     LinkMemory& out, std::string& why);

  LinkMemory() = default;
  LinkMemory(LinkMemory&& other) noexcept;
  LinkMemory& operator=(LinkMemory&& other) noexcept;
  LinkMemory(const LinkMemory&) = delete;
  LinkMemory& operator=(const LinkMemory&) = delete;
  ~LinkMemory();

  [[nodiscard]] int fd() const noexcept { return fd_.get(); }
  [[nodiscard]] std::uint64_t size() const noexcept { return size_; }
  // True when the memory existed before this daemon started (adopted).
  [[nodiscard]] bool adopted() const noexcept { return adopted_; }
  // Whether `fd` refers to this very memory object (same inode).
  [[nodiscard]] bool same_object(int fd) const noexcept;

  // Reads a peer's state-table entry once (acquire).
  [[nodiscard]] std::uint32_t peer_state(std::uint32_t peer) const noexcept;
  // Writes a peer's entry (release); the daemon writes only 0, for a peer
  // that left.
  void set_peer_state(std::uint32_t peer, std::uint32_t value) noexcept;

 private:
  void map(const LinkConfig& link);

  linux_uio::UniqueFd fd_;
  std::byte* memory_ = nullptr;
  std::uint64_t size_ = 0;
  std::uint32_t peers_ = 0;
  bool adopted_ = false;
  dev_t device_ = 0;
  ino_t inode_ = 0;
};

}  // namespace cellink::hypervisor
