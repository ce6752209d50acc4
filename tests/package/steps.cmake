# Shared by the package tests' `cmake -P` scripts: a fresh temporary directory for everything a
# test makes (work_dir), removed on failure by fail() and at the end by the script, and steps
# that are bounded in time and fail the test with their output.
execute_process(COMMAND mktemp -d --tmpdir multiproc-package-XXXXXX
  OUTPUT_VARIABLE work_dir OUTPUT_STRIP_TRAILING_WHITESPACE COMMAND_ERROR_IS_FATAL ANY)

function(fail message)
  file(REMOVE_RECURSE ${work_dir})
  message(FATAL_ERROR "${message}")
endfunction()

# Runs one step, bounded in time; on failure prints its output, cleans up and fails the test.
# With OUTPUT_VARIABLE <var> as its first two arguments, gives the step's standard output.
function(step description)
  set(output_var "")
  if(ARGV1 STREQUAL "OUTPUT_VARIABLE")
    set(output_var ${ARGV2})
    list(REMOVE_AT ARGN 0 1)
  endif()
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE result OUTPUT_VARIABLE output ERROR_VARIABLE errors
    TIMEOUT 600)
  if(NOT result EQUAL 0)
    fail("${description} failed (${result}):\n${output}${errors}")
  endif()
  message(STATUS "${description}: ok")
  if(output_var)
    set(${output_var} "${output}" PARENT_SCOPE)
  endif()
endfunction()
