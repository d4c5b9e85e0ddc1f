# bench.console_smoke: runs `console_bench --bytes 1MiB` and checks that it
# exits 0 (no byte lost, duplicated, reordered or altered, no row failed) and
# that every row printed a figure or the reason it was skipped. No figure is
# judged: speed is never asserted in a test.
#   cmake -DCONSOLE_BENCH=path/to/console_bench -P console_smoke_test.cmake
execute_process(
  COMMAND ${CONSOLE_BENCH} --bytes 1MiB
  RESULT_VARIABLE status
  OUTPUT_VARIABLE output
  ERROR_VARIABLE errors)
message("${output}")
if(NOT status EQUAL 0)
  message(FATAL_ERROR "console_bench --bytes 1MiB exited with '${status}':\n${errors}")
endif()
foreach(row linux-virtio linux-16550 inmate-virtio inmate-16550)
  if(NOT output MATCHES "\n${row} +(1048576 +[0-9]+\\.[0-9]+ +[0-9]+\\.[0-9]+|skipped: )")
    message(FATAL_ERROR "console_bench printed no figure and no skip reason for ${row}")
  endif()
endforeach()
foreach(line "machine: " "ratio linux virtio/16550: " "ratio inmate virtio/16550: ")
  if(NOT output MATCHES "${line}")
    message(FATAL_ERROR "console_bench output lacks a line matching '${line}'")
  endif()
endforeach()
