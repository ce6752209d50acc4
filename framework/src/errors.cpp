#include "multiproc/detail/errc.hpp"
#include "multiproc/errors.hpp"

namespace multiproc {

void raise(errc code, const std::string& message, const std::string& detail) {
  switch (code) {
    case errc::none:
    case errc::error: throw Error(message);
    case errc::process_error: throw ProcessError(message);
    case errc::authentication_error: throw AuthenticationError(message);
    case errc::timeout: throw TimeoutError(message);
    case errc::worker_lost: throw WorkerLost(message, detail.empty() ? 0 : std::stoi(detail));
    case errc::broken_pool: throw BrokenPool(message);
    case errc::empty: throw Empty(message);
    case errc::full: throw Full(message);
    case errc::eof: throw EOFError(message);
    case errc::value_error: throw ValueError(message);
    case errc::type_error: throw TypeError(message);
    case errc::key_error: throw KeyError(message);
    case errc::index_error: throw IndexError(message);
    case errc::attribute_error: throw AttributeError(message);
    case errc::broken_barrier: throw BrokenBarrierError(message);
    case errc::remote_error: throw RemoteError(detail, message);
    case errc::not_implemented: throw NotImplementedError(message);
  }
  throw Error(message);
}

} // namespace multiproc
