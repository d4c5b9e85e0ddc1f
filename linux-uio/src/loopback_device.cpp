// LoopbackDevice: every peer of a link in one process, over one memfd.
#include "cellink/linux-uio/loopback_device.hpp"

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <climits>
#include <stdexcept>
#include <string>
#include <system_error>
#include <utility>

namespace cellink::linux_uio {
namespace {

using Clock = std::chrono::steady_clock;

// epoll tags: vector eventfds use their vector, the membership notifier this.
constexpr std::uint64_t kMembershipTag = ~std::uint64_t{0};
constexpr std::uint64_t kWakeTag = ~std::uint64_t{1};  // the fd add_wake_fd() gave

// Longer waits are treated as this long, so a deadline never overflows.
constexpr std::chrono::hours kLongestWait{24 * 365 * 10};

[[noreturn]] void fail_errno(const std::string& what) {
  throw std::system_error(errno, std::generic_category(), what);
}

UniqueFd make_eventfd(const std::string& what) {
  UniqueFd fd(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  if (!fd) fail_errno(what);
  return fd;
}

void watch(int epoll, int fd, std::uint64_t tag, const std::string& what) {
  epoll_event event{};
  event.events = EPOLLIN;
  event.data.u64 = tag;
  if (::epoll_ctl(epoll, EPOLL_CTL_ADD, fd, &event) != 0) fail_errno(what);
}

// Reads and resets an eventfd's counter; 0 when it had not fired.
std::uint64_t take(int fd) noexcept {
  std::uint64_t count = 0;
  return ::read(fd, &count, sizeof(count)) == sizeof(count) ? count : 0;
}

std::string peer_name(std::uint32_t id) {
  return "LoopbackLink peer " + std::to_string(id);
}

}  // namespace

// ---- LoopbackDevice ---------------------------------------------------------

LoopbackDevice::LoopbackDevice(LoopbackLink& link, std::uint32_t id) : link_(link), id_(id) {
  const std::string who = peer_name(id);
  epoll_.reset(::epoll_create1(EPOLL_CLOEXEC));
  if (!epoll_) fail_errno(who + ": epoll_create1 (too many open files? raise `ulimit -n`)");
  for (std::uint32_t vector = 0; vector < link.vectors(); ++vector) {
    vector_fds_.push_back(make_eventfd(who + ": eventfd for vector " + std::to_string(vector) +
                                       " (too many open files? raise `ulimit -n`)"));
    watch(epoll_.get(), vector_fds_.back().get(), vector, who + ": epoll_ctl on a vector eventfd");
  }
  membership_fd_ = make_eventfd(who + ": membership eventfd");
  watch(epoll_.get(), membership_fd_.get(), kMembershipTag,
        who + ": epoll_ctl on the membership eventfd");
}

std::uint32_t LoopbackDevice::peer_count() const noexcept {
  return link_.layout_.peers();
}

std::uint32_t LoopbackDevice::vector_count() const noexcept {
  return link_.vectors_;
}

bool LoopbackDevice::peer_present(std::uint32_t peer) const noexcept {
  return link_.attached(peer);
}

const ivshmem::Layout& LoopbackDevice::layout() const noexcept {
  return link_.layout_;
}

std::span<std::byte> LoopbackDevice::rw_section() noexcept {
  const ivshmem::Section section = link_.layout_.rw_section();
  return {link_.memory_ + section.offset, section.size};
}

std::span<std::byte> LoopbackDevice::own_output_section() noexcept {
  const ivshmem::Section section = link_.layout_.output_section(id_);
  return {link_.memory_ + section.offset, section.size};
}

std::span<const std::byte> LoopbackDevice::output_section(std::uint32_t peer) const noexcept {
  const ivshmem::Section section = link_.layout_.output_section(peer);
  return {link_.memory_ + section.offset, section.size};
}

ivshmem::DoorbellStatus LoopbackDevice::doorbell(std::uint32_t peer,
                                                 std::uint32_t vector) noexcept {
  if (peer >= peer_count()) return ivshmem::DoorbellStatus::no_such_peer;
  if (vector >= vector_count()) return ivshmem::DoorbellStatus::no_such_vector;
  std::lock_guard lock(link_.membership_mutex_);
  if (!link_.attached_[id_] || !link_.attached_[peer]) return ivshmem::DoorbellStatus::peer_absent;
  return link_.devices_[peer]->ring(vector) ? ivshmem::DoorbellStatus::ok
                                            : ivshmem::DoorbellStatus::failed;
}

bool LoopbackDevice::ring(std::uint32_t vector) noexcept {
  // The eventfd write is a syscall: the kernel's locking orders every prior
  // store to shared memory before the wake-up; pairs with take() in wait().
  const std::uint64_t one = 1;
  return ::write(vector_fds_[vector].get(), &one, sizeof(one)) == sizeof(one);
}

void LoopbackDevice::set_state(std::uint32_t value) noexcept {
  // R: everything written before the state change is visible to a peer that
  // reads the new value; pairs with the acquire load in peer_state().
  std::atomic_ref<std::uint32_t>(link_.state_entry(id_)).store(value, std::memory_order_release);
  for (std::uint32_t peer = 0; peer < peer_count(); ++peer) {
    if (peer != id_) (void)doorbell(peer, 0);
  }
}

std::uint32_t LoopbackDevice::peer_state(std::uint32_t peer) const noexcept {
  // A: pairs with the release store in the writer's set_state() (or in
  // LoopbackLink::detach(), which zeroes a departed peer's entry).
  return std::atomic_ref<std::uint32_t>(link_.state_entry(peer)).load(std::memory_order_acquire);
}

std::vector<DeviceEvent> LoopbackDevice::wait(std::chrono::milliseconds timeout) {
  std::vector<DeviceEvent> events;
  const Clock::time_point deadline =
      Clock::now() +
      std::clamp(timeout, std::chrono::milliseconds{0}, std::chrono::milliseconds{kLongestWait});
  std::array<epoll_event, ivshmem::kMaxVectors + 1> ready{};
  for (;;) {
    const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now());
    const auto wait_ms = std::clamp<std::chrono::milliseconds::rep>(left.count(), 0, INT_MAX);
    const int count = ::epoll_wait(epoll_.get(), ready.data(), static_cast<int>(ready.size()),
                                   static_cast<int>(wait_ms));
    if (count < 0) {
      if (errno == EINTR) continue;
      fail_errno(peer_name(id_) + ": epoll_wait");
    }
    // Only the fds epoll reported: each read is a system call on a blocking
    // receiver's wake-up path. Membership first; an event posted after
    // epoll_wait() keeps its fd readable and is reported by the next wait.
    bool membership = false;
    bool woken = false;
    std::uint64_t vectors = 0;  // bit v: vector v's eventfd is readable
    for (int i = 0; i < count; ++i) {
      const std::uint64_t tag = ready[static_cast<std::size_t>(i)].data.u64;
      if (tag == kMembershipTag) {
        membership = true;
      } else if (tag == kWakeTag) {
        woken = true;
      } else if (tag < vector_fds_.size()) {
        vectors |= std::uint64_t{1} << tag;
      }
    }
    if (membership) collect_membership(events);
    collect_doorbells(vectors, events);
    if (!events.empty() || woken || Clock::now() >= deadline) return events;
  }
}

bool LoopbackDevice::add_wake_fd(int fd) {
  watch(epoll_.get(), fd, kWakeTag, peer_name(id_) + ": epoll_ctl on the wake-up fd");
  return true;
}

void LoopbackDevice::collect_membership(std::vector<DeviceEvent>& events) {
  // Under the lock, so the notifier's count and the queue agree: an event is
  // never left queued behind a notifier that reads empty.
  std::lock_guard lock(link_.membership_mutex_);
  (void)take(membership_fd_.get());
  for (DeviceEvent& event : pending_membership_) events.push_back(std::move(event));
  pending_membership_.clear();
}

void LoopbackDevice::collect_doorbells(std::uint64_t vectors, std::vector<DeviceEvent>& events) {
  for (std::uint32_t vector = 0; vector < vector_fds_.size(); ++vector) {
    if ((vectors & (std::uint64_t{1} << vector)) == 0) continue;
    const std::uint64_t count = take(vector_fds_[vector].get());
    if (count != 0) events.push_back({DeviceEvent::Kind::doorbell, vector, count, 0, {}});
  }
}

void LoopbackDevice::post_membership(DeviceEvent event) {
  pending_membership_.push_back(std::move(event));
  const std::uint64_t one = 1;
  (void)::write(membership_fd_.get(), &one, sizeof(one));
}

void LoopbackDevice::drop_pending() noexcept {
  pending_membership_.clear();
  (void)take(membership_fd_.get());
  for (const UniqueFd& fd : vector_fds_) (void)take(fd.get());
}

// ---- LoopbackLink -----------------------------------------------------------

LoopbackLink::LoopbackLink(std::uint32_t peers, std::uint64_t output_section_size,
                           std::uint32_t vectors, std::uint64_t rw_section_size) {
  const ivshmem::LayoutError error =
      ivshmem::Layout::compute({peers, rw_section_size, output_section_size}, layout_);
  if (error != ivshmem::LayoutError::ok) {
    throw std::invalid_argument(
        "LoopbackLink of " + std::to_string(peers) + " peers, output sections of " +
        std::to_string(output_section_size) + " bytes, R/W section of " +
        std::to_string(rw_section_size) + " bytes: " + ivshmem::describe(error));
  }
  if (vectors == 0 || vectors > ivshmem::kMaxVectors) {
    throw std::invalid_argument(
        "LoopbackLink: " + std::to_string(vectors) + " vectors per peer is outside 1.." +
        std::to_string(ivshmem::kMaxVectors) + " (the ivshmem-server protocol's limit)");
  }
  vectors_ = vectors;
  memory_size_ = layout_.memory_size();
  const std::string size = std::to_string(memory_size_) + " bytes";

  memory_fd_.reset(::memfd_create("cellink-loopback", MFD_CLOEXEC));
  if (!memory_fd_) fail_errno("LoopbackLink: memfd_create for " + size);
  if (::ftruncate(memory_fd_.get(), static_cast<off_t>(memory_size_)) != 0) {
    fail_errno("LoopbackLink: cannot size the memfd to " + size);
  }
  void* mapped =
      ::mmap(nullptr, memory_size_, PROT_READ | PROT_WRITE, MAP_SHARED, memory_fd_.get(), 0);
  if (mapped == MAP_FAILED) fail_errno("LoopbackLink: mmap of " + size);
  memory_ = static_cast<std::byte*>(mapped);

  attached_.assign(peers, true);
  try {
    for (std::uint32_t peer = 0; peer < peers; ++peer) {
      devices_.push_back(std::unique_ptr<LoopbackDevice>(new LoopbackDevice(*this, peer)));
    }
  } catch (...) {
    // The destructor does not run for a half-built object.
    devices_.clear();
    ::munmap(memory_, memory_size_);
    throw;
  }
}

LoopbackLink::~LoopbackLink() {
  devices_.clear();
  ::munmap(memory_, memory_size_);
}

void LoopbackLink::check_peer(std::uint32_t peer, const char* operation) const {
  if (peer >= peers()) {
    throw std::out_of_range(std::string("LoopbackLink::") + operation + ": peer " +
                            std::to_string(peer) + " is outside the link's " +
                            std::to_string(peers()) + " peers (ids 0.." +
                            std::to_string(peers() - 1) + ")");
  }
}

std::uint32_t& LoopbackLink::state_entry(std::uint32_t peer) const noexcept {
  return *reinterpret_cast<std::uint32_t*>(memory_ + layout_.state_entry_offset(peer));
}

LoopbackDevice& LoopbackLink::device(std::uint32_t peer) {
  check_peer(peer, "device");
  return *devices_[peer];
}

bool LoopbackLink::attached(std::uint32_t peer) const noexcept {
  std::lock_guard lock(membership_mutex_);
  return peer < attached_.size() && attached_[peer];
}

void LoopbackLink::detach(std::uint32_t peer) {
  check_peer(peer, "detach");
  std::lock_guard lock(membership_mutex_);
  if (!attached_[peer]) return;
  attached_[peer] = false;
  devices_[peer]->drop_pending();
  // R: as the daemon does for a closed socket; pairs with the acquire load
  // in LoopbackDevice::peer_state().
  std::atomic_ref<std::uint32_t>(state_entry(peer)).store(0, std::memory_order_release);
  for (std::uint32_t other = 0; other < peers(); ++other) {
    if (other == peer || !attached_[other]) continue;
    devices_[other]->post_membership({DeviceEvent::Kind::peer_left, 0, 0, peer, {}});
    (void)devices_[other]->ring(0);
  }
}

void LoopbackLink::attach(std::uint32_t peer) {
  check_peer(peer, "attach");
  std::lock_guard lock(membership_mutex_);
  if (attached_[peer]) return;
  attached_[peer] = true;
  for (std::uint32_t other = 0; other < peers(); ++other) {
    if (other == peer || !attached_[other]) continue;
    devices_[other]->post_membership({DeviceEvent::Kind::peer_joined, 0, 0, peer, {}});
  }
}

}  // namespace cellink::linux_uio
