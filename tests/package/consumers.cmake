# Shared by the package tests' `cmake -P` scripts (after steps.cmake): build and run a program
# outside multiproc the two ways a user does — the CMake project in this folder, and the README's
# first example and this folder's main.cpp compiled with nothing but
# `g++ $(pkg-config --cflags --libs multiproc)`.
#
# Inputs (-D): MULTIPROC_SOURCE_DIR, GENERATOR, BUILD_TYPE, CXX_COMPILER, COMPILER_LAUNCHER (a
# command line; may be empty).

set(consumer_dir ${CMAKE_CURRENT_LIST_DIR})

# The launcher comes as a command line (env VAR=value ccache); an initial cache file hands the
# resulting list to the consumer's configure without any quoting.
separate_arguments(launcher UNIX_COMMAND "${COMPILER_LAUNCHER}")
file(WRITE ${work_dir}/initial-cache.cmake "set(CMAKE_CXX_COMPILER_LAUNCHER \"${launcher}\" CACHE STRING \"\")\n")
set(common_configure_args -C ${work_dir}/initial-cache.cmake -G ${GENERATOR}
  -DCMAKE_BUILD_TYPE=${BUILD_TYPE} -DCMAKE_CXX_COMPILER=${CXX_COMPILER})

# Builds the CMake consumer in build_dir with the extra configure arguments and runs it.
function(build_and_run_consumer how build_dir)
  step("configure the consumer (${how})"
    ${CMAKE_COMMAND} -S ${consumer_dir} -B ${build_dir} ${common_configure_args} ${ARGN})
  step("build the consumer (${how})" ${CMAKE_COMMAND} --build ${build_dir} --parallel 2)
  step("run the consumer (${how})" ${build_dir}/app)
endfunction()

# Builds and runs the CMake consumer with find_package(multiproc) against the package installed in
# prefix, with CAF, OpenSSL, spdlog and fmt out of reach: a user needs none of them.
function(build_and_run_with_find_package prefix build_dir)
  build_and_run_consumer(find_package ${build_dir}
    -DCMAKE_PREFIX_PATH=${prefix}
    -DCMAKE_DISABLE_FIND_PACKAGE_CAF=ON
    -DCMAKE_DISABLE_FIND_PACKAGE_OpenSSL=ON
    -DCMAKE_DISABLE_FIND_PACKAGE_spdlog=ON
    -DCMAKE_DISABLE_FIND_PACKAGE_fmt=ON)
endfunction()

# The example the README shows first: the first file its tour names ("From `examples/x.cpp`").
function(readme_first_example out)
  file(STRINGS ${MULTIPROC_SOURCE_DIR}/README.md lines REGEX "^From `examples/[a-z_]+\\.cpp`")
  if(NOT lines)
    fail("README.md names no example (a line starting with From `examples/<name>.cpp`)")
  endif()
  list(GET lines 0 first)
  string(REGEX MATCH "examples/[a-z_]+\\.cpp" example "${first}")
  set(${out} ${MULTIPROC_SOURCE_DIR}/${example} PARENT_SCOPE)
endfunction()

# Builds programs with `<compiler> <source> -o <program> $(pkg-config --cflags --libs multiproc)`
# in a shell, finding multiproc.pc in <prefix>/<libdir>/pkgconfig, and runs them with the
# libraries of that prefix. The example's own header (check.hpp) is found next to it, as
# #include "..." does.
function(build_and_run_with_pkg_config prefix libdir)
  set(pc_env PKG_CONFIG_PATH=${prefix}/${libdir}/pkgconfig)
  step("pkg-config validates multiproc.pc" ${CMAKE_COMMAND} -E env ${pc_env} pkg-config --validate multiproc)
  step("pkg-config --cflags --libs multiproc" OUTPUT_VARIABLE flags
    ${CMAKE_COMMAND} -E env ${pc_env} pkg-config --cflags --libs multiproc)
  string(STRIP "${flags}" flags)
  message(STATUS "  ${flags}")
  # Private dependencies stay private: the user links libmultiproc only, no CAF, OpenSSL, spdlog
  # or fmt (the plugins and libcrypto are loaded by libmultiproc).
  string(REGEX MATCHALL "(^| )-l[^ \n]+" libraries "${flags}")
  list(TRANSFORM libraries STRIP)
  if(NOT libraries STREQUAL "-lmultiproc")
    fail("pkg-config's flags link more than libmultiproc: ${libraries}")
  endif()
  readme_first_example(example)
  foreach(source IN ITEMS ${example} ${consumer_dir}/main.cpp)
    get_filename_component(name ${source} NAME_WE)
    set(program ${work_dir}/pkg-config-${name})
    step("build ${name}.cpp with ${CXX_COMPILER} $(pkg-config --cflags --libs multiproc)"
      ${CMAKE_COMMAND} -E env ${pc_env}
      sh -c "\"${CXX_COMPILER}\" \"${source}\" -o \"${program}\" $(pkg-config --cflags --libs multiproc)")
    step("run ${name}" ${CMAKE_COMMAND} -E env LD_LIBRARY_PATH=${prefix}/${libdir} ${program})
  endforeach()
endfunction()
