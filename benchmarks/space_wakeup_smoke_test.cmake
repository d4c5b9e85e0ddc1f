# bench.space_wakeup_smoke: runs `space_wakeup_bench --quick` (a second or so)
# and checks that it exits 0 and prints a row for each mode and the ratio.
# No figure is judged; a lost, duplicated or reordered message, or a blocking
# send that does not complete, makes the benchmark abort.
#   cmake -DSPACE_WAKEUP_BENCH=path/to/space_wakeup_bench -P space_wakeup_smoke_test.cmake
execute_process(
  COMMAND ${SPACE_WAKEUP_BENCH} --quick
  RESULT_VARIABLE status
  OUTPUT_VARIABLE output
  ERROR_VARIABLE errors)
message("${output}")
if(NOT status EQUAL 0)
  message(FATAL_ERROR "space_wakeup_bench --quick exited with '${status}':\n${errors}")
endif()
foreach(line
    "machine: "
    "\\(a\\) space-freed doorbell +1 +[0-9]+ +[0-9.]+ +[0-9]+ +[0-9]+"
    "\\(b\\) nap loop \\(previous\\) +1 +[0-9]+ +[0-9.]+ +[0-9]+ +[0-9]+"
    "\\(a\\) space-freed doorbell: +[0-9]+ msgs/s +[0-9.]+ MB/s"
    "\\(b\\) nap loop \\(previous behaviour\\): +[0-9]+ msgs/s +[0-9.]+ MB/s"
    "ratio \\(a\\)/\\(b\\): [0-9.]+x")
  if(NOT output MATCHES "${line}")
    message(FATAL_ERROR "space_wakeup_bench output lacks a line matching '${line}'")
  endif()
endforeach()
