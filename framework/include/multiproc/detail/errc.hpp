// The library's error codes: one per failure that crosses a boundary (actor, process, wire).
// raise() turns one into the matching public exception, so that mapping lives in one place.
#pragma once

#include <cstdint>
#include <string>

namespace multiproc {

enum class errc : std::uint8_t {
  none = 0,
  error,                 // generic mp::Error
  process_error,         // ProcessError
  authentication_error,  // wrong authkey or a broken handshake
  timeout,               // TimeoutError
  worker_lost,           // a pool worker died holding the task (detail: exit code)
  broken_pool,           // the pool gave up restarting workers
  empty,                 // queue.Empty
  full,                  // queue.Full
  eof,                   // the peer closed
  value_error,           // API misuse
  type_error,            // a payload did not decode as the requested type
  key_error,             // missing dict key
  index_error,           // list index out of range
  attribute_error,       // missing namespace attribute
  broken_barrier,        // BrokenBarrierError
  remote_error,          // user code threw in another process (detail: type name)
  not_implemented,       // NotImplementedError
};

// Throws the public exception for `code`. `detail` carries the exit code (worker_lost) or the
// type name (remote_error).
[[noreturn]] void raise(errc code, const std::string& message, const std::string& detail = {});

} // namespace multiproc
