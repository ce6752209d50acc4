// The CAF-free side of a Pool: the frames parent and workers exchange, and the loop a forked
// worker runs.
//
// Parent -> worker, one frame per chunk: [8 bytes runner][8 bytes fn][MessagePack item array].
// Both are the parent's addresses. A worker started by spawn or forkserver maps other addresses
// (ASLR), so before the first chunk that names an address the parent sends it one definition,
// [8 zero bytes][8 bytes address][MessagePack FunctionId], which gets no answer: the worker
// locates each function once, not once per chunk.
// Worker -> parent, one frame per chunk, in order: [status][MessagePack body], status ok with
// the result array, status error with [type name, message]. A worker answers each chunk before
// it starts the next, so the first unanswered chunk of a dead worker is the one it was running.
#pragma once

#include <cstddef>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

namespace multiproc::detail {

enum class chunk_status : char { ok = 0, error = 1 };
// The one-byte frame an announcing worker sends once its initializer ran, before any answer
// (a node proxy sends the same once its node's worker is there).
inline constexpr char worker_ready_frame = 0x7f;
inline constexpr std::size_t chunk_header = 16;  // runner + fn

// Length-prefixed frames (wire.hpp's format) parsed out of a growable buffer, so that one read
// can bring many frames.
class frame_reader {
public:
  enum class fill_result { data, would_block, eof };
  // Reads what fd has (one read call). ECONNRESET counts as EOF.
  fill_result fill(int fd);
  // The next whole frame's payload, valid until the next fill(); nullopt when none is complete.
  // Error on a malformed or oversized length.
  std::optional<std::string_view> next();

private:
  std::string buf_;
  std::size_t begin_ = 0, end_ = 0;
  std::size_t want_ = 0;  // bytes the incomplete frame at begin_ needs in all
};

// A definition frame: the FunctionId of the code at a parent's address.
std::string function_definition(const void* address);

// The body of a worker process: runs initializer, then answers chunks from fd until the parent
// closes it or maxtasks chunks are done (0: no limit). forked: the worker is a fork of the
// parent, whose addresses are its own (else it translates them by the definitions). announce:
// send worker_ready_frame after the initializer (a pool with task_timeout starts no deadline
// before it).
void run_pool_worker(int fd, const std::function<void()>& initializer, std::size_t maxtasks, bool forked = true,
                     bool announce = false);

} // namespace multiproc::detail
