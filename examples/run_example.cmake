# Runs one example (PROGRAM with ARGS) and fails unless it exits 0, reports no failed check or
# uncaught error on stderr, and prints text matching each regex in EXPECT_FILE (one per line,
# <NL> standing for a newline).
execute_process(COMMAND ${PROGRAM} ${ARGS}
  RESULT_VARIABLE status OUTPUT_VARIABLE out ERROR_VARIABLE err)
message("${out}")
if(err)
  message("stderr:\n${err}")
endif()
if(NOT status EQUAL 0)
  message(FATAL_ERROR "${PROGRAM} exited with ${status}")
endif()
if(err MATCHES "check failed|terminate called|\nProcess [^\n]*:\n")
  message(FATAL_ERROR "${PROGRAM} reported an error on stderr")
endif()
file(STRINGS ${EXPECT_FILE} expectations)
foreach(regex IN LISTS expectations)
  string(REPLACE "<NL>" "\n" regex "${regex}")
  if(NOT out MATCHES "${regex}")
    message(FATAL_ERROR "${PROGRAM}: no output line matches '${regex}'")
  endif()
endforeach()
