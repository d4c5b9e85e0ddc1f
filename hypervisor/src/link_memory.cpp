// LinkMemory: allocation, adoption and state-table access for one link.
#include "cellink/hypervisor/link_memory.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <system_error>
#include <utility>

#include <fmt/format.h>

namespace cellink::hypervisor {
namespace {

constexpr long kHugetlbfsMagic = 0x958458f6;

std::string errno_text(int error) {
  return std::system_category().message(error);
}

// Why a descriptor found in existing memory does not describe `link`, or "".
std::string descriptor_mismatch(const LinkConfig& link, const ivshmem::LinkDescriptor& found) {
  if (found.peers != link.cells.size()) {
    return fmt::format("it has {} peers, the config {}", found.peers, link.cells.size());
  }
  if (found.vectors != link.vectors) {
    return fmt::format("it has {} vectors, the config {}", found.vectors, link.vectors);
  }
  if (found.protocol != link.protocol) {
    return fmt::format("its protocol is {:#x}, the config's {:#x}", found.protocol, link.protocol);
  }
  if (found.rw_section_size != link.rw_section_size ||
      found.output_section_size != link.output_section_size) {
    return "its section sizes differ from the config's";
  }
  if (link.name != found.name) return fmt::format("it belongs to link '{}'", found.name);
  return {};
}

// Validates the descriptor inside a mapped object against `link`.
std::string check_existing(const LinkConfig& link, const std::byte* memory, std::uint64_t size) {
  ivshmem::LinkDescriptor descriptor{};
  std::memcpy(&descriptor, memory + ivshmem::kLinkDescriptorOffset, sizeof(descriptor));
  ivshmem::Layout layout;
  const ivshmem::DescriptorError error = ivshmem::validate(descriptor, size, layout);
  if (error != ivshmem::DescriptorError::ok) return ivshmem::describe(error);
  return descriptor_mismatch(link, descriptor);
}

}  // namespace

LinkMemory::LinkMemory(LinkMemory&& other) noexcept {
  *this = std::move(other);
}

LinkMemory& LinkMemory::operator=(LinkMemory&& other) noexcept {
  if (this != &other) {
    if (memory_ != nullptr) ::munmap(memory_, size_);
    fd_ = std::move(other.fd_);
    memory_ = std::exchange(other.memory_, nullptr);
    size_ = std::exchange(other.size_, 0);
    peers_ = other.peers_;
    adopted_ = other.adopted_;
    device_ = other.device_;
    inode_ = other.inode_;
  }
  return *this;
}

LinkMemory::~LinkMemory() {
  if (memory_ != nullptr) ::munmap(memory_, size_);
}

LinkMemory LinkMemory::open(const LinkConfig& link) {
  LinkMemory memory;
  memory.peers_ = static_cast<std::uint32_t>(link.cells.size());
  std::uint64_t size = link.layout.memory_size();
  const std::string where = fmt::format("link '{}'", link.name);

  if (link.backing.kind == LinkBacking::Kind::memfd) {
    memory.fd_.reset(
        ::memfd_create(("cellink:" + link.name).c_str(), MFD_CLOEXEC | MFD_ALLOW_SEALING));
    if (!memory.fd_) {
      throw std::runtime_error(
          fmt::format("{}: memfd_create failed: {}", where, errno_text(errno)));
    }
  } else {
    const std::string path = link.backing.path.string();
    memory.fd_.reset(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
    if (!memory.fd_) {
      throw std::runtime_error(
          fmt::format("{}: cannot open backing {}: {} (check that the "
                      "directory exists and is writable)",
                      where, path, errno_text(errno)));
    }
    struct statfs filesystem {};
    if (::fstatfs(memory.fd_.get(), &filesystem) == 0 &&
        static_cast<long>(filesystem.f_type) == kHugetlbfsMagic) {
      // hugetlbfs objects are whole huge pages; both sizes are powers of two.
      size = std::max<std::uint64_t>(size, static_cast<std::uint64_t>(filesystem.f_bsize));
    }
    struct stat info {};
    if (::fstat(memory.fd_.get(), &info) != 0) {
      throw std::runtime_error(fmt::format("{}: fstat {}: {}", where, path, errno_text(errno)));
    }
    if (info.st_size != 0) {
      if (static_cast<std::uint64_t>(info.st_size) != size) {
        throw std::runtime_error(fmt::format(
            "{}: backing {} exists with {} bytes, but the link needs {}; remove it (when no peer "
            "uses it) or restore the link's previous configuration",
            where, path, info.st_size, size));
      }
      memory.size_ = size;
      memory.map(link);
      const std::string mismatch = check_existing(link, memory.memory_, size);
      if (!mismatch.empty()) {
        throw std::runtime_error(fmt::format(
            "{}: cannot adopt backing {}: {}; remove it (when no peer uses it) or restore the "
            "link's previous configuration",
            where, path, mismatch));
      }
      memory.adopted_ = true;
      return memory;
    }
  }

  if (::ftruncate(memory.fd_.get(), static_cast<off_t>(size)) != 0) {
    throw std::runtime_error(fmt::format("{}: cannot size the shared memory to {} bytes: {}", where,
                                         size, errno_text(errno)));
  }
  if (link.backing.kind == LinkBacking::Kind::memfd) {
    // A hostile peer holding the fd must not be able to shrink the object
    // and fault every other mapping with SIGBUS.
    (void)::fcntl(memory.fd_.get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL);
  }
  memory.size_ = size;
  memory.map(link);
  std::memset(memory.memory_, 0, link.layout.state_table().size);
  const ivshmem::LinkDescriptor descriptor =
      ivshmem::make_link_descriptor(link.layout, link.vectors, link.protocol, link.name.c_str());
  ivshmem::LinkDescriptor written = descriptor;
  written.memory_size = size;
  std::memcpy(memory.memory_ + ivshmem::kLinkDescriptorOffset, &written, sizeof(written));
  return memory;
}

bool LinkMemory::adopt_fd(const LinkConfig& link, linux_uio::UniqueFd fd, LinkMemory& out,
                          std::string& why) {
  struct stat info {};
  if (::fstat(fd.get(), &info) != 0 || !S_ISREG(info.st_mode)) {
    why = "the fd is not a memory object";
    return false;
  }
  const auto size = static_cast<std::uint64_t>(info.st_size);
  if (size < link.layout.memory_size() || !ivshmem::is_power_of_two(size)) {
    why = fmt::format("the memory object has {} bytes, the link needs {}", size,
                      link.layout.memory_size());
    return false;
  }
  LinkMemory memory;
  memory.peers_ = static_cast<std::uint32_t>(link.cells.size());
  memory.fd_ = std::move(fd);
  memory.size_ = size;
  memory.map(link);
  why = check_existing(link, memory.memory_, size);
  if (!why.empty()) return false;
  memory.adopted_ = true;
  out = std::move(memory);
  return true;
}

void LinkMemory::map(const LinkConfig& link) {
  void* mapped = ::mmap(nullptr, size_, PROT_READ | PROT_WRITE, MAP_SHARED, fd_.get(), 0);
  if (mapped == MAP_FAILED) {
    throw std::runtime_error(
        fmt::format("link '{}': cannot map {} bytes: {}", link.name, size_, errno_text(errno)));
  }
  memory_ = static_cast<std::byte*>(mapped);
  struct stat info {};
  if (::fstat(fd_.get(), &info) == 0) {
    device_ = info.st_dev;
    inode_ = info.st_ino;
  }
}

bool LinkMemory::same_object(int fd) const noexcept {
  struct stat info {};
  return ::fstat(fd, &info) == 0 && info.st_dev == device_ && info.st_ino == inode_;
}

std::uint32_t LinkMemory::peer_state(std::uint32_t peer) const noexcept {
  auto* entry = reinterpret_cast<std::uint32_t*>(memory_ + std::uint64_t{peer} * 4U);
  // Acquire: pairs with the release store in the peer's set_state().
  return std::atomic_ref<std::uint32_t>(*entry).load(std::memory_order_acquire);
}

void LinkMemory::set_peer_state(std::uint32_t peer, std::uint32_t value) noexcept {
  if (peer >= peers_) return;
  auto* entry = reinterpret_cast<std::uint32_t*>(memory_ + std::uint64_t{peer} * 4U);
  // Release: the reset is visible before the vector-0 doorbell that follows
  // it; pairs with the acquire load in the survivors' peer_state().
  std::atomic_ref<std::uint32_t>(*entry).store(value, std::memory_order_release);
}

}  // namespace cellink::hypervisor
