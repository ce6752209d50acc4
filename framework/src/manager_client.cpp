// Per-thread, per-process connections to managers, and the request/reply exchange on them.
#include "multiproc/detail/manager_client.hpp"

#include <unistd.h>

#include <mutex>
#include <unordered_map>
#include <unordered_set>

#include "manager_socket.hpp"
#include "multiproc/connection.hpp"
#include "multiproc/detail/errc.hpp"

namespace multiproc::detail {

namespace {

// Where this thread's table is in its life: a proxy used from a static destructor, after the
// thread's thread_locals are gone, must not touch it. Trivially destructible, so always readable.
enum class TableState : unsigned char { unborn, alive, destroyed };
thread_local TableState t_table_state = TableState::unborn;

// This thread's connections. A forked child inherits its parent thread's table: the pid check
// drops those entries (closing only the child's copies), so a child never speaks on its parent's
// connection.
struct ConnectionTable {
  pid_t pid = ::getpid();
  struct Entry {
    Connection conn;
    FrameReader reader;
  };
  std::unordered_map<std::string, Entry> by_address;

  ConnectionTable() { t_table_state = TableState::alive; }
  ~ConnectionTable() { t_table_state = TableState::destroyed; }

  Entry& get(const ManagerEndpoint& endpoint) {
    if (pid != ::getpid()) {
      by_address.clear();
      pid = ::getpid();
    }
    auto it = by_address.find(endpoint.address);
    if (it != by_address.end()) return it->second;
    claim_inherited_references(endpoint);
    return by_address.emplace(endpoint.address, Entry{open(endpoint), {}}).first->second;
  }

  static Connection open(const ManagerEndpoint& endpoint) {
    try {
      connection::Client client(endpoint.address, endpoint.authkey);
      keep_alive_if_tcp(client.fileno());
      return client;
    } catch (const AuthenticationError&) {
      throw;
    } catch (const Error& e) {
      throw Error("cannot reach the manager at " + endpoint.address + ": " + e.what());
    }
  }
};

thread_local ConnectionTable t_connections;

// The process's own connections, one per manager, that its references live on (see
// manager_client.hpp). Never destroyed: proxies dropped by static destructors still give theirs
// back. A forked child drops its parent's entries (closing only its copies), as threads do.
struct ProcessConnections {
  std::mutex m;
  pid_t pid = ::getpid();
  std::unordered_map<std::string, ConnectionTable::Entry> by_address;
  std::unordered_set<std::string> shut_down;  // managers whose proxies give nothing back

  ConnectionTable::Entry& get(const ManagerEndpoint& endpoint) {
    if (pid != ::getpid()) {
      by_address.clear();
      pid = ::getpid();
    }
    auto it = by_address.find(endpoint.address);
    if (it != by_address.end()) return it->second;
    return by_address.emplace(endpoint.address, ConnectionTable::Entry{ConnectionTable::open(endpoint), {}})
        .first->second;
  }
};

ProcessConnections& process_connections() {
  static auto* connections = new ProcessConnections;
  return *connections;
}

[[noreturn]] void server_gone(const ManagerEndpoint& endpoint, const std::exception& e) {
  forget_manager_connection(endpoint.address);
  throw Error("the manager at " + endpoint.address + " is gone (" + e.what() + ")");
}

// A reply is [0, value] or [errc, message, detail]: the value, or the error raised.
msgpack::object_handle check_reply(msgpack::object_handle handle) {
  const auto& o = handle.get();
  if (o.type != msgpack::type::ARRAY || o.via.array.size < 2 ||
      o.via.array.ptr[0].type != msgpack::type::POSITIVE_INTEGER)
    throw Error("malformed reply from the manager");
  auto code = o.via.array.ptr[0].via.u64;
  if (code == 0) return {msgpack::object(o.via.array.ptr[1]), std::move(handle.zone())};
  auto text = [&](std::uint32_t i) {
    const auto& e = o.via.array.ptr[i];
    return i < o.via.array.size && e.type == msgpack::type::STR ? e.as<std::string>() : std::string();
  };
  raise(code <= static_cast<std::uint64_t>(errc::not_implemented) ? static_cast<errc>(code) : errc::error,
        text(1), text(2));
}

// One request and its reply on conn.
msgpack::object_handle exchange_on(Connection& conn, FrameReader& reader, std::string& framed_request) {
  int fd = conn.fileno();
  write_reserved_frame(fd, framed_request);
  auto reply = reader.next(fd);
  if (!reply) throw EOFError("the other end of the connection closed");
  return unpack_untrusted(*reply);
}

} // namespace

msgpack::object_handle manager_exchange(const ManagerEndpoint& endpoint, std::string& framed_request) {
  if (t_table_state == TableState::destroyed)
    throw Error("a manager proxy was used after its thread's connections were destroyed");
  auto& entry = t_connections.get(endpoint);  // AuthenticationError passes as is
  msgpack::object_handle reply;
  try {
    reply = exchange_on(entry.conn, entry.reader, framed_request);
  } catch (const Error& e) {
    server_gone(endpoint, e);
  }
  return check_reply(std::move(reply));
}

msgpack::object_handle manager_exchange_process(const ManagerEndpoint& endpoint, std::string& framed_request,
                                                bool creating) {
  auto& pc = process_connections();
  std::lock_guard lock(pc.m);
  if (creating)
    pc.shut_down.erase(endpoint.address);
  else if (pc.shut_down.count(endpoint.address))
    throw Error("the manager at " + endpoint.address + " was shut down");
  auto& entry = pc.get(endpoint);
  msgpack::object_handle reply;
  try {
    reply = exchange_on(entry.conn, entry.reader, framed_request);
  } catch (const Error& e) {
    pc.by_address.erase(endpoint.address);
    throw Error("the manager at " + endpoint.address + " is gone (" + e.what() + ")");
  }
  return check_reply(std::move(reply));
}

msgpack::object_handle manager_exchange_once(const ManagerEndpoint& endpoint, std::string& framed_request) {
  auto conn = ConnectionTable::open(endpoint);
  FrameReader reader;
  msgpack::object_handle reply;
  try {
    reply = exchange_on(conn, reader, framed_request);
  } catch (const Error& e) {
    throw Error("the manager at " + endpoint.address + " is gone (" + e.what() + ")");
  }
  return check_reply(std::move(reply));
}

void forget_manager_connection(const std::string& address) {
  if (t_table_state == TableState::alive && t_connections.pid == ::getpid()) t_connections.by_address.erase(address);
}

void forget_manager_process_connection(const std::string& address) {
  auto& pc = process_connections();
  std::lock_guard lock(pc.m);
  pc.by_address.erase(address);
  pc.shut_down.insert(address);
}

} // namespace multiproc::detail
