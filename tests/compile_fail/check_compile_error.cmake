# A `compile_fail` CTest test: compiles SNIPPET (-D), which must not compile, and checks that the
# compiler's first error is the library's static_assert saying what to do. The snippet names
# what it expects in comment lines:
#   // first-error: <text>   the first line with "error:" contains <text> (several allowed)
#   // context: <text>       the output contains <text>, the types involved, as GCC prints them
#                            (checked with GCC only: clang prints them in another form)
#   // errors: <n>           at most <n> lines with "error:" in all (default 1)
# CXX, CXX_ID and INCLUDE_DIRS (a |-separated list) come from tests/CMakeLists.txt.
cmake_minimum_required(VERSION 3.25)

string(REPLACE "|" ";" include_dirs "${INCLUDE_DIRS}")
set(include_flags "")
foreach(dir IN LISTS include_dirs)
  list(APPEND include_flags "-I${dir}")
endforeach()

execute_process(
  COMMAND ${CXX} -std=c++20 -fsyntax-only -fdiagnostics-color=never ${include_flags} ${SNIPPET}
  RESULT_VARIABLE status
  OUTPUT_VARIABLE out
  ERROR_VARIABLE out
  TIMEOUT 120)
if(status EQUAL 0)
  message(FATAL_ERROR "${SNIPPET} compiled, but must not")
endif()

# The first error line and everything the compiler printed before it.
string(REGEX MATCH "[^\n]*error:[^\n]*" first_error "${out}")
if(NOT first_error)
  message(FATAL_ERROR "${SNIPPET}: the compiler failed without an error line:\n${out}")
endif()
file(STRINGS ${SNIPPET} first_error_expectations REGEX "^// first-error: ")
file(STRINGS ${SNIPPET} context_expectations REGEX "^// context: ")
file(STRINGS ${SNIPPET} error_budget REGEX "^// errors: ")
if(NOT first_error_expectations)
  message(FATAL_ERROR "${SNIPPET} names no // first-error: expectation")
endif()
set(failures "")
foreach(line IN LISTS first_error_expectations)
  string(REGEX REPLACE "^// first-error: " "" text "${line}")
  string(FIND "${first_error}" "${text}" at)
  if(at EQUAL -1)
    string(APPEND failures "\n  the first error does not say: ${text}")
  endif()
endforeach()
if(CXX_ID STREQUAL "GNU")
  foreach(line IN LISTS context_expectations)
    string(REGEX REPLACE "^// context: " "" text "${line}")
    string(FIND "${out}" "${text}" at)
    if(at EQUAL -1)
      string(APPEND failures "\n  the compiler's output does not show: ${text}")
    endif()
  endforeach()
endif()
set(max_errors 1)
if(error_budget)
  string(REGEX REPLACE "^// errors: " "" max_errors "${error_budget}")
endif()
string(REGEX MATCHALL "error:" errors "${out}")
list(LENGTH errors error_count)
if(error_count GREATER max_errors)
  string(APPEND failures "\n  ${error_count} errors, more than ${max_errors}")
endif()
if(failures)
  message(FATAL_ERROR "${SNIPPET}:${failures}\nfirst error: ${first_error}\ncompiler output:\n${out}")
endif()
message(STATUS "${SNIPPET}: ${first_error}")
