# The `package` CTest test that keeps CAF out of users' translation units (as CAF's own
# forbidden-includes check keeps internal headers out of its public ones): fails when any header
# under INCLUDE_DIR (-D) includes a CAF header.
cmake_minimum_required(VERSION 3.25)

file(GLOB_RECURSE headers ${INCLUDE_DIR}/*)
set(offenders "")
foreach(header IN LISTS headers)
  file(STRINGS ${header} caf_includes REGEX "^[ \t]*#[ \t]*include[ \t]*[<\"]caf/")
  foreach(line IN LISTS caf_includes)
    string(APPEND offenders "\n  ${header}: ${line}")
  endforeach()
endforeach()
if(offenders)
  message(FATAL_ERROR "public headers must not include CAF (use pimpl; CAF lives in actors/):${offenders}")
endif()
list(LENGTH headers count)
message(STATUS "${count} public headers, none includes CAF")
