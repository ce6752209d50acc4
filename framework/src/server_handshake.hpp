// The server's half of the authkey handshake (deliver_challenge, then answer_challenge) as a
// state machine over whole messages, with no I/O of its own: for a server that reads and writes
// its connections itself and must never wait on one client (the Listener, the manager's sessions
// on the actor runtime's multiplexer). The caller frames the messages (detail/wire.hpp) and
// bounds the whole handshake with one deadline.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace multiproc::detail {

// A handshake message is never longer (CPython's recv_bytes(256)).
inline constexpr std::size_t max_handshake_message = 256;

class ServerHandshakeSteps {
public:
  enum class state { under_way, authenticated, failed };

  // Draws the challenge (Error when there is no randomness for it).
  explicit ServerHandshakeSteps(std::string authkey);

  // The first message to send: the challenge.
  const std::string& challenge() const { return challenge_message_; }
  // Takes the client's next message; returns what to send it (the verdict on its response, or
  // the response to its challenge). Never throws: a client that failed leaves state() failed,
  // with why in error(), and what is returned (a #FAILURE# verdict) still goes to it.
  std::optional<std::string> take(std::string_view message);

  state current() const { return state_; }
  const std::string& error() const { return error_; }

private:
  enum class step { response, challenge, verdict };
  std::optional<std::string> step_on(std::string_view message);

  std::string authkey_;
  std::string challenge_;          // what the client's response must sign
  std::string challenge_message_;  // #CHALLENGE# and challenge_
  step next_ = step::response;
  state state_ = state::under_way;
  std::string error_;
};

} // namespace multiproc::detail
