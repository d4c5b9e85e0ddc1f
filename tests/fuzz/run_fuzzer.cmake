# Runs one fuzzer for a fixed time, as a ctest test (see CMakeLists.txt).
#   cmake -DFUZZER=<exe> -DSEEDS=<committed corpus dir> -DWORK_DIR=<scratch dir>
#         -DSECONDS=<n> [-DMAX_LEN=<bytes>] -P run_fuzzer.cmake
# The committed seeds are copied into WORK_DIR/corpus, which libFuzzer grows;
# SEEDS is passed too but only read, so a run never modifies the source tree.
# A crash, leak, timeout or OOM fails the test; its input stays in
# WORK_DIR/artifacts/ (earlier ones are kept) and its path is printed.

foreach(variable FUZZER SEEDS WORK_DIR SECONDS)
  if(NOT DEFINED ${variable})
    message(FATAL_ERROR "run_fuzzer.cmake: -D${variable}=... is required")
  endif()
endforeach()
if(NOT EXISTS ${FUZZER})
  message(FATAL_ERROR "fuzzer ${FUZZER} is not built: cmake --build <build dir> --target fuzzers")
endif()

set(corpus ${WORK_DIR}/corpus)
set(artifacts ${WORK_DIR}/artifacts)
file(REMOVE_RECURSE ${corpus})
file(MAKE_DIRECTORY ${corpus} ${artifacts})
file(GLOB seeds ${SEEDS}/*)
if(seeds)
  file(COPY ${seeds} DESTINATION ${corpus})
endif()
file(GLOB artifacts_before ${artifacts}/*)

set(options -max_total_time=${SECONDS} -timeout=5 -rss_limit_mb=2048 -print_final_stats=1
            -artifact_prefix=${artifacts}/)
if(DEFINED MAX_LEN)
  list(APPEND options -max_len=${MAX_LEN})
endif()
message(STATUS "${FUZZER} ${options} ${corpus} ${SEEDS}")
execute_process(COMMAND ${FUZZER} ${options} ${corpus} ${SEEDS} RESULT_VARIABLE result)

if(NOT result EQUAL 0)
  file(GLOB artifacts_after ${artifacts}/*)
  if(artifacts_before)
    list(REMOVE_ITEM artifacts_after ${artifacts_before})
  endif()
  foreach(artifact IN LISTS artifacts_after)
    message("Input that failed: ${artifact}")
    message("Reproduce with:    ${FUZZER} ${artifact}")
  endforeach()
  message(FATAL_ERROR "${FUZZER} failed (exit status ${result})")
endif()
