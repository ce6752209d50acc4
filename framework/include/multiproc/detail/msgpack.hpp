// The one place the library includes msgpack-c: without Boost, as Debian's package needs.
#pragma once
#ifndef MSGPACK_NO_BOOST
#define MSGPACK_NO_BOOST
#endif
#include <msgpack.hpp>
