# The `package` CTest test, run with `cmake -P`: installs the current build of multiproc into a
# fresh temporary prefix, then configures, builds and runs the outside project in this folder
# twice — against the installed package (find_package) and against the source tree
# (add_subdirectory) — and removes everything it made.
#
# Inputs (-D): MULTIPROC_BINARY_DIR, MULTIPROC_SOURCE_DIR, INSTALL_LIBDIR, INSTALL_INCLUDEDIR,
# GENERATOR, BUILD_TYPE, CXX_COMPILER, COMPILER_LAUNCHER (a command line; may be empty), SANITIZERS (ON/OFF).
cmake_minimum_required(VERSION 3.25)

set(consumer_dir ${CMAKE_CURRENT_LIST_DIR})
execute_process(COMMAND mktemp -d --tmpdir multiproc-package-XXXXXX
  OUTPUT_VARIABLE work_dir OUTPUT_STRIP_TRAILING_WHITESPACE COMMAND_ERROR_IS_FATAL ANY)
set(prefix ${work_dir}/prefix)

function(fail message)
  file(REMOVE_RECURSE ${work_dir})
  message(FATAL_ERROR "${message}")
endfunction()

# Runs one step, bounded in time; on failure prints its output, cleans up and fails the test.
function(step description)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE result OUTPUT_VARIABLE output ERROR_VARIABLE output
    TIMEOUT 600)
  if(NOT result EQUAL 0)
    fail("${description} failed (${result}):\n${output}")
  endif()
  message(STATUS "${description}: ok")
endfunction()

function(expect_installed relative_path)
  if(NOT EXISTS ${prefix}/${relative_path})
    fail("the install lacks ${relative_path}")
  endif()
endfunction()

# The launcher comes as a command line (env VAR=value ccache); an initial cache file hands the
# resulting list to the consumer's configure without any quoting.
separate_arguments(launcher UNIX_COMMAND "${COMPILER_LAUNCHER}")
file(WRITE ${work_dir}/initial-cache.cmake "set(CMAKE_CXX_COMPILER_LAUNCHER \"${launcher}\" CACHE STRING \"\")\n")
set(common_configure_args -C ${work_dir}/initial-cache.cmake -G ${GENERATOR}
  -DCMAKE_BUILD_TYPE=${BUILD_TYPE} -DCMAKE_CXX_COMPILER=${CXX_COMPILER})

# Builds the consumer in build_dir with the extra configure arguments and runs it.
function(build_and_run_consumer how build_dir)
  step("configure the consumer (${how})"
    ${CMAKE_COMMAND} -S ${consumer_dir} -B ${build_dir} ${common_configure_args} ${ARGN})
  step("build the consumer (${how})" ${CMAKE_COMMAND} --build ${build_dir} --parallel 2)
  step("run the consumer (${how})" ${build_dir}/app)
endfunction()

step("install into ${prefix}" ${CMAKE_COMMAND} --install ${MULTIPROC_BINARY_DIR} --prefix ${prefix})

set(config_dir ${INSTALL_LIBDIR}/cmake/multiproc)
foreach(file IN ITEMS
    ${INSTALL_INCLUDEDIR}/multiproc/multiproc.hpp
    ${INSTALL_INCLUDEDIR}/multiproc/detail/codec.hpp
    ${INSTALL_LIBDIR}/libmultiproc.so
    ${INSTALL_LIBDIR}/libmultiproc_actors.so
    ${INSTALL_LIBDIR}/libmultiproc_log.so
    ${config_dir}/multiprocConfig.cmake
    ${config_dir}/multiprocConfigVersion.cmake
    ${config_dir}/multiprocTargets.cmake
    ${config_dir}/FindMsgpackCxx.cmake)
  expect_installed(${file})
endforeach()

# Private code stays private: src/ headers are never installed, and the exported targets name
# no private dependency, so a user needs none of CAF, OpenSSL or spdlog to build against us.
file(GLOB_RECURSE private_headers ${prefix}/*/launch.hpp)
if(private_headers)
  fail("a private header was installed: ${private_headers}")
endif()
file(GLOB installed_cmake_files ${prefix}/${config_dir}/*.cmake)
foreach(file IN LISTS installed_cmake_files)
  file(STRINGS ${file} private_mentions REGEX "(INTERFACE_LINK_LIBRARIES|find_dependency).*(CAF|OpenSSL|spdlog|fmt)")
  if(private_mentions)
    fail("${file} mentions a private dependency: ${private_mentions}")
  endif()
endforeach()

build_and_run_consumer(find_package ${work_dir}/with-find-package
  -DCMAKE_PREFIX_PATH=${prefix}
  -DCMAKE_DISABLE_FIND_PACKAGE_CAF=ON
  -DCMAKE_DISABLE_FIND_PACKAGE_OpenSSL=ON
  -DCMAKE_DISABLE_FIND_PACKAGE_spdlog=ON
  -DCMAKE_DISABLE_FIND_PACKAGE_fmt=ON)
build_and_run_consumer(add_subdirectory ${work_dir}/with-add-subdirectory
  -DMULTIPROC_CONSUME=add_subdirectory
  -DMULTIPROC_SOURCE_DIR=${MULTIPROC_SOURCE_DIR}
  -DMULTIPROC_SANITIZERS=${SANITIZERS})

file(REMOVE_RECURSE ${work_dir})
