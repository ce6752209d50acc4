# The `package` CTest test of multiproc.pc, run with `cmake -P`: installs the current build into a
# fresh temporary prefix, then builds the README's first example and this folder's main.cpp (a
# Pool and the log: both plugins) with nothing but `g++ $(pkg-config --cflags --libs multiproc)`,
# runs them, and removes everything it made.
#
# Inputs (-D): MULTIPROC_BINARY_DIR, INSTALL_LIBDIR, and those of consumers.cmake.
cmake_minimum_required(VERSION 3.25)
include(${CMAKE_CURRENT_LIST_DIR}/steps.cmake)
include(${CMAKE_CURRENT_LIST_DIR}/consumers.cmake)
set(prefix ${work_dir}/prefix)

step("install into ${prefix}" ${CMAKE_COMMAND} --install ${MULTIPROC_BINARY_DIR} --prefix ${prefix})
build_and_run_with_pkg_config(${prefix} ${INSTALL_LIBDIR})

file(REMOVE_RECURSE ${work_dir})
