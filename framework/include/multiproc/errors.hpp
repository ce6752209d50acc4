// multiproc errors: the exception hierarchy of Python's multiprocessing, in C++.
//
// Every exception the library throws derives from mp::Error (a std::runtime_error). Inside the
// library, and on the wire between processes, failures travel as an mp::errc value plus a message
// (see detail/errc.hpp); they become one of these types at the public edge, in one place
// (raise()). SystemExit is not an error: throw it in a child process to exit with that code.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

namespace multiproc {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};
struct ProcessError : Error {
  using Error::Error;
};
// The message did not fit the caller's buffer; message() holds all of it.
struct BufferTooShort : ProcessError {
  BufferTooShort(std::string what, std::string message)
      : ProcessError(std::move(what)), message_(std::move(message)) {}
  const std::string& message() const noexcept { return message_; }

private:
  std::string message_;
};
struct AuthenticationError : ProcessError {
  using ProcessError::ProcessError;
};
struct TimeoutError : ProcessError {
  using ProcessError::ProcessError;
};
// A pool worker died while it held the task. exitcode(): its exit status, or -signal.
struct WorkerLost : ProcessError {
  WorkerLost(std::string what, int exitcode) : ProcessError(std::move(what)), exitcode_(exitcode) {}
  int exitcode() const noexcept { return exitcode_; }

private:
  int exitcode_;
};
struct BrokenPool : ProcessError {
  using ProcessError::ProcessError;
};
struct Empty : Error {
  using Error::Error;
};
struct Full : Error {
  using Error::Error;
};
struct EOFError : Error {
  using Error::Error;
};
// An operating-system call failed; errno() is its errno. BrokenPipeError: the peer is gone.
struct OSError : Error {
  OSError(std::string what, int err) : Error(std::move(what)), errno_(err) {}
  int error_number() const noexcept { return errno_; }

private:
  int errno_;
};
struct BrokenPipeError : OSError {
  using OSError::OSError;
};
struct ValueError : Error {
  using Error::Error;
};
struct TypeError : Error {
  using Error::Error;
};
struct KeyError : Error {
  using Error::Error;
};
struct IndexError : Error {
  using Error::Error;
};
struct AttributeError : Error {
  using Error::Error;
};
struct BrokenBarrierError : Error {
  using Error::Error;
};
struct NotImplementedError : Error {
  using Error::Error;
};
// A part of the library that is loaded on first use could not be: Pool and Manager need
// libmultiproc_actors and log_to_stderr libmultiproc_log (both installed next to libmultiproc),
// an authkey handshake needs OpenSSL's libcrypto.
struct ImportError : Error {
  using Error::Error;
};
// An exception raised in another process. type_name(): its demangled C++ type.
struct RemoteError : Error {
  RemoteError(std::string type_name, const std::string& message)
      : Error(type_name + ": " + message), type_name_(std::move(type_name)) {}
  const std::string& type_name() const noexcept { return type_name_; }

private:
  std::string type_name_;
};

// Throw in a child process (or a Process target) to end it with exit code `code`.
struct SystemExit {
  int code = 0;
};

} // namespace multiproc
