// Unix sockets in Linux's abstract namespace for actors: an actor's address and its name are
// listening sockets there, so both vanish with the last descriptor of the process holding them
// (however it ends), and binding a name is atomic (EADDRINUSE when another holds it).
// Addresses are written with a leading '@' for the namespace's leading NUL, as ss(8) shows them.
#pragma once

#include <string>
#include <string_view>

namespace multiproc::detail {

// A fresh, unique address for a new actor of this user.
std::string new_actor_address();
// The address under which an actor of this user registers `name`. ValueError when too long.
std::string actor_name_address(std::string_view name);
// Whether address is one new_actor_address made (for this user).
bool is_actor_address(std::string_view address);
// A listening socket bound to name's address (close-on-exec): ValueError when another actor holds
// the name (or it is too long), OSError when it cannot be bound.
int take_actor_name(const std::string& name);
// A listening socket bound to address (close-on-exec); -1 with errno set when it cannot be bound
// (EADDRINUSE: another process holds it).
int listen_abstract(const std::string& address);
// A connected socket (close-on-exec, blocking), -1 when nobody listens there (the actor ended).
// A listener running as another user is refused (-1, EACCES).
int connect_abstract(const std::string& address);
// Whether the peer of a connected socket runs as this process's user.
bool peer_is_same_user(int fd);
// Accepts one connection on a listening socket (close-on-exec, blocking); -1 on failure.
int accept_peer(int listen_fd);

} // namespace multiproc::detail
