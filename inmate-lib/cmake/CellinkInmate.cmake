# cellink_add_inmate(): builds a bare-metal inmate ELF for QEMU's `-kernel`
# (PVH boot) or a Jailhouse cell, from the program's sources and the inmate
# runtime (inmate-lib/src).
#
#   cellink_add_inmate(<name>
#     SOURCES <file>...                  the program's .cpp / .S files
#     [INCLUDE_DIRECTORIES <dir>...]     extra -I directories; inmate-lib,
#                                        ivshmem and transports are always on
#     [FOOTPRINT_GROUPS <label=pattern>...])
#
# Produces ${CMAKE_BINARY_DIR}/inmates/<name>.elf and <name>.map, a target
# <name> in ALL, and a target <name>-footprint (not in ALL) that prints the
# image's size per group of input sections (footprint.cmake). The default
# groups are the channel core (ring, link, channel: transports/), the ivshmem
# driver, the endpoint, the rest of inmate-lib and the program itself; the
# first pattern that matches wins.
#
# Why custom commands instead of add_executable(): an inmate must be built
# with exactly the flags below, whatever the preset adds to CMAKE_CXX_FLAGS
# and CMAKE_EXE_LINKER_FLAGS (sanitizers, -O0 -g): a sanitizer runtime or a
# libc call cannot link into a bare-metal image. Each object is one compiler
# call with a depfile, so editing a header rebuilds what includes it.
#
# The runtime is compiled once per build tree into the archive
# ${CMAKE_BINARY_DIR}/inmates/inmate-lib/libinmate.a (target
# cellink_inmate_runtime), from every .cpp and .S file in inmate-lib/src; the
# linker takes only the members an inmate uses.

# The settings every function below uses. A macro run at the start of each
# function, because cellink_add_inmate() is called from other directories,
# where variables set here would not be visible.
macro(_cellink_inmate_settings)
  set(CELLINK_INMATE_CXX_FLAGS
    -std=c++20 -ffreestanding -fno-exceptions -fno-rtti -nostdlib -fno-pic -fno-pie
    -mno-red-zone -mgeneral-regs-only -fno-stack-protector -fno-asynchronous-unwind-tables
    -ffunction-sections -fdata-sections -Os -fno-sanitize=all -Wall -Wextra -Werror)
  # Assembly goes through the C preprocessor only; the C++ language flags do
  # not apply to it.
  set(CELLINK_INMATE_ASM_FLAGS -fno-pic -fno-pie -Wall -Wextra -Werror)
  set(CELLINK_INMATE_LINK_FLAGS
    -nostdlib -static -no-pie -Wl,--gc-sections -Wl,--build-id=none)
  set(CELLINK_INMATE_LIB_DIR ${_cellink_inmate_cmake_dir}/..)
  cmake_path(NORMAL_PATH CELLINK_INMATE_LIB_DIR)
  set(CELLINK_INMATE_LINKER_SCRIPT ${CELLINK_INMATE_LIB_DIR}/src/inmate.ld)
  set(CELLINK_INMATE_FOOTPRINT_SCRIPT ${_cellink_inmate_cmake_dir}/footprint.cmake)
  set(CELLINK_INMATE_RUNTIME_ARCHIVE ${CMAKE_BINARY_DIR}/inmates/inmate-lib/libinmate.a)
  set(CELLINK_INMATE_BASE_INCLUDES
    ${PROJECT_SOURCE_DIR}/inmate-lib/include
    ${PROJECT_SOURCE_DIR}/ivshmem/include
    ${PROJECT_SOURCE_DIR}/transports/include)
endmacro()
set(_cellink_inmate_cmake_dir ${CMAKE_CURRENT_LIST_DIR} CACHE INTERNAL
    "Where CellinkInmate.cmake lives")

# Adds the command that compiles `source` into `object_root`/<path relative
# to the project>.o and appends the object to the list named by `out_list`.
function(_cellink_inmate_compile source object_root include_dirs out_list)
  _cellink_inmate_settings()
  cmake_path(ABSOLUTE_PATH source BASE_DIRECTORY ${CMAKE_CURRENT_SOURCE_DIR} NORMALIZE)
  cmake_path(RELATIVE_PATH source BASE_DIRECTORY ${PROJECT_SOURCE_DIR} OUTPUT_VARIABLE relative)
  string(REPLACE "../" "__/" relative "${relative}")
  set(object ${object_root}/${relative}.o)
  cmake_path(GET object PARENT_PATH object_dir)
  file(MAKE_DIRECTORY ${object_dir})
  if(source MATCHES "\\.S$")
    set(flags ${CELLINK_INMATE_ASM_FLAGS})
  else()
    set(flags ${CELLINK_INMATE_CXX_FLAGS})
  endif()
  list(TRANSFORM include_dirs PREPEND "-I")
  add_custom_command(
    OUTPUT ${object}
    COMMAND ${CMAKE_CXX_COMPILER} ${flags} ${include_dirs} -MD -MF ${object}.d -MT ${object}
            -c ${source} -o ${object}
    DEPENDS ${source}
    DEPFILE ${object}.d
    COMMENT "Building inmate object ${relative}"
    VERBATIM COMMAND_EXPAND_LISTS)
  set(objects ${${out_list}})
  list(APPEND objects ${object})
  set(${out_list} ${objects} PARENT_SCOPE)
endfunction()

# The runtime archive; called once, from inmate-lib/CMakeLists.txt.
function(_cellink_inmate_runtime)
  _cellink_inmate_settings()
  file(GLOB runtime_sources CONFIGURE_DEPENDS
    ${CELLINK_INMATE_LIB_DIR}/src/*.cpp ${CELLINK_INMATE_LIB_DIR}/src/*.S)
  list(SORT runtime_sources)
  set(objects "")
  foreach(source IN LISTS runtime_sources)
    _cellink_inmate_compile(${source} ${CMAKE_BINARY_DIR}/inmates/inmate-lib
                            "${CELLINK_INMATE_BASE_INCLUDES}" objects)
  endforeach()
  add_custom_command(
    OUTPUT ${CELLINK_INMATE_RUNTIME_ARCHIVE}
    COMMAND ${CMAKE_COMMAND} -E rm -f ${CELLINK_INMATE_RUNTIME_ARCHIVE}
    COMMAND ${CMAKE_AR} rcsD ${CELLINK_INMATE_RUNTIME_ARCHIVE} ${objects}
    DEPENDS ${objects}
    COMMENT "Archiving the inmate runtime"
    VERBATIM)
  add_custom_target(cellink_inmate_runtime DEPENDS ${CELLINK_INMATE_RUNTIME_ARCHIVE})
endfunction()

function(cellink_add_inmate name)
  _cellink_inmate_settings()
  cmake_parse_arguments(PARSE_ARGV 1 arg "" "" "SOURCES;INCLUDE_DIRECTORIES;FOOTPRINT_GROUPS")
  if(NOT arg_SOURCES)
    message(FATAL_ERROR "cellink_add_inmate(${name}): no SOURCES")
  endif()
  if(arg_UNPARSED_ARGUMENTS)
    message(FATAL_ERROR "cellink_add_inmate(${name}): unknown arguments ${arg_UNPARSED_ARGUMENTS}")
  endif()
  set(include_dirs ${CELLINK_INMATE_BASE_INCLUDES})
  foreach(dir IN LISTS arg_INCLUDE_DIRECTORIES)
    cmake_path(ABSOLUTE_PATH dir BASE_DIRECTORY ${CMAKE_CURRENT_SOURCE_DIR} NORMALIZE)
    list(APPEND include_dirs ${dir})
  endforeach()

  set(output_dir ${CMAKE_BINARY_DIR}/inmates)
  set(objects "")
  foreach(source IN LISTS arg_SOURCES)
    _cellink_inmate_compile(${source} ${output_dir}/${name}.objects "${include_dirs}" objects)
  endforeach()

  set(elf ${output_dir}/${name}.elf)
  set(map ${output_dir}/${name}.map)
  add_custom_command(
    OUTPUT ${elf} ${map}
    COMMAND ${CMAKE_CXX_COMPILER} ${CELLINK_INMATE_LINK_FLAGS} -Wl,-T,${CELLINK_INMATE_LINKER_SCRIPT}
            -Wl,-Map,${map} -o ${elf} ${objects} ${CELLINK_INMATE_RUNTIME_ARCHIVE}
    DEPENDS ${objects} ${CELLINK_INMATE_RUNTIME_ARCHIVE} ${CELLINK_INMATE_LINKER_SCRIPT}
    COMMENT "Linking inmate ${name}.elf"
    VERBATIM)
  add_custom_target(${name} ALL DEPENDS ${elf})
  add_dependencies(${name} cellink_inmate_runtime)

  cmake_path(RELATIVE_PATH CMAKE_CURRENT_SOURCE_DIR BASE_DIRECTORY ${PROJECT_SOURCE_DIR}
             OUTPUT_VARIABLE program_dir)
  set(groups ${arg_FOOTPRINT_GROUPS})
  if(NOT groups)
    # The ring, link and channel core (namespace cellink::transports, by the
    # mangled names of their functions' sections) first, wherever they were
    # instantiated; then the parts of inmate-lib, then the program.
    set(groups "channel-core=7cellink10transports" "ivshmem=ivshmem_" "endpoint=endpoint"
               "inmate-lib=inmate-lib" "program=${program_dir}")
  endif()
  # '|' separates the groups on the command line; a ';' would split the
  # argument.
  list(JOIN groups "|" groups_argument)
  add_custom_target(${name}-footprint
    COMMAND ${CMAKE_COMMAND} -DMAP=${map} -DGROUPS=${groups_argument}
            -P ${CELLINK_INMATE_FOOTPRINT_SCRIPT}
    DEPENDS ${elf}
    COMMENT "Footprint of ${name}.elf"
    VERBATIM)
  add_dependencies(${name}-footprint ${name})
endfunction()
