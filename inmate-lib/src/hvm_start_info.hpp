// hvm_start_info: the PVH boot ABI's start-of-day structure, as the loader
// (QEMU's PVH option ROM, or Xen) leaves it in memory and passes its physical
// address in ebx. Private to inmate-lib: start.cpp reads it once at boot.
//
//   +0x00 u32 magic          kHvmStartMagic
//   +0x04 u32 version        0 or 1 (memmap fields exist from 1)
//   +0x08 u32 flags
//   +0x0c u32 nr_modules
//   +0x10 u64 modlist_paddr
//   +0x18 u64 cmdline_paddr  NUL-terminated command line, 0 when none
//   +0x20 u64 rsdp_paddr
//   +0x28 u64 memmap_paddr   (version >= 1)
//   +0x30 u32 memmap_entries (version >= 1)
//   +0x34 u32 reserved
//
// Written by the loader only, read once; every address in it is checked
// against the identity-mapped first 1 GiB before use.
#pragma once

#include <cstddef>
#include <cstdint>
#include <type_traits>

namespace cellink::inmate {

inline constexpr std::uint32_t kHvmStartMagic = 0x336ec578;

struct HvmStartInfo {
  std::uint32_t magic;
  std::uint32_t version;
  std::uint32_t flags;
  std::uint32_t nr_modules;
  std::uint64_t modlist_paddr;
  std::uint64_t cmdline_paddr;
  std::uint64_t rsdp_paddr;
  std::uint64_t memmap_paddr;
  std::uint32_t memmap_entries;
  std::uint32_t reserved;
};
static_assert(offsetof(HvmStartInfo, cmdline_paddr) == 0x18);
static_assert(offsetof(HvmStartInfo, memmap_entries) == 0x30);
static_assert(sizeof(HvmStartInfo) == 0x38);
static_assert(std::is_trivially_copyable_v<HvmStartInfo> &&
              std::is_standard_layout_v<HvmStartInfo>);

// Copies the command line named by the hvm_start_info at `start_info_address`
// into the image (command_line.cpp); prints a warning and keeps "" when the
// structure or the string is out of reach or malformed.
void load_command_line(std::uint32_t start_info_address);

}  // namespace cellink::inmate
