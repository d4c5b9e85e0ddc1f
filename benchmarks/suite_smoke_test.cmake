# bench.suite_smoke: runs `cellink_bench --smoke --json` and checks with
# string(JSON) that every transport and baseline has its rows, each with
# figures or "not installed", and that every ratio field is present. No
# figure is judged.
#   cmake -DCELLINK_BENCH=path/to/cellink_bench -P suite_smoke_test.cmake
execute_process(
  COMMAND ${CELLINK_BENCH} --smoke --json
  RESULT_VARIABLE status
  OUTPUT_VARIABLE json
  ERROR_VARIABLE table)
message("${table}")
if(NOT status EQUAL 0)
  message(FATAL_ERROR "cellink_bench --smoke --json exited with '${status}'")
endif()
string(JSON schema ERROR_VARIABLE error GET "${json}" schema)
if(error OR NOT schema STREQUAL "cellink-bench/1")
  message(FATAL_ERROR "stdout is not a cellink-bench/1 document (${error}):\n${json}")
endif()

# Every transport is listed, measured or not installed.
set(transports cache-line memcpy cellink-ring cellink-channel cellink-channel-single
    cellink-capnp cellink-daemon
    pipe unix-socket eventfd boost-spsc-shm rte-ring iceoryx)
string(JSON count LENGTH "${json}" transports)
math(EXPR last "${count} - 1")
foreach(index RANGE ${last})
  string(JSON entry GET "${json}" transports ${index})
  string(JSON id GET "${entry}" id)
  string(JSON state GET "${entry}" status)
  set(transport_${id} "${state}")
endforeach()
foreach(id ${transports})
  if(NOT DEFINED transport_${id})
    message(FATAL_ERROR "transport '${id}' is missing from the JSON")
  endif()
  if(NOT transport_${id} MATCHES "^(measured|not installed)$")
    message(FATAL_ERROR "transport '${id}' has status '${transport_${id}}'")
  endif()
endforeach()

# Index the results by transport|mode|workload|payload.
string(JSON count LENGTH "${json}" results)
math(EXPR last "${count} - 1")
foreach(index RANGE ${last})
  string(JSON row GET "${json}" results ${index})
  string(JSON transport GET "${row}" transport)
  string(JSON mode GET "${row}" mode)
  string(JSON workload GET "${row}" workload)
  string(JSON payload GET "${row}" payload_bytes)
  string(JSON state GET "${row}" status)
  set(figure "")
  if(state STREQUAL "ok" AND workload STREQUAL "rtt")
    string(JSON figure GET "${row}" rtt_ns p50)
  elseif(state STREQUAL "ok")
    string(JSON figure GET "${row}" messages_per_second)
  endif()
  set(key "${transport}|${mode}|${workload}|${payload}")
  if(state STREQUAL "ok" AND figure MATCHES "^[0-9.e+-]+$" AND figure GREATER 0)
    set(row_${key} "figures")
  elseif(state STREQUAL "not installed")
    set(row_${key} "not installed")
  else()
    string(JSON note GET "${row}" note)
    set(row_${key} "${state}: ${note}")
  endif()
endforeach()

set(rows
    "cache-line|poll|rtt|8" "cache-line|poll|rtt|64" "memcpy|none|throughput|64"
    "eventfd|block|rtt|8")
foreach(size 64 1048576)
  foreach(workload rtt throughput)
    list(APPEND rows "cellink-ring|poll|${workload}|${size}")
    foreach(mode poll block adaptive)
      list(APPEND rows "cellink-channel|${mode}|${workload}|${size}"
                       "cellink-channel-single|${mode}|${workload}|${size}"
                       "cellink-daemon|${mode}|${workload}|${size}")
    endforeach()
    list(APPEND rows "pipe|block|${workload}|${size}" "unix-socket|block|${workload}|${size}"
                     "boost-spsc-shm|poll|${workload}|${size}" "rte-ring|poll|${workload}|${size}"
                     "iceoryx|poll|${workload}|${size}")
  endforeach()
  foreach(mode poll block adaptive)
    list(APPEND rows "cellink-capnp|${mode}|rtt|${size}")
  endforeach()
endforeach()
foreach(key ${rows})
  if(NOT DEFINED row_${key})
    message(FATAL_ERROR "no result row ${key}")
  endif()
  if(NOT row_${key} MATCHES "^(figures|not installed)$")
    message(FATAL_ERROR "result row ${key} has neither figures nor 'not installed': ${row_${key}}")
  endif()
endforeach()

# The ratios, each a number or "not installed".
foreach(ratio
    cellink_64B_poll_rtt_over_cacheline cellink_ring_64B_poll_rtt_over_cacheline
    cellink_single_64B_poll_rtt_over_cacheline cellink_64B_poll_rtt_over_ring
    cellink_single_64B_poll_rtt_over_ring
    cellink_64B_block_rtt_over_pipe cellink_64B_poll_rtt_over_pipe
    cellink_64B_block_rtt_over_unix_socket cellink_64B_poll_rtt_over_unix_socket
    cellink_64B_block_rtt_over_eventfd cellink_64B_poll_rtt_over_eventfd
    cellink_64B_poll_rtt_over_iceoryx cellink_daemon_64B_poll_rtt_over_iceoryx
    cellink_64B_poll_rtt_over_boost_spsc_shm cellink_ring_64B_poll_rtt_over_rte_ring)
  string(JSON value ERROR_VARIABLE error GET "${json}" ratio ${ratio})
  if(error)
    message(FATAL_ERROR "the JSON has no ratio ${ratio}")
  endif()
  if(NOT value MATCHES "^([0-9.e+-]+|not installed)$")
    message(FATAL_ERROR "ratio ${ratio} is '${value}'")
  endif()
  message(STATUS "ratio ${ratio} = ${value}")
endforeach()
