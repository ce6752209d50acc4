# The `package` CTest test of the Debian package, run with `cmake -P`: makes it from the current
# build with `cpack -G DEB` into a temporary directory, checks what it holds and what it depends
# on with dpkg-deb, unpacks it there (dpkg-deb -x) and builds and runs the outside programs
# against the unpacked tree with pkg-config and with find_package, then removes everything.
#
# It does not install the package: apt-get install would write to /usr as root, replace a
# multiproc the machine may have installed, and race with another build's test for dpkg's lock.
# multiproc.pc and the CMake package are relocatable, so the unpacked files are exercised as they
# are once installed; the Depends check below stands in for apt-get's resolution.
#
# Inputs (-D): MULTIPROC_BINARY_DIR, INSTALL_LIBDIR, INSTALL_INCLUDEDIR, DLOPENED_LIBRARIES (the
# file names of the libraries libmultiproc loads with dlopen, which no ELF header names), and
# those of consumers.cmake.
cmake_minimum_required(VERSION 3.25)
include(${CMAKE_CURRENT_LIST_DIR}/steps.cmake)
include(${CMAKE_CURRENT_LIST_DIR}/consumers.cmake)

step("cpack -G DEB" ${CMAKE_COMMAND} -E chdir ${MULTIPROC_BINARY_DIR}
  ${CMAKE_CPACK_COMMAND} -G DEB -B ${work_dir}/cpack)
file(GLOB deb ${work_dir}/cpack/multiproc_*.deb)
list(LENGTH deb count)
if(NOT count EQUAL 1)
  fail("cpack -G DEB made ${count} multiproc_*.deb files, not one")
endif()
step("dpkg-deb --info" OUTPUT_VARIABLE info dpkg-deb --info ${deb})
message(STATUS "${info}")

# Everything `cmake --install` installs, under /usr.
step("dpkg-deb --contents" OUTPUT_VARIABLE contents dpkg-deb --contents ${deb})
set(config_dir usr/${INSTALL_LIBDIR}/cmake/multiproc)
foreach(file IN ITEMS
    usr/${INSTALL_INCLUDEDIR}/multiproc/multiproc.hpp
    usr/${INSTALL_INCLUDEDIR}/multiproc/detail/codec.hpp
    usr/${INSTALL_LIBDIR}/libmultiproc.so
    usr/${INSTALL_LIBDIR}/libmultiproc.so.0
    usr/${INSTALL_LIBDIR}/libmultiproc_actors.so
    usr/${INSTALL_LIBDIR}/libmultiproc_log.so
    usr/${INSTALL_LIBDIR}/pkgconfig/multiproc.pc
    ${config_dir}/multiprocConfig.cmake
    ${config_dir}/multiprocConfigVersion.cmake
    ${config_dir}/multiprocTargets.cmake
    ${config_dir}/FindMsgpackCxx.cmake)
  string(REGEX REPLACE "([.+])" "\\\\\\1" file_regex "${file}")
  if(NOT contents MATCHES " \\./${file_regex}( |\n)")
    fail("the package lacks /${file}:\n${contents}")
  endif()
endforeach()

set(root ${work_dir}/root)
step("dpkg-deb --extract" dpkg-deb --extract ${deb} ${root})
set(libdir ${root}/usr/${INSTALL_LIBDIR})

# The Debian packages of the package's dependencies, without versions; alternatives count alike.
step("dpkg-deb --field Depends" OUTPUT_VARIABLE depends dpkg-deb --field ${deb} Depends)
string(REGEX REPLACE "\\([^)]*\\)" "" depends "${depends}")
string(REGEX REPLACE "[ \n]" "" depends "${depends}")
string(REGEX REPLACE "[,|]" ";" depends "${depends}")

# The packages that own the files `dpkg-query --search` finds for the patterns (its lines are
# "package[:arch][, package[:arch]...]: path"; files no package owns are left out).
function(owners_of out)
  execute_process(COMMAND dpkg-query --search ${ARGN} OUTPUT_VARIABLE output ERROR_QUIET)
  string(REPLACE "\n" ";" lines "${output}")
  set(owners "")
  foreach(line IN LISTS lines)
    if(NOT line MATCHES "^diversion " AND line MATCHES "^([^/ ][^/]*): /")
      string(REPLACE ", " ";" packages "${CMAKE_MATCH_1}")
      list(TRANSFORM packages REPLACE ":.*$" "")
      list(APPEND owners ${packages})
    endif()
  endforeach()
  list(REMOVE_DUPLICATES owners)
  set(${out} ${owners} PARENT_SCOPE)
endfunction()

# The names a dependency on an installed package can use: its own and the virtual ones it provides
# (libspdlog1.10 provides libspdlog1.10-fmt9, the name its shlibs file gives dpkg-shlibdeps).
function(names_of_package out package)
  execute_process(COMMAND dpkg-query --show --showformat=${package},\${Provides} ${package}
    OUTPUT_VARIABLE names ERROR_QUIET)
  string(REGEX REPLACE "\\([^)]*\\)" "" names "${names}")
  string(REGEX REPLACE "[ \n]" "" names "${names}")
  string(REPLACE "," ";" names "${names}")
  set(${out} ${names} PARENT_SCOPE)
endfunction()

# Fails unless Depends names one of the packages, or a virtual package one of them provides.
function(expect_in_depends what packages)
  foreach(package IN LISTS packages)
    names_of_package(names ${package})
    foreach(name IN LISTS names)
      if(name IN_LIST depends)
        message(STATUS "${what}: ${package} is in Depends (as ${name})")
        return()
      endif()
    endforeach()
  endforeach()
  fail("Depends (${depends}) lacks the package of ${what} (installed from: ${packages})")
endfunction()

# Every shared library our libraries link that the package does not hold (the DT_NEEDED names,
# strings in the files), and those libmultiproc opens with dlopen (DLOPENED_LIBRARIES).
file(GLOB elf_files ${libdir}/libmultiproc.so.*.*.* ${libdir}/libmultiproc_*.so)
set(libraries ${DLOPENED_LIBRARIES})
foreach(elf IN LISTS elf_files)
  file(STRINGS ${elf} needed REGEX "^lib[A-Za-z0-9_+-]+\\.so\\.[0-9][0-9.]*$")
  list(APPEND libraries ${needed})
endforeach()
list(REMOVE_DUPLICATES libraries)
foreach(library IN LISTS libraries)
  if(NOT EXISTS ${libdir}/${library})
    owners_of(owners "*/${library}")
    expect_in_depends("library ${library}" "${owners}")
  endif()
endforeach()

# Every header our headers include, compiled with multiproc.pc's flags, that is not ours and not
# the toolchain's (the compiler's, the C library's and the kernel's): msgpack-c's.
set(pc_env PKG_CONFIG_PATH=${libdir}/pkgconfig)
step("list the headers multiproc.hpp includes" OUTPUT_VARIABLE rule
  ${CMAKE_COMMAND} -E env ${pc_env}
  sh -c "\"${CXX_COMPILER}\" -M -x c++ \"${root}/usr/${INSTALL_INCLUDEDIR}/multiproc/multiproc.hpp\" $(pkg-config --cflags multiproc)")
string(REGEX MATCHALL "/[^ \\\n]+" headers "${rule}")
list(FILTER headers EXCLUDE REGEX "^${root}/")
owners_of(header_packages ${headers})
list(FILTER header_packages EXCLUDE REGEX "^(libc6-dev|linux-libc-dev|libstdc\\+\\+-[0-9]+-dev|libgcc-[0-9]+-dev)$")
if(NOT header_packages)
  fail("no Debian package owns a header multiproc.hpp includes (msgpack-c's should be)")
endif()
foreach(package IN LISTS header_packages)
  expect_in_depends("headers of ${package}" ${package})
endforeach()

build_and_run_with_pkg_config(${root}/usr ${INSTALL_LIBDIR})
build_and_run_with_find_package(${root}/usr ${work_dir}/with-find-package)

file(REMOVE_RECURSE ${work_dir})
