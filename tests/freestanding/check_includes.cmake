# Allow-list scan for freestanding headers. Run as a script:
#
#   cmake [-DHEADER_LIST=<file with one absolute header path per line>]
#         [-DHEADERS=<absolute header paths, ;-separated>]
#         [-DSOURCE_DIR=<dir to print paths relative to>] [-DSTAMP=<file>]
#         -P check_includes.cmake
#
# -ffreestanding does not stop GCC 12 from including <string> or <vector>
# (libstdc++ is configured hosted), so the freestanding compile alone cannot
# catch a hosted header. This scan can: every `#include <...>` in a
# freestanding header must name one of the headers below, which libstdc++
# implements without the heap, exceptions, RTTI or libc. It fails naming the
# file, the line and the header, and touches STAMP only when every header
# passes.
cmake_minimum_required(VERSION 3.25)

set(allowed_headers
  atomic cstdint cstddef type_traits limits new span array bit concepts compare utility
  initializer_list)
list(JOIN allowed_headers " " allowed_text)

set(headers ${HEADERS})
if(DEFINED HEADER_LIST)
  file(STRINGS "${HEADER_LIST}" listed)
  list(APPEND headers ${listed})
endif()
if(NOT headers)
  message(FATAL_ERROR "check_includes.cmake: pass -DHEADER_LIST=<file> or -DHEADERS=<paths>")
endif()

set(violations 0)
foreach(header IN LISTS headers)
  if(header STREQUAL "")
    continue()
  endif()
  set(shown "${header}")
  if(DEFINED SOURCE_DIR)
    cmake_path(RELATIVE_PATH shown BASE_DIRECTORY "${SOURCE_DIR}")
  endif()

  # Split into lines by hand: file(STRINGS) drops empty lines (wrong line
  # numbers), and ';', '[', ']' and '\' would confuse CMake's list splitting.
  file(READ "${header}" text)
  string(REPLACE "\\" "/" text "${text}")
  string(REPLACE ";" "," text "${text}")
  string(REPLACE "[" "(" text "${text}")
  string(REPLACE "]" ")" text "${text}")
  string(REPLACE "\n" ";" lines "${text}")

  set(line_number 0)
  foreach(line IN LISTS lines)
    math(EXPR line_number "${line_number} + 1")
    if(line MATCHES "^[ \t]*#[ \t]*include[ \t]*<([^>]*)>")
      set(included "${CMAKE_MATCH_1}")
      if(NOT included IN_LIST allowed_headers)
        message(SEND_ERROR
          "${shown}:${line_number}: includes <${included}>, which freestanding code may not use "
          "(no heap, exceptions, RTTI or libc). Allowed system headers: ${allowed_text}. "
          "Move the code that needs <${included}> into a Linux-only layer (linux-uio/, "
          "hypervisor/).")
        math(EXPR violations "${violations} + 1")
      endif()
    endif()
  endforeach()
endforeach()

if(violations GREATER 0)
  message(FATAL_ERROR "freestanding include check: ${violations} disallowed include(s)")
endif()
if(DEFINED STAMP)
  file(TOUCH "${STAMP}")
endif()
