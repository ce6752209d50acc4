# Installs lib/pkgconfig/multiproc.pc for builds outside CMake (`pkg-config --cflags --libs
# multiproc`). Its flags are read from the targets the CMake package exports, so both say the same:
# the C++ standard multiproc requires, our include directory, msgpack-c's include directory and
# definitions (MSGPACK_NO_BOOST), threads, and the link options a sanitized build passes on. The
# plugins are not linked: libmultiproc loads them from its own directory.
include_guard(GLOBAL)

# A directory as the .pc file names it: under ${prefix} when relative to the install prefix.
function(_multiproc_pc_dir out dir)
  if(IS_ABSOLUTE "${dir}")
    set(${out} "${dir}" PARENT_SCOPE)
  else()
    set(${out} "\${prefix}/${dir}" PARENT_SCOPE)
  endif()
endfunction()

# The value of a list-valued target property, empty when unset.
function(_multiproc_property out target property)
  get_target_property(value ${target} ${property})
  if(NOT value)
    set(value "")
  endif()
  set(${out} "${value}" PARENT_SCOPE)
endfunction()

function(multiproc_install_pkg_config target)
  _multiproc_property(features ${target} INTERFACE_COMPILE_FEATURES)
  list(FILTER features INCLUDE REGEX "^cxx_std_[0-9]+$")
  list(TRANSFORM features REPLACE "^cxx_std_" "-std=c++")
  _multiproc_property(msgpack_includes MsgpackCxx::MsgpackCxx INTERFACE_INCLUDE_DIRECTORIES)
  _multiproc_property(msgpack_definitions MsgpackCxx::MsgpackCxx INTERFACE_COMPILE_DEFINITIONS)
  # As CMake does for the consumers of an imported target, the compiler's own directories are left out.
  list(REMOVE_ITEM msgpack_includes ${CMAKE_CXX_IMPLICIT_INCLUDE_DIRECTORIES})
  list(TRANSFORM msgpack_includes PREPEND "-I")
  list(TRANSFORM msgpack_definitions PREPEND "-D")
  _multiproc_property(link_options ${target} INTERFACE_LINK_OPTIONS)

  set(cflags ${features} "-I\${includedir}" ${msgpack_includes} ${msgpack_definitions} -pthread)
  set(libs "-L\${libdir}" -l${target} -pthread ${link_options})
  list(JOIN cflags " " MULTIPROC_PC_CFLAGS)
  list(JOIN libs " " MULTIPROC_PC_LIBS)

  set(pc_dir ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
  if(IS_ABSOLUTE "${pc_dir}")
    set(MULTIPROC_PC_PREFIX "${CMAKE_INSTALL_PREFIX}")
  else()
    file(RELATIVE_PATH up_to_prefix /${pc_dir} /)
    string(REGEX REPLACE "/$" "" up_to_prefix "${up_to_prefix}")
    set(MULTIPROC_PC_PREFIX "\${pcfiledir}/${up_to_prefix}")
  endif()
  _multiproc_pc_dir(MULTIPROC_PC_LIBDIR ${CMAKE_INSTALL_LIBDIR})
  _multiproc_pc_dir(MULTIPROC_PC_INCLUDEDIR ${CMAKE_INSTALL_INCLUDEDIR})

  configure_file(${PROJECT_SOURCE_DIR}/cmake/multiproc.pc.in ${CMAKE_CURRENT_BINARY_DIR}/multiproc.pc @ONLY)
  install(FILES ${CMAKE_CURRENT_BINARY_DIR}/multiproc.pc DESTINATION ${pc_dir})
endfunction()
