# Boots an inmate ELF in QEMU (TCG, q35) and checks how it ended. Run as:
#
#   cmake -DELF=<inmate.elf> [-DAPPEND=<command line>] [-DEXTRA_ARGS=<a|b|...>]
#         -DEXPECT_STATUS=<n> -DEXPECT_OUTPUT=<regex> [-DTIMEOUT=<s>]
#         -P run_inmate_qemu.cmake
#
# The inmate ends QEMU through isa-debug-exit (iobase 0xf4), so QEMU's status
# is (code << 1) | 1: 1 for exit(0), 253 for fatal(). The script prints the
# console output, then "run_inmate_qemu: OK" only when the status is
# EXPECT_STATUS and the output matches EXPECT_OUTPUT, else
# "run_inmate_qemu: FAILED: <why>" and a non-zero exit. Without
# qemu-system-x86_64 it prints "SKIPPED: qemu-system-x86_64 not installed"
# (the tests map that to a skip, never to a pass). EXTRA_ARGS separates
# QEMU arguments with '|', as a ';' would split the -D value.
cmake_minimum_required(VERSION 3.25)

foreach(required ELF EXPECT_STATUS EXPECT_OUTPUT)
  if(NOT DEFINED ${required})
    message(FATAL_ERROR "run_inmate_qemu: FAILED: -D${required}=... is required")
  endif()
endforeach()
if(NOT DEFINED TIMEOUT)
  set(TIMEOUT 110)
endif()

find_program(QEMU qemu-system-x86_64)
if(NOT QEMU)
  message("SKIPPED: qemu-system-x86_64 not installed")
  return()
endif()
if(NOT EXISTS "${ELF}")
  message(FATAL_ERROR "run_inmate_qemu: FAILED: ${ELF} does not exist; build its target first")
endif()

set(extra "")
if(DEFINED EXTRA_ARGS AND NOT EXTRA_ARGS STREQUAL "")
  string(REPLACE "|" ";" extra "${EXTRA_ARGS}")
endif()
# -nographic puts the serial port (COM1, the inmate's console) on stdout.
execute_process(
  COMMAND ${QEMU} -accel tcg -machine q35 -m 64M -nographic -no-reboot
          -device isa-debug-exit,iobase=0xf4,iosize=0x04
          -kernel ${ELF} -append "${APPEND}" ${extra}
  INPUT_FILE /dev/null
  OUTPUT_VARIABLE output
  ERROR_VARIABLE errors
  RESULT_VARIABLE status
  TIMEOUT ${TIMEOUT})
string(REPLACE "\r" "" output "${output}")
message("${output}")
if(NOT errors STREQUAL "")
  message("qemu stderr:\n${errors}")
endif()

if(NOT status STREQUAL "${EXPECT_STATUS}")
  message(FATAL_ERROR "run_inmate_qemu: FAILED: QEMU ended with '${status}', expected "
                      "${EXPECT_STATUS} (1 = exit(0), 253 = fatal(), text = timeout or crash)")
endif()
if(NOT output MATCHES "${EXPECT_OUTPUT}")
  message(FATAL_ERROR "run_inmate_qemu: FAILED: output does not match '${EXPECT_OUTPUT}'")
endif()
message("run_inmate_qemu: OK (status ${status})")
