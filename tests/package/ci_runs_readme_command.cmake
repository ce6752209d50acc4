# The `package` CTest test that keeps README.md and CI in step: the last line of .ci/run must be
# one of README.md's lines, verbatim (the README's "build and run every test" command).
cmake_minimum_required(VERSION 3.25)

file(STRINGS ${SOURCE_DIR}/.ci/run ci_lines)
list(POP_BACK ci_lines ci_command)
file(STRINGS ${SOURCE_DIR}/README.md readme_lines)
if(NOT ci_command IN_LIST readme_lines)
  message(FATAL_ERROR "the last line of .ci/run is not a line of README.md:\n  ${ci_command}")
endif()
message(STATUS ".ci/run ends with the README's command: ${ci_command}")
