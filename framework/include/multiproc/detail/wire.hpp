// The wire: length-prefixed frames on stream sockets, as CPython's Connection frames them.
//
// A frame is a 4-byte big-endian signed length and the payload; payloads of 2 GiB or more use
// length -1 followed by an 8-byte big-endian length. Frames longer than max_frame_size() are
// refused before anything is allocated. Waiting for a frame spins briefly before it blocks,
// because a sleeping receiver costs a cross-CPU wake-up (~70 µs here) per message.
#pragma once

#include <chrono>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

struct pollfd;  // <poll.h>

namespace multiproc::detail {

using Clock = std::chrono::steady_clock;
using Deadline = std::optional<Clock::time_point>;  // nullopt: wait forever

template <class Rep, class Period>
Deadline deadline_after(std::chrono::duration<Rep, Period> timeout) {
  auto t = std::chrono::duration_cast<Clock::duration>(timeout);
  if (t < Clock::duration::zero()) t = Clock::duration::zero();
  return Clock::now() + t;
}

// The ceiling on one frame's payload (default 64 MiB; mp::set_max_message_size). Process-wide; thread-safe.
std::size_t max_frame_size() noexcept;
void set_max_frame_size(std::size_t bytes) noexcept;

// How long a wait spins (polling without sleeping) before it blocks. Process-wide.
std::chrono::microseconds spin_duration() noexcept;
void set_spin_duration(std::chrono::microseconds) noexcept;

// poll() until one of fds is ready or the deadline passes: how many are ready, 0 on the deadline.
// Every timed wait on fds goes through here: a signal (EINTR) does not restart the wait with
// the whole timeout, what is left is recomputed from the deadline. OSError if poll fails.
int poll_until(::pollfd* fds, std::size_t n, Deadline deadline);

// Waits until fd is readable (data or EOF). false on deadline. Spins first, then blocks.
bool wait_readable(int fd, Deadline deadline);
// The same without the spin, for waits that outlast any spin (a process's end: a spinning parent
// only takes CPU from the child it waits for).
bool block_until_readable(int fd, Deadline deadline);

// Writes one frame. BrokenPipeError when the peer is gone, OSError on other failures.
void write_frame(int fd, std::string_view payload);
// Writes a frame whose payload sits in buf after frame_reserve leading bytes, which this fills
// with the header: one syscall for small messages.
inline constexpr std::size_t frame_reserve = 4;
void write_reserved_frame(int fd, std::string& buf);
// Appends one frame (header and payload) to out, for writers that batch many frames per write.
void append_frame(std::string& out, std::string_view payload);
// Writes all of bytes (already framed). Errors as write_frame.
void write_bytes(int fd, std::string_view bytes);
// Parses a frame header at the start of bytes: {header length, payload length}, or nullopt when
// bytes does not hold a whole header yet. Error on a malformed length or one above the ceiling.
struct FrameHeader {
  std::size_t header_size;
  std::size_t payload_size;
};
std::optional<FrameHeader> parse_frame_header(std::string_view bytes);

// Reads a frame header: the payload length. EOFError on a clean EOF before the first byte;
// Error on a truncated header, a malformed length or one above the ceiling.
std::size_t read_frame_header(int fd);
// Reads exactly n bytes into out. Error if the peer closes first (a truncated frame).
void read_exact(int fd, char* out, std::size_t n);
// Reads an n-byte payload. Memory grows with the bytes that actually arrive, so a header that
// lies about its length cannot make us allocate up to the ceiling at once.
std::string read_payload(int fd, std::size_t n);
// Reads and drops n bytes (the rest of a frame the caller refused).
void discard_exact(int fd, std::size_t n);
// A frame whose length is known but whose bytes are not taken yet: its header may still sit in
// the socket, only peeked at. Taking header and payload in one read takes exactly this frame,
// so bytes behind it stay in the socket for whoever reads next: another process sharing the
// endpoint (under a lock of its own, as Python allows) or a select() on the fd.
struct PendingFrame {
  std::size_t header_unread;  // header bytes still in the socket (0 when already read)
  std::size_t payload_size;
};
// Waits for the next frame's header. The spin probes with recv(MSG_PEEK), so the probe that
// sees the frame also yields its length: with read_payload*, one more syscall takes the frame.
// EOFError on a clean EOF; Error on a truncated header, a malformed length or one above the
// ceiling (the malformed header is then left unread).
PendingFrame wait_frame(int fd);
// Reads the pending frame into out, which has room for its payload. Error on a truncated frame.
void read_payload_into(int fd, const PendingFrame& frame, char* out);
// Reads the pending frame's payload; memory grows as read_payload(fd, n) does.
std::string read_payload(int fd, const PendingFrame& frame);
// Reads and drops the pending frame (one the caller refused).
void discard_payload(int fd, const PendingFrame& frame);

} // namespace multiproc::detail
