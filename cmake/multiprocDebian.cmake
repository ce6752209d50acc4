# `cpack -G DEB` from a build tree: one package, multiproc, with everything `cmake --install`
# installs — libmultiproc and its two plugins, the headers, the CMake package and multiproc.pc.
# Its Depends are the Debian packages of every library it needs at run time and of the headers a
# user compiles against:
#   - what the libraries link (libstdc++, CAF's core and io for the actors plugin, spdlog for the
#     log plugin), found by dpkg-shlibdeps (package dpkg-dev) with their minimum versions;
#   - what nothing links but we need all the same, found with dpkg-query -S at configure time:
#     the libcrypto libmultiproc opens on first use (crypto.cpp, by the soname it was compiled
#     against) and msgpack-c's headers, which our public headers include.
include_guard(GLOBAL)

# The Debian package that owns file (symlinks resolved) in `out`; empty when none does.
function(_multiproc_debian_package_of out file)
  file(REAL_PATH "${file}" path)
  execute_process(COMMAND dpkg-query --search "${path}"
    OUTPUT_VARIABLE owner RESULT_VARIABLE result ERROR_QUIET OUTPUT_STRIP_TRAILING_WHITESPACE)
  if(result EQUAL 0 AND owner MATCHES "^([^:,]+)[:,]")
    set(${out} ${CMAKE_MATCH_1} PARENT_SCOPE)
  else()
    set(${out} "" PARENT_SCOPE)
  endif()
endfunction()

set(CPACK_PACKAGE_NAME multiproc)
set(CPACK_PACKAGE_CONTACT "multiproc dev <dev@multiproc>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "${PROJECT_DESCRIPTION}")
set(CPACK_PACKAGE_DESCRIPTION "A C++20 library with the API of Python's multiprocessing module, \
built on CAF actors and MessagePack over Unix sockets. This package holds the shared library and \
its two plugins (actors, logging), the headers, the CMake package (find_package(multiproc)) and \
the pkg-config file (multiproc.pc).")
set(CPACK_GENERATOR DEB)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION libdevel)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_GENERATE_SHLIBS ON)

find_program(MULTIPROC_DPKG_QUERY dpkg-query)
mark_as_advanced(MULTIPROC_DPKG_QUERY)
if(MULTIPROC_DPKG_QUERY)
  set(_multiproc_unlinked_dependencies "")
  foreach(file IN ITEMS "${OPENSSL_CRYPTO_LIBRARY}" "${MsgpackCxx_INCLUDE_DIR}/msgpack.hpp")
    _multiproc_debian_package_of(package "${file}")
    if(package)
      list(APPEND _multiproc_unlinked_dependencies ${package})
    else()
      message(WARNING "No Debian package owns ${file}: a package made by `cpack -G DEB` will not "
        "depend on it (tools/setup-debian.sh installs it from Debian).")
    endif()
  endforeach()
  list(JOIN _multiproc_unlinked_dependencies ", " CPACK_DEBIAN_PACKAGE_DEPENDS)
endif()

include(CPack)
