// paging: map_range() and unmap_range() over the 4-level page tables that
// boot_x86_64.S built (PML4 -> PDPT -> PD of 2 MiB pages for the first GiB).
//
// Tables are reached through their physical addresses, which are also their
// virtual ones: the boot tables and the pool live in the image, inside the
// identity-mapped first GiB. Table pages come from a static pool with a free
// list; a 4 KiB table replaced by a 2 MiB page goes back to it.
//
// Changing a live entry: a split replaces a 2 MiB (or 1 GiB) leaf by a table
// that translates every address the same way, so a stale TLB entry stays
// correct until the flush; an attribute change or unmap is in force only
// after the flush at the end of each call (a full CR3 reload: no global
// pages are used). The tables are edited with interrupts disabled, so no
// handler runs between an edit and the flush.
//
// Contract and threading: see paging.hpp.
#include "cellink/inmate-lib/paging.hpp"

#include <cstddef>
#include <cstdint>

#include "cellink/inmate-lib/cpu.hpp"
#include "cellink/inmate-lib/print.hpp"

namespace cellink::inmate {
namespace {

using Entry = std::uint64_t;
constexpr std::size_t kEntries = 512;

constexpr Entry kPresent = 1ull << 0;
constexpr Entry kWritable = 1ull << 1;
constexpr Entry kWriteThrough = 1ull << 3;  // PWT
constexpr Entry kCacheDisable = 1ull << 4;  // PCD; with PWT: PAT entry 3 = UC
constexpr Entry kLarge = 1ull << 7;         // PS in a PDPT or PD entry
constexpr Entry kAddressMask = 0x000ffffffffff000ull;
// What a split copies from a large leaf into each smaller entry: P, RW, US,
// PWT, PCD, A, D (bits 0..6), G (bit 8) and XD (bit 63); not PS, not the
// large-page PAT bit (12), which the runtime never sets.
constexpr Entry kInheritedFlags = 0x17full | (1ull << 63);
constexpr Entry kTableFlags = kPresent | kWritable;

constexpr std::uint64_t kHugePageSize = 1ull << 30;

struct alignas(4096) Table {
  Entry entries[kEntries];
};

Table pool[kPageTablePoolPages];
std::size_t pool_used = 0;     // pages handed out from the pool at least once
Table* free_tables = nullptr;  // returned pages; entries[0] links to the next
std::size_t free_count = 0;

Table* allocate_table() {
  Table* table = nullptr;
  if (free_tables != nullptr) {
    table = free_tables;
    free_tables = reinterpret_cast<Table*>(table->entries[0]);  // NOLINT(performance-no-int-to-ptr)
    --free_count;
  } else if (pool_used < kPageTablePoolPages) {
    table = &pool[pool_used++];
  } else {
    return nullptr;
  }
  for (Entry& entry : table->entries) entry = 0;
  return table;
}

bool from_pool(const Table* table) {
  return table >= &pool[0] && table < &pool[kPageTablePoolPages];
}

void release_table(Table* table) {
  if (!from_pool(table)) return;  // a boot table stays where it is
  table->entries[0] = reinterpret_cast<Entry>(free_tables);
  free_tables = table;
  ++free_count;
}

Table* table_at(Entry entry) {
  // Tables live in the identity-mapped image, so a physical address is a pointer.
  return reinterpret_cast<Table*>(entry & kAddressMask);  // NOLINT(performance-no-int-to-ptr)
}

Entry leaf_flags(Access access, Caching caching) {
  Entry flags = kPresent;
  if (access == Access::read_write) flags |= kWritable;
  if (caching == Caching::uncached) flags |= kCacheDisable | kWriteThrough;
  return flags;
}

// The table below `entry`, creating it (empty, or as a split of a large
// leaf that maps `child_size` per entry) when needed. Null when the pool is
// empty, or when `create` is false and there is nothing below.
Table* descend(Entry& entry, std::uint64_t child_size, bool create) {
  if ((entry & kPresent) != 0 && (entry & kLarge) == 0) return table_at(entry);
  if ((entry & kPresent) == 0 && !create) return nullptr;
  Table* table = allocate_table();
  if (table == nullptr) return nullptr;
  if ((entry & kPresent) != 0) {
    // Split: each smaller entry maps its part of the large page with the
    // same flags. 4 KiB entries carry no PS bit; 2 MiB ones do.
    const Entry base = entry & kAddressMask & ~(child_size * kEntries - 1);
    const Entry flags = (entry & kInheritedFlags) | (child_size == kPageSize ? 0 : kLarge);
    for (std::size_t i = 0; i < kEntries; ++i) table->entries[i] = (base + i * child_size) | flags;
  }
  entry = reinterpret_cast<Entry>(table) | kTableFlags;
  return table;
}

enum class Change : std::uint8_t { map, unmap };

const char* describe(Change change) {
  return change == Change::map ? "map_range" : "unmap_range";
}

bool change_range(Change change, std::uint64_t physical, std::uint64_t size, Entry flags) {
  const std::uint64_t end = physical + size;
  if (size == 0 || end < physical || end > kPhysicalAddressLimit) {
    print("inmate: %s: range %#llx+%#llx is empty or reaches past 2^46\n", describe(change),
          static_cast<unsigned long long>(physical), static_cast<unsigned long long>(size));
    return false;
  }
  const bool create = change == Change::map;
  std::uint64_t address = physical & ~(kPageSize - 1);
  const std::uint64_t limit = (end + kPageSize - 1) & ~(kPageSize - 1);
  bool ok = true;
  const InterruptsDisabled guard;
  Table* pml4 = table_at(read_cr3());
  while (address < limit) {
    const std::uint64_t remaining = limit - address;
    Entry& pml4_entry = pml4->entries[(address >> 39) % kEntries];
    Table* pdpt = descend(pml4_entry, kHugePageSize, create);
    if (pdpt == nullptr) {
      if (create) {
        ok = false;
        break;
      }
      address = (address | ((kHugePageSize * kEntries) - 1)) + 1;  // nothing mapped in this 512 GiB
      continue;
    }
    Entry& pdpt_entry = pdpt->entries[(address >> 30) % kEntries];
    Table* pd = descend(pdpt_entry, kLargePageSize, create);
    if (pd == nullptr) {
      if (create) {
        ok = false;
        break;
      }
      address = (address | (kHugePageSize - 1)) + 1;
      continue;
    }
    Entry& pd_entry = pd->entries[(address >> 21) % kEntries];
    if (address % kLargePageSize == 0 && remaining >= kLargePageSize) {
      // A whole aligned 2 MiB block: one large leaf (or none), and the 4 KiB
      // table it may have had goes back to the pool.
      Table* old_table =
          (pd_entry & kPresent) != 0 && (pd_entry & kLarge) == 0 ? table_at(pd_entry) : nullptr;
      pd_entry = create ? (address | flags | kLarge) : 0;
      if (old_table != nullptr) release_table(old_table);
      address += kLargePageSize;
      continue;
    }
    Table* pt = descend(pd_entry, kPageSize, create);
    if (pt == nullptr) {
      if (create) {
        ok = false;
        break;
      }
      address = (address | (kLargePageSize - 1)) + 1;
      continue;
    }
    pt->entries[(address >> 12) % kEntries] = create ? (address | flags) : 0;
    address += kPageSize;
  }
  // Every edit above is a plain store to a table; the CR3 reload below is
  // ordered after them by its "memory" clobber and is serializing on the CPU.
  write_cr3(read_cr3());
  if (!ok) {
    print(
        "inmate: %s: page-table pool (%zu pages) exhausted at %#llx; raise "
        "kPageTablePoolPages or map fewer, larger-aligned ranges\n",
        describe(change), kPageTablePoolPages, static_cast<unsigned long long>(address));
  }
  return ok;
}

}  // namespace

bool map_range(std::uint64_t physical, std::uint64_t size, Access access, Caching caching) {
  return change_range(Change::map, physical, size, leaf_flags(access, caching));
}

bool unmap_range(std::uint64_t physical, std::uint64_t size) {
  return change_range(Change::unmap, physical, size, 0);
}

std::size_t page_table_pages_free() {
  const InterruptsDisabled guard;
  return kPageTablePoolPages - pool_used + free_count;
}

}  // namespace cellink::inmate
