#include "pool_worker.hpp"

#include <cxxabi.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <typeinfo>
#include <unordered_map>
#include <variant>

#include "multiproc/detail/pool_task.hpp"
#include "multiproc/detail/wire.hpp"
#include "multiproc/errors.hpp"
#include "function_id.hpp"

namespace multiproc::detail {

namespace {

constexpr std::size_t read_size = 64 * 1024;

std::uint64_t get_be(const char* p, int n) {
  std::uint64_t v = 0;
  for (int i = 0; i < n; ++i) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}

// The type of the exception being handled, for throws of non-std::exception types.
std::string current_exception_type() {
  const std::type_info* type = abi::__cxa_current_exception_type();
  return type ? demangle(type->name()) : "unknown exception";
}

// The parent's function addresses as this worker's. A fork shares the parent's addresses; a
// spawned worker learns each from its definition frame (pool_worker.hpp).
class function_table {
public:
  explicit function_table(bool forked) : forked_(forked) {}

  static bool is_definition(std::string_view frame) {
    return frame.size() > chunk_header && get_be(frame.data(), 8) == 0;
  }
  // A function this process does not hold (another build, an object not loaded) fails the chunks
  // that name it, not the worker.
  void define(std::string_view frame) {
    auto address = get_be(frame.data() + 8, 8);
    try {
      local_[address] = locate_function(decode<FunctionId>(frame.substr(chunk_header)));
    } catch (const std::exception& e) {
      local_[address] = std::string(e.what());
    }
  }
  template <class Fn>
  Fn local(const char* field) const {
    Fn fn;
    std::memcpy(&fn, field, sizeof fn);
    if (forked_) return fn;
    auto it = local_.find(reinterpret_cast<std::uint64_t>(fn));
    if (it == local_.end()) throw Error("a pool task named a function its worker was not told about");
    if (auto* error = std::get_if<std::string>(&it->second)) throw Error(*error);
    return reinterpret_cast<Fn>(std::get<void*>(it->second));
  }

private:
  bool forked_;
  std::unordered_map<std::uint64_t, std::variant<void*, std::string>> local_;
};

// Runs one chunk frame; leaves out = [frame header space][status][body].
void run_chunk(std::string_view frame, const function_table& functions, Buffer& out) {
  out.data.assign(frame_reserve, '\0');
  out.data.push_back(static_cast<char>(chunk_status::ok));
  auto fail = [&](const std::string& type, const std::string& message) {
    out.data.resize(frame_reserve);
    out.data.push_back(static_cast<char>(chunk_status::error));
    pack_into(out, std::make_tuple(type, message));
  };
  try {
    if (frame.size() <= chunk_header) throw Error("a pool task frame is too short");
    auto runner = functions.local<chunk_runner>(frame.data());
    auto fn = functions.local<erased_fn>(frame.data() + 8);
    runner(fn, frame.substr(chunk_header), out);
  } catch (const std::exception& e) {
    fail(demangle(typeid(e).name()), e.what());
  } catch (...) {
    auto type = current_exception_type();
    fail(type, "an exception of type " + type + " was thrown");
  }
}

} // namespace

void check_chunk(const msgpack::object& chunk) {
  if (chunk.type != msgpack::type::ARRAY)
    throw TypeError("a pool task carried " + msgpack_type_name(chunk) + " where a list of arguments was expected");
}

frame_reader::fill_result frame_reader::fill(int fd) {
  if (begin_ == end_) begin_ = end_ = 0;
  std::size_t need = std::max(want_, read_size);
  if (buf_.size() - begin_ < need) {
    // Move the partial frame to the front, then grow to fit it (or a full read).
    buf_.erase(0, begin_);
    end_ -= begin_;
    begin_ = 0;
    if (buf_.size() < need) buf_.resize(need);
  }
  if (buf_.size() == end_) buf_.resize(buf_.size() + read_size);
  for (;;) {
    ssize_t n = ::read(fd, buf_.data() + end_, buf_.size() - end_);
    if (n > 0) {
      end_ += static_cast<std::size_t>(n);
      return fill_result::data;
    }
    if (n == 0) return fill_result::eof;
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return fill_result::would_block;
    if (errno == ECONNRESET) return fill_result::eof;
    throw OSError(std::string("read from a pool worker's socket failed: ") + std::strerror(errno), errno);
  }
}

std::optional<std::string_view> frame_reader::next() {
  std::size_t avail = end_ - begin_;
  if (avail < 4) return std::nullopt;
  const char* p = buf_.data() + begin_;
  auto len = static_cast<std::int32_t>(get_be(p, 4));
  std::size_t header = 4;
  std::uint64_t size = static_cast<std::uint32_t>(len);
  if (len == -1) {
    if (avail < 12) return std::nullopt;
    header = 12;
    size = get_be(p + 4, 8);
  } else if (len < 0) {
    throw Error("a pool frame has a negative length");
  }
  if (size > max_frame_size()) throw Error("a pool frame of " + std::to_string(size) + " bytes exceeds the limit");
  if (avail < header + size) {
    want_ = header + size;
    return std::nullopt;
  }
  want_ = 0;
  begin_ += header + size;
  return std::string_view(p + header, size);
}

std::string function_definition(const void* address) {
  std::string frame(8, '\0');
  auto a = reinterpret_cast<std::uint64_t>(address);
  for (int shift = 56; shift >= 0; shift -= 8) frame.push_back(static_cast<char>(a >> shift));
  return frame + encode(identify_function(address));
}

void run_pool_worker(int fd, const std::function<void()>& initializer, std::size_t maxtasks, bool forked,
                     bool announce) {
  // terminate() relies on SIGTERM ending a worker; a handler inherited from the parent must not
  // turn it into something else.
  ::signal(SIGTERM, SIG_DFL);
  if (initializer) initializer();
  if (announce) write_frame(fd, std::string_view(&worker_ready_frame, 1));
  frame_reader in;
  function_table functions(forked);
  Buffer out;
  for (std::size_t done = 0; maxtasks == 0 || done < maxtasks;) {
    auto frame = in.next();
    if (!frame) {
      wait_readable(fd, std::nullopt);
      if (in.fill(fd) == frame_reader::fill_result::eof) return;
      continue;
    }
    if (function_table::is_definition(*frame)) {
      functions.define(*frame);
      continue;
    }
    run_chunk(*frame, functions, out);
    try {
      write_reserved_frame(fd, out.data);
    } catch (const BrokenPipeError&) {
      return;  // the parent is gone
    }
    ++done;
  }
}

} // namespace multiproc::detail
