# Cap'n Proto schemas compiled to C++ at build time.
#
#   cellink_capnp_generate(TARGET_NAME SCHEMAS <file.capnp>... [IMPORT_DIRS <dir>...])
#
# Runs `capnp compile -oc++` on every schema (paths relative to the calling
# CMakeLists.txt, which must contain them) whenever a schema changes, and
# builds the generated code as the STATIC library TARGET_NAME, which links
# CapnProto::capnp PUBLIC. The generated files land in
# ${CMAKE_CURRENT_BINARY_DIR}/TARGET_NAME_capnp/ under the schema's relative
# path, so `telemetry/telemetry.capnp` is included as
# "telemetry/telemetry.capnp.h". That directory is a SYSTEM include: the
# generated code is not ours to keep warning-free under -Werror.
#
# Imports: "/capnp/..." resolves to the installed Cap'n Proto headers,
# "/x.capnp" to the calling source directory, and IMPORT_DIRS adds more roots.
# A schema that imports another schema of the same call is rebuilt when
# either changes (every output depends on every schema of the call).
#
# Requires find_package(CapnProto) first. capnp_generate_cpp() from
# CapnProtoMacros.cmake is not used: it writes next to the sources unless
# CAPNPC_OUTPUT_DIR is set globally, and gives no target to link.
function(cellink_capnp_generate target_name)
  cmake_parse_arguments(arg "" "" "SCHEMAS;IMPORT_DIRS" ${ARGN})
  if(arg_UNPARSED_ARGUMENTS)
    message(FATAL_ERROR "cellink_capnp_generate(${target_name}): unexpected arguments "
                        "'${arg_UNPARSED_ARGUMENTS}' (expected SCHEMAS and IMPORT_DIRS)")
  endif()
  if(NOT arg_SCHEMAS)
    message(FATAL_ERROR "cellink_capnp_generate(${target_name}): no SCHEMAS given")
  endif()
  # CAPNP_EXECUTABLE and CAPNPC_CXX_EXECUTABLE, not the CapnProto::capnp_tool
  # targets: Debian's CapnProtoTargets.cmake places those under /usr/lib/bin.
  if(NOT CAPNP_EXECUTABLE OR NOT CAPNPC_CXX_EXECUTABLE)
    message(FATAL_ERROR "cellink_capnp_generate(${target_name}): call "
                        "find_package(CapnProto REQUIRED) before including CellinkCapnp")
  endif()

  set(output_dir ${CMAKE_CURRENT_BINARY_DIR}/${target_name}_capnp)
  set(import_flags -I${CAPNP_INCLUDE_DIRECTORY} -I${CMAKE_CURRENT_SOURCE_DIR})
  foreach(dir IN LISTS arg_IMPORT_DIRS)
    cmake_path(ABSOLUTE_PATH dir BASE_DIRECTORY ${CMAKE_CURRENT_SOURCE_DIR} NORMALIZE)
    list(APPEND import_flags -I${dir})
  endforeach()

  set(schema_paths "")
  foreach(schema IN LISTS arg_SCHEMAS)
    cmake_path(ABSOLUTE_PATH schema BASE_DIRECTORY ${CMAKE_CURRENT_SOURCE_DIR} NORMALIZE
               OUTPUT_VARIABLE schema_path)
    cmake_path(IS_PREFIX CMAKE_CURRENT_SOURCE_DIR ${schema_path} NORMALIZE inside_source_dir)
    if(NOT inside_source_dir)
      message(FATAL_ERROR "cellink_capnp_generate(${target_name}): schema '${schema}' is "
                          "outside ${CMAKE_CURRENT_SOURCE_DIR}; call it from a CMakeLists.txt "
                          "above the schema")
    endif()
    list(APPEND schema_paths ${schema_path})
  endforeach()

  set(generated_sources "")
  set(generated_headers "")
  foreach(schema_path IN LISTS schema_paths)
    cmake_path(RELATIVE_PATH schema_path BASE_DIRECTORY ${CMAKE_CURRENT_SOURCE_DIR}
               OUTPUT_VARIABLE relative)
    set(header ${output_dir}/${relative}.h)
    set(source ${output_dir}/${relative}.c++)
    add_custom_command(
      OUTPUT ${header} ${source}
      COMMAND ${CMAKE_COMMAND} -E make_directory ${output_dir}
      COMMAND ${CAPNP_EXECUTABLE} compile -o${CAPNPC_CXX_EXECUTABLE}:${output_dir}
              --src-prefix=${CMAKE_CURRENT_SOURCE_DIR} ${import_flags} ${schema_path}
      DEPENDS ${schema_paths} ${CAPNP_EXECUTABLE} ${CAPNPC_CXX_EXECUTABLE}
      WORKING_DIRECTORY ${CMAKE_CURRENT_SOURCE_DIR}
      COMMENT "Compiling Cap'n Proto schema ${relative}"
      VERBATIM)
    list(APPEND generated_sources ${source})
    list(APPEND generated_headers ${header})
  endforeach()
  set_source_files_properties(${generated_sources} PROPERTIES LANGUAGE CXX)

  add_library(${target_name} STATIC ${generated_sources} ${generated_headers})
  target_include_directories(${target_name} SYSTEM PUBLIC ${output_dir})
  target_link_libraries(${target_name} PUBLIC CapnProto::capnp)
endfunction()
