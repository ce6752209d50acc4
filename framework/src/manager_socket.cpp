#include "manager_socket.hpp"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "multiproc/detail/wire.hpp"
#include "multiproc/errors.hpp"

namespace multiproc::detail {

namespace {

constexpr std::size_t read_chunk = 4096;
// A buffer that held one big frame is given back rather than kept for every small one after.
constexpr std::size_t keep_buffer_bytes = std::size_t{1} << 20;

} // namespace

std::optional<std::string_view> FrameReader::next(int fd) {
  for (;;) {
    std::string_view held(buf_.data() + start_, end_ - start_);
    if (auto header = parse_frame_header(held)) {
      std::size_t total = header->header_size + header->payload_size;
      if (held.size() >= total) {
        start_ += total;
        return held.substr(header->header_size, header->payload_size);
      }
      if (!fill(fd, total))
        throw Error("truncated frame: the peer closed after " + std::to_string(held.size()) + " of " +
                    std::to_string(total) + " bytes");
    } else if (!fill(fd, 0)) {
      if (held.empty()) return std::nullopt;
      throw Error("truncated frame: the peer closed inside a frame header");
    }
  }
}

bool FrameReader::fill(int fd, std::size_t frame_size) {
  std::size_t held = end_ - start_;
  if (start_ > 0) {
    std::memmove(buf_.data(), buf_.data() + start_, held);
    start_ = 0;
    end_ = held;
  }
  if (held == 0 && buf_.size() > keep_buffer_bytes) std::string().swap(buf_);
  // Room for the rest of the frame, but at most twice what arrived so far plus a chunk.
  std::size_t want = std::max(held + read_chunk, std::min(frame_size, 2 * held + read_chunk));
  if (buf_.size() < want) buf_.resize(want);
  wait_readable(fd, std::nullopt);
  for (;;) {
    ssize_t n = ::read(fd, buf_.data() + end_, buf_.size() - end_);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == ECONNRESET) return false;
    if (n < 0) throw OSError(std::string("read from connection failed: ") + std::strerror(errno), errno);
    end_ += static_cast<std::size_t>(n);
    return n > 0;
  }
}

} // namespace multiproc::detail
