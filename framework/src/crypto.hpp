// The parts of OpenSSL's libcrypto the authkey handshake uses (listener.cpp), loaded on first use
// rather than linked (lazy_library.hpp): libcrypto's relocated data alone is ~100 pages whose
// page-table entries every fork of every program would copy.
#pragma once

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

namespace multiproc::detail {

struct Crypto {
  decltype(&::EVP_md5) md5;
  decltype(&::EVP_sha256) sha256;
  decltype(&::EVP_sha384) sha384;
  decltype(&::EVP_sha3_256) sha3_256;
  decltype(&::EVP_sha3_384) sha3_384;
  decltype(&::HMAC) hmac;
  decltype(&::CRYPTO_memcmp) memcmp;
  decltype(&::RAND_bytes) rand_bytes;
};

// libcrypto's functions; the first call loads it. ImportError when it cannot be loaded (and the
// next call tries again). Thread-safe. Call it before forking a child that will authenticate.
const Crypto& crypto();

} // namespace multiproc::detail
