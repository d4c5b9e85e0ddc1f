# bench.channel_smoke: runs `channel_bench --smoke` and checks that it exits 0
# and prints every target check with its verdict. No figure is judged.
#   cmake -DCHANNEL_BENCH=path/to/channel_bench -P channel_smoke_test.cmake
execute_process(
  COMMAND ${CHANNEL_BENCH} --smoke
  RESULT_VARIABLE status
  OUTPUT_VARIABLE output
  ERROR_VARIABLE errors)
message("${output}")
if(NOT status EQUAL 0)
  message(FATAL_ERROR "channel_bench --smoke exited with '${status}':\n${errors}")
endif()
set(ratios "p50 [0-9.]+ ns / [0-9.]+ ns = [0-9.]+x, untimed [0-9.]+ ns / [0-9.]+ ns = [0-9.]+x")
set(verdict "${ratios} \\(target ≤ 1\\.2 for both: (PASS|MISS)\\)")
set(informational "${ratios} \\(no target\\)")
foreach(line
    "machine: "
    "channel/ring RTT 8 B, polling +: ${verdict}"
    "channel/ring RTT 64 B, polling +: ${verdict}"
    "channel/ring RTT 1 KiB, polling +: ${verdict}"
    "blocking channel/eventfd RTT 64 B +: ${verdict}"
    "capnp/raw RTT 64 B +: ${informational}"
    "capnp/raw RTT 1 KiB +: ${informational}")
  if(NOT output MATCHES "${line}")
    message(FATAL_ERROR "channel_bench output lacks a line matching '${line}'")
  endif()
endforeach()
