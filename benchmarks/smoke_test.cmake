# bench.ring_smoke: runs `ring_bench --quick --smoke` and checks that it exits
# 0 and prints every ratio line and target check. No figure is judged.
#   cmake -DRING_BENCH=path/to/ring_bench -P smoke_test.cmake
execute_process(
  COMMAND ${RING_BENCH} --quick --smoke
  RESULT_VARIABLE status
  OUTPUT_VARIABLE output
  ERROR_VARIABLE errors)
message("${output}")
if(NOT status EQUAL 0)
  message(FATAL_ERROR "ring_bench --quick --smoke exited with '${status}':\n${errors}")
endif()
foreach(line
    "ratio ring_rtt/cacheline_rtt 8 B +: p50 [0-9.]+x +p99 [0-9.]+x"
    "ratio ring_rtt/cacheline_rtt 64 B +: p50 [0-9.]+x +p99 [0-9.]+x"
    "ratio ring_rtt/cacheline_rtt 1024 B +: p50 [0-9.]+x +p99 [0-9.]+x"
    "\\[(PASS|MISS)\\] 64 B polling RTT"
    "\\[(PASS|MISS)\\] 64 B throughput"
    "\\[(PASS|MISS)\\] zero-copy 64 KiB \\(touch\\)")
  if(NOT output MATCHES "${line}")
    message(FATAL_ERROR "ring_bench output lacks a line matching '${line}'")
  endif()
endforeach()
