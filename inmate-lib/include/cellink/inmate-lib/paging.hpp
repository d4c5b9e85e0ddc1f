// paging: the inmate's page tables. Physical memory is identity-mapped
// (virtual address == physical address), so a physical address from a PCI BAR
// or a register can be used as a pointer once it is mapped.
//
// At boot the first 1 GiB is mapped read-write, write-back, with 2 MiB pages
// (boot_x86_64.S builds them); everything above faults until map_range() maps
// it. start.cpp then unmaps page 0 (null pointers fault) and the guard page
// below the boot stack.
//
// Contract: map_range() identity-maps [physical, physical + size), rounded
// out to 4 KiB pages, for any physical address below 2^46. It uses 2 MiB
// pages where a whole aligned 2 MiB block is asked for and 4 KiB pages
// elsewhere, splitting an existing 2 MiB mapping where only part of it
// changes. Re-mapping a mapped range changes its attributes. Page-table pages
// come from a static pool of kPageTablePoolPages pages; when it runs out, or
// the range is invalid, it prints why and returns false, with the pages it
// already changed left mapped. Every call ends with a full TLB flush (CR3
// reload), so the new mappings are in force when it returns.
//
// Caching::uncached sets PCD and PWT, which the reset PAT makes UC: use it
// for every MMIO register range (LAPIC, MSI-X tables, BAR registers).
//
// Threading and interrupts: call from thread context (not from a handler).
// Each call disables interrupts while it edits the tables, so a handler
// never sees a half-written entry.
//
// Freestanding: no exceptions, no heap, no libc.
#pragma once

#include <cstddef>
#include <cstdint>

namespace cellink::inmate {

enum class Access : std::uint8_t { read_only, read_write };
enum class Caching : std::uint8_t { write_back, uncached };

inline constexpr std::uint64_t kPageSize = 4096;
inline constexpr std::uint64_t kLargePageSize = 2ull << 20;
// Addresses at and above this fault (4-level paging covers 2^48; the library
// keeps to 2^46, the physical-address width of the CPUs it targets).
inline constexpr std::uint64_t kPhysicalAddressLimit = 1ull << 46;
// Page-table pages available to map_range(): each maps 2 MiB with 4 KiB pages
// or 1 GiB with 2 MiB pages.
inline constexpr std::size_t kPageTablePoolPages = 32;

bool map_range(std::uint64_t physical, std::uint64_t size, Access access, Caching caching);
// Removes the mapping of [physical, physical + size) (rounded out to 4 KiB),
// so accesses fault. Same rules and failure modes as map_range().
bool unmap_range(std::uint64_t physical, std::uint64_t size);
// Page-table pages still free in the pool.
std::size_t page_table_pages_free();

}  // namespace cellink::inmate
