/*
 * interrupt_stubs_x86_64: one entry stub per vector, and the common path that
 * saves the interrupted state and calls interrupt_dispatch() (interrupts.cpp).
 *
 * Stub layout: stub N starts at interrupt_stubs + 16 * N (interrupts.cpp
 * computes IDT entries from this). Each stub pushes a zero in place of the
 * error code for vectors where the CPU pushes none (all but 8, 10-14, 17,
 * 21, 29, 30), then the vector number, so every frame has the same shape:
 *
 *   higher addresses   ss, rsp, rflags, cs, rip      pushed by the CPU
 *                      error code (or 0), vector     pushed by the stub
 *   rsp at the call -> rax ... r15 (15 registers)    pushed by interrupt_common
 *
 * which is struct InterruptFrame in interrupts.cpp. In 64-bit mode the CPU
 * aligns rsp to 16 before its pushes, and 7 + 15 eight-byte slots are 176
 * bytes, a multiple of 16, so the call meets the ABI's stack alignment.
 *
 * Only general registers are saved: everything is compiled with
 * -mgeneral-regs-only, so no handler touches SSE/x87 state. The direction
 * flag is cleared for the C++ code (the ABI requires it); iretq restores the
 * interrupted rflags.
 */

  .section .text.interrupt_stubs, "ax", @progbits
  .code64
  .balign 16
  .globl interrupt_stubs
interrupt_stubs:
  .set vector, 0
  .rept 256
  .balign 16
  .if (vector == 8) || ((vector >= 10) && (vector <= 14)) || (vector == 17) || (vector == 21) || (vector == 29) || (vector == 30)
  /* the CPU pushed an error code */
  .else
  pushq $0
  .endif
  pushq $vector
  jmp interrupt_common
  .set vector, vector + 1
  .endr

  .balign 16
interrupt_common:
  pushq %rax
  pushq %rbx
  pushq %rcx
  pushq %rdx
  pushq %rsi
  pushq %rdi
  pushq %rbp
  pushq %r8
  pushq %r9
  pushq %r10
  pushq %r11
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, %rdi
  cld
  call interrupt_dispatch
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %r11
  popq %r10
  popq %r9
  popq %r8
  popq %rbp
  popq %rdi
  popq %rsi
  popq %rdx
  popq %rcx
  popq %rbx
  popq %rax
  addq $16, %rsp   /* vector and error code */
  iretq

  .section .note.GNU-stack, "", @progbits
