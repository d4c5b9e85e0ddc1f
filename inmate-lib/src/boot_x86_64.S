/*
 * boot_x86_64: the inmate's first instructions, from the PVH entry point to
 * the C++ start function inmate_start() (start.cpp).
 *
 * Entry contract (PVH boot ABI, what QEMU's `-kernel` gives an ELF with a
 * XEN_ELFNOTE_PHYS32_ENTRY note): 32-bit protected mode, paging off,
 * interrupts off, flat 4 GiB code and data segments, ebx = physical address
 * of struct hvm_start_info. No usable stack. The image is linked and loaded
 * at 1 MiB (inmate.ld), so link-time addresses are physical addresses.
 *
 * What this code does, in order:
 *   1. zeroes .bss (the loader may or may not have; nothing in .bss is used
 *      before this), which also clears the page tables and the stack below;
 *   2. builds the boot page tables: PML4[0] -> PDPT[0] -> one PD of 512
 *      2 MiB pages, identity-mapping the first 1 GiB read-write, write-back
 *      (PCD = PWT = 0 with the reset PAT); nothing else is mapped;
 *   3. enables PAE, loads CR3, sets EFER.LME, enables paging: the CPU is now
 *      in compatibility mode; loads the GDT and far-jumps to the 64-bit code
 *      segment;
 *   4. loads the data segments, sets rsp to the top of the 64 KiB boot stack
 *      and calls inmate_start(start_info_address), which never returns.
 *
 * Interrupts stay disabled throughout; the IDT is loaded later, in C++.
 * The GDT lives in .data because `ltr` writes the TSS descriptor's busy bit.
 */

#define CR0_PG (1 << 31)
/* Write Protect: read-only pages bind ring 0 too (paging.hpp's Access::read_only). */
#define CR0_WP (1 << 16)
#define CR4_PAE (1 << 5)
#define MSR_EFER 0xc0000080
#define EFER_LME (1 << 8)
#define PAGE_PRESENT 0x1
#define PAGE_WRITABLE 0x2
#define PAGE_LARGE 0x80
#define LARGE_PAGE_SIZE 0x200000
#define SELECTOR_CODE64 0x08
#define SELECTOR_DATA 0x10

/* The PVH note: owner "Xen", type 18 (XEN_ELFNOTE_PHYS32_ENTRY), a 4-byte
 * descriptor holding the 32-bit physical entry address. inmate.ld puts this
 * section in a PT_NOTE segment, where QEMU looks for it. */
  .section .note.Xen, "a", @note
  .balign 4
  .long 4              /* name size, "Xen" and its NUL */
  .long 4              /* descriptor size */
  .long 18             /* XEN_ELFNOTE_PHYS32_ENTRY */
  .asciz "Xen"
  .balign 4
  .long boot_entry32
  .balign 4

  .section .text.boot, "ax", @progbits
  .code32
  .globl boot_entry32
  .type boot_entry32, @function
boot_entry32:
  cli
  cld
  /* ebx holds the hvm_start_info address until inmate_start(); nothing
   * below touches it. */

  /* 1. Zero .bss. */
  movl $__bss_start, %edi
  movl $__bss_end, %ecx
  subl %edi, %ecx
  xorl %eax, %eax
  rep stosb

  /* 2. Page tables: PML4[0] -> PDPT, PDPT[0] -> PD. */
  movl $boot_pdpt, %eax
  orl $(PAGE_PRESENT | PAGE_WRITABLE), %eax
  movl %eax, boot_pml4
  movl $boot_pd, %eax
  orl $(PAGE_PRESENT | PAGE_WRITABLE), %eax
  movl %eax, boot_pdpt
  /* PD[i] = i * 2 MiB, present, writable, large; the upper halves stay zero
   * from step 1. */
  movl $boot_pd, %edi
  movl $(PAGE_PRESENT | PAGE_WRITABLE | PAGE_LARGE), %eax
  movl $512, %ecx
1:
  movl %eax, (%edi)
  addl $LARGE_PAGE_SIZE, %eax
  addl $8, %edi
  loop 1b

  /* 3. PAE, CR3, EFER.LME, then paging. */
  movl %cr4, %eax
  orl $CR4_PAE, %eax
  movl %eax, %cr4
  movl $boot_pml4, %eax
  movl %eax, %cr3
  movl $MSR_EFER, %ecx
  rdmsr
  orl $EFER_LME, %eax
  wrmsr
  movl %cr0, %eax
  orl $(CR0_PG | CR0_WP), %eax
  movl %eax, %cr0
  lgdt boot_gdt_pointer
  ljmp $SELECTOR_CODE64, $boot_entry64

  .code64
boot_entry64:
  /* 4. Data segments, stack, C++. */
  movw $SELECTOR_DATA, %ax
  movw %ax, %ds
  movw %ax, %es
  movw %ax, %ss
  movw %ax, %fs
  movw %ax, %gs
  movq $boot_stack_top, %rsp
  xorl %ebp, %ebp
  movl %ebx, %edi
  call inmate_start
  /* inmate_start() does not return; stop if it ever does. */
2:
  cli
  hlt
  jmp 2b
  .size boot_entry32, . - boot_entry32

  .section .data.boot_gdt, "aw", @progbits
  .balign 16
  .globl boot_gdt
boot_gdt:
  .quad 0                    /* 0x00: null */
  .quad 0x00af9a000000ffff   /* 0x08: 64-bit code, DPL 0 (L = 1, D = 0) */
  .quad 0x00cf92000000ffff   /* 0x10: data, DPL 0, 4 GiB */
  .globl boot_gdt_tss
boot_gdt_tss:
  .quad 0, 0                 /* 0x18: the 16-byte TSS descriptor, filled by interrupts_init() */
boot_gdt_end:

  .balign 8
boot_gdt_pointer:
  .word boot_gdt_end - boot_gdt - 1
  .quad boot_gdt

  /* Zeroed by step 1, so they take no room in the image. */
  .section .bss.boot_page_tables, "aw", @nobits
  .balign 4096
  .globl boot_pml4
boot_pml4:
  .skip 4096
boot_pdpt:
  .skip 4096
boot_pd:
  .skip 4096

  /* The boot stack, with a guard page below it that start.cpp unmaps, so an
   * overflow faults (reported as a double fault on its own stack). */
  .section .bss.boot_stack, "aw", @nobits
  .balign 4096
  .globl boot_stack_guard
boot_stack_guard:
  .skip 4096
  .globl boot_stack_bottom
boot_stack_bottom:
  .skip 65536
  .globl boot_stack_top
boot_stack_top:

  .section .note.GNU-stack, "", @progbits
