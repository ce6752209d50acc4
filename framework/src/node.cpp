#include "multiproc/node.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <mutex>
#include <string_view>
#include <thread>
#include <vector>

#include "actor_node.hpp"
#include "actors_plugin.hpp"
#include "crypto.hpp"
#include "launch.hpp"
#include "log.hpp"
#include "multiproc/connection.hpp"
#include "multiproc/errors.hpp"
#include "node.hpp"

namespace multiproc {

namespace detail {

namespace {

struct export_table {
  std::mutex m;
  std::vector<exported_function> entries;  // few: a linear search is the fastest
};

export_table& exports() {
  static auto* table = new export_table;  // registrations run at static initialization
  return *table;
}

// How long an accept loop that hit a resource limit (EMFILE) waits before trying again.
constexpr auto accept_retry = std::chrono::milliseconds(100);

std::string authkey_from_environment() {
  if (const char* key = std::getenv("MULTIPROC_AUTHKEY"); key && *key) return key;
  if (const char* path = std::getenv("MULTIPROC_AUTHKEY_FILE"); path && *path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw OSError(std::string("cannot read MULTIPROC_AUTHKEY_FILE ") + path, ENOENT);
    std::string key((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    while (!key.empty() && (key.back() == '\n' || key.back() == '\r')) key.pop_back();
    if (!key.empty()) return key;
  }
  throw ValueError("--multiproc-node needs an authkey: set MULTIPROC_AUTHKEY, or MULTIPROC_AUTHKEY_FILE to a file "
                   "holding it (never on the command line)");
}

} // namespace

bool register_export(const exported_function& entry) {
  auto& t = exports();
  std::lock_guard lock(t.m);
  for (const auto& e : t.entries)
    if (std::string_view(e.name) == entry.name) return false;
  t.entries.push_back(entry);
  return true;
}

const exported_function* find_export(const std::string& name) {
  auto& t = exports();
  std::lock_guard lock(t.m);
  for (const auto& e : t.entries)
    if (e.name == name) return &e;
  return nullptr;
}

const exported_function* find_export(erased_fn fn) {
  auto& t = exports();
  std::lock_guard lock(t.m);
  for (const auto& e : t.entries)
    if (e.fn == fn) return &e;
  return nullptr;
}

void serve_node_if_asked(int argc, char** argv) {
  constexpr std::string_view option = "--multiproc-node";
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (!arg.starts_with(option)) continue;
    std::string address;
    if (arg == option && i + 1 < argc) {
      address = argv[i + 1];
    } else if (arg.size() > option.size() && arg[option.size()] == '=') {
      address = std::string(arg.substr(option.size() + 1));
    } else {
      continue;
    }
    if (address.empty()) throw ValueError("--multiproc-node needs an address, host:port");
    serve_node(address, authkey_from_environment());
  }
}

namespace {

// The answer of a node_cpu_count child: the count, or the error's kind and message.
struct probe_answer {
  char kind;  // 'n': count, 'a': AuthenticationError, 'o': OSError, 'e': another error
  unsigned count;
  int err;
  std::string message;
};

void write_all(int fd, const std::string& bytes) {
  for (std::size_t done = 0; done < bytes.size();) {
    ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    done += static_cast<std::size_t>(n);
  }
}

std::string read_all(int fd) {
  std::string out;
  char buf[512];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return out;
    out.append(buf, static_cast<std::size_t>(n));
  }
}

std::string encode(const probe_answer& a) {
  return std::string(1, a.kind) + std::to_string(a.count) + " " + std::to_string(a.err) + " " + a.message;
}

probe_answer decode(const std::string& s) {
  probe_answer a{'e', 0, 0, "the node probe process ended without an answer"};
  if (s.empty()) return a;
  std::size_t used = 0, used2 = 0;
  try {
    a.kind = s[0];
    a.count = static_cast<unsigned>(std::stoul(s.substr(1), &used));
    a.err = std::stoi(s.substr(1 + used), &used2);
    a.message = s.substr(std::min(s.size(), 1 + used + used2 + 1));
  } catch (const std::exception&) {
    return {'e', 0, 0, "the node probe process answered garbage"};
  }
  return a;
}

// A node's CPU count, asked in a child: building the BASP link needs an actor system of its
// own, and the connection it leaves open would outlive the question in this process.
unsigned probe_node(const std::string& address, const std::string& authkey) {
  const auto& plugin = actors_plugin();
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) throw OSError(std::string("pipe2 failed: ") + std::strerror(errno), errno);
  register_internal_fd(fds[0]);
  register_internal_fd(fds[1]);
  auto close_both = [&] {
    for (int fd : fds) {
      if (fd < 0) continue;
      unregister_internal_fd(fd);
      ::close(fd);
    }
  };
  Forked child;
  try {
    child = fork_child({"NodeProbe", true, next_child_identity()},
                       [&] {
                         probe_answer a{'n', 0, 0, ""};
                         try {
                           a.count = plugin.node_cpu_count(address, authkey);
                         } catch (const AuthenticationError& e) {
                           a = {'a', 0, 0, e.what()};
                         } catch (const OSError& e) {
                           a = {'o', 0, e.error_number(), e.what()};
                         } catch (const std::exception& e) {
                           a = {'e', 0, 0, e.what()};
                         }
                         write_all(fds[1], encode(a));
                         return 0;
                       },
                       {fds[1]});
  } catch (...) {
    close_both();
    throw;
  }
  unregister_internal_fd(fds[1]);
  ::close(std::exchange(fds[1], -1));
  auto answer = decode(read_all(fds[0]));
  try_reap(child.pidfd, true);
  unregister_internal_fd(child.pidfd);
  ::close(child.pidfd);
  close_both();
  switch (answer.kind) {
  case 'n': return answer.count;
  case 'a': throw AuthenticationError("node " + address + ": " + answer.message);
  case 'o': throw OSError("node " + address + ": " + answer.message, answer.err);
  default: throw Error("node " + address + ": " + answer.message);
  }
}

} // namespace

std::vector<std::string> node_slots(const PoolOptions& options) {
  std::vector<std::string> slots;
  if (options.nodes.empty()) return slots;
  if (options.authkey.empty())
    throw ValueError("a Pool with nodes needs PoolOptions::authkey: nodes never accept a connection without it");
  crypto();  // before any fork: the probe child and the proxies authenticate
  for (const auto& address : options.nodes) {
    unsigned count = probe_node(address, options.authkey);
    slots.insert(slots.end(), options.processes_per_node ? options.processes_per_node : count, address);
  }
  return slots;
}

void check_exported(erased_fn fn) {
  if (!find_export(fn))
    throw ValueError("this Pool has nodes, and only functions marked MULTIPROC_EXPORT(function) run on another "
                     "host: export the function (at namespace scope, in the program the nodes run too)");
}

} // namespace detail

void serve_node(std::string address, std::string authkey) { serve_node(std::move(address), std::move(authkey), {}); }

void serve_node(std::string address, std::string authkey, const std::function<void(const std::string&)>& ready) {
  if (authkey.empty())
    throw ValueError("serve_node needs an authkey: a node never listens without the handshake in front");
  // Before the agent's threads start: its workers are forked from them, and a forked child must
  // not dlopen (actors_plugin.hpp).
  const auto& plugin = detail::actors_plugin();
  detail::crypto();
  connection::Listener listener(std::move(address), authkey);
  detail::set_home_node(listener.address(), authkey);
  auto agent = plugin.make_node_agent();
  detail::log(LogLevel::info, "node serving at {}", listener.address());
  if (ready) ready(listener.address());
  for (;;) {
    try {
      auto conn = listener.accept();
      int fd = ::fcntl(conn.fileno(), F_DUPFD_CLOEXEC, 3);
      if (fd < 0) throw OSError(std::string("fcntl(F_DUPFD_CLOEXEC) failed: ") + std::strerror(errno), errno);
      agent->adopt(fd);
      detail::log(LogLevel::info, "node at {}: {} connected", listener.address(), listener.last_accepted());
    } catch (const AuthenticationError& e) {
      // A wrong key, garbage or silence: that client is gone, the node keeps serving.
      detail::log(LogLevel::warning, "node at {}: a client failed the handshake: {}", listener.address(), e.what());
    } catch (const OSError& e) {
      detail::log(LogLevel::warning, "node at {}: accept failed: {}", listener.address(), e.what());
      std::this_thread::sleep_for(detail::accept_retry);
    }
  }
}

} // namespace multiproc
