# msgpack-c's C++ API is header-only. Debian's msgpack-config.cmake demands Boost, so we use the
# include path directly and compile with MSGPACK_NO_BOOST. Provides multiproc_msgpack (INTERFACE).
include(FindPackageHandleStandardArgs)
find_path(MsgpackCxx_INCLUDE_DIR msgpack.hpp)
find_package_handle_standard_args(MsgpackCxx REQUIRED_VARS MsgpackCxx_INCLUDE_DIR)
if(MsgpackCxx_FOUND AND NOT TARGET MsgpackCxx::MsgpackCxx)
  add_library(MsgpackCxx::MsgpackCxx INTERFACE IMPORTED)
  set_target_properties(MsgpackCxx::MsgpackCxx PROPERTIES
    INTERFACE_INCLUDE_DIRECTORIES "${MsgpackCxx_INCLUDE_DIR}"
    INTERFACE_COMPILE_DEFINITIONS MSGPACK_NO_BOOST)
endif()
mark_as_advanced(MsgpackCxx_INCLUDE_DIR)
