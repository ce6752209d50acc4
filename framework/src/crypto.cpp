#include "crypto.hpp"

#include <string>

#include "lazy_library.hpp"

#define MULTIPROC_STRINGIFY_VALUE(x) #x
#define MULTIPROC_STRINGIFY(x) MULTIPROC_STRINGIFY_VALUE(x)

namespace multiproc::detail {

namespace {

Crypto load_crypto() {
  // The soname of the libcrypto whose headers we compiled against.
  const std::string path = "libcrypto.so." MULTIPROC_STRINGIFY(OPENSSL_SHLIB_VERSION);
  void* lib = open_library(path, "the authkey handshake");
  Crypto c;
  auto bind = [&]<class Function>(Function*& slot, const char* name) {
    slot = library_function<Function>(lib, path, name);
  };
  bind(c.md5, "EVP_md5");
  bind(c.sha256, "EVP_sha256");
  bind(c.sha384, "EVP_sha384");
  bind(c.sha3_256, "EVP_sha3_256");
  bind(c.sha3_384, "EVP_sha3_384");
  bind(c.hmac, "HMAC");
  bind(c.memcmp, "CRYPTO_memcmp");
  bind(c.rand_bytes, "RAND_bytes");
  return c;
}

} // namespace

const Crypto& crypto() {
  static const Crypto loaded = load_crypto();
  return loaded;
}

} // namespace multiproc::detail
