# Fails when an object file needs any symbol from a library (nm -u lists
# it), and prints the object's size. Inputs: NM, SIZE, OBJECTS.
foreach(object IN LISTS OBJECTS)
  execute_process(COMMAND ${NM} -u -C ${object} OUTPUT_VARIABLE undefined
                  RESULT_VARIABLE status)
  if(NOT status EQUAL 0)
    message(FATAL_ERROR "nm failed on ${object}")
  endif()
  if(NOT undefined STREQUAL "")
    message(FATAL_ERROR "${object} needs symbols from a library, which an inmate does not "
                        "have:\n${undefined}")
  endif()
  execute_process(COMMAND ${SIZE} ${object} OUTPUT_VARIABLE sizes)
  message(STATUS "no undefined symbols; size:\n${sizes}")
endforeach()
