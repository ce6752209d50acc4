// Functions cross into a spawned child by identity: the ELF object that holds the code (named by
// its GNU build-id, which the child checks) and the offset inside it. Every process that runs the
// same program maps the same objects, each at an address of its own (ASLR), so the offset finds
// the same code there.
#pragma once

#include <cstdint>
#include <string>

#include "multiproc/detail/msgpack.hpp"

namespace multiproc::detail {

struct FunctionId {
  std::string build_id;  // hex; empty when the object has none (then the path decides)
  std::string object;    // the object's path, for messages ("" for the main program)
  std::uint64_t offset = 0;
  MSGPACK_DEFINE(build_id, object, offset)
};

// The identity of the code at address (nullptr: an empty identity). Error when no loaded object
// holds the address.
FunctionId identify_function(const void* address);
// The address of that code in this process (nullptr for an empty identity). Error naming the
// object when it is not loaded here or its build-id differs.
void* locate_function(const FunctionId& id);

} // namespace multiproc::detail
