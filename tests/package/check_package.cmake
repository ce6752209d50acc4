# The `package` CTest test, run with `cmake -P`: installs the current build of multiproc into a
# fresh temporary prefix, then configures, builds and runs the outside project in this folder
# twice — against the installed package (find_package) and against the source tree
# (add_subdirectory) — and removes everything it made.
#
# Inputs (-D): MULTIPROC_BINARY_DIR, INSTALL_LIBDIR, INSTALL_INCLUDEDIR, SANITIZERS (ON/OFF), and
# those of consumers.cmake.
cmake_minimum_required(VERSION 3.25)
include(${CMAKE_CURRENT_LIST_DIR}/steps.cmake)
include(${CMAKE_CURRENT_LIST_DIR}/consumers.cmake)
set(prefix ${work_dir}/prefix)

function(expect_installed relative_path)
  if(NOT EXISTS ${prefix}/${relative_path})
    fail("the install lacks ${relative_path}")
  endif()
endfunction()

step("install into ${prefix}" ${CMAKE_COMMAND} --install ${MULTIPROC_BINARY_DIR} --prefix ${prefix})

set(config_dir ${INSTALL_LIBDIR}/cmake/multiproc)
foreach(file IN ITEMS
    ${INSTALL_INCLUDEDIR}/multiproc/multiproc.hpp
    ${INSTALL_INCLUDEDIR}/multiproc/detail/codec.hpp
    ${INSTALL_LIBDIR}/libmultiproc.so
    ${INSTALL_LIBDIR}/libmultiproc_actors.so
    ${INSTALL_LIBDIR}/libmultiproc_log.so
    ${INSTALL_LIBDIR}/pkgconfig/multiproc.pc
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

build_and_run_with_find_package(${prefix} ${work_dir}/with-find-package)
build_and_run_consumer(add_subdirectory ${work_dir}/with-add-subdirectory
  -DMULTIPROC_CONSUME=add_subdirectory
  -DMULTIPROC_SOURCE_DIR=${MULTIPROC_SOURCE_DIR}
  -DMULTIPROC_SANITIZERS=${SANITIZERS})

file(REMOVE_RECURSE ${work_dir})
