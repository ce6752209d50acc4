// BaseManager and Manager: starting, reaching and stopping a manager's server process.
#include "multiproc/managers.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <cstring>
#include <filesystem>

#include "actors_plugin.hpp"
#include "crypto.hpp"
#include "launch.hpp"
#include "log.hpp"
#include "multiproc/errors.hpp"

namespace multiproc {

namespace {

constexpr auto server_start_timeout = std::chrono::seconds(10);
constexpr auto shutdown_step = std::chrono::seconds(2);

const char* builtin_kind(Builtin kind) {
  switch (kind) {
    case Builtin::dict: return "dict";
    case Builtin::list: return "list";
    case Builtin::Namespace: return "Namespace";
    case Builtin::Queue: return "Queue";
    case Builtin::JoinableQueue: return "JoinableQueue";
    case Builtin::Lock: return "Lock";
    case Builtin::RLock: return "RLock";
    case Builtin::Semaphore: return "Semaphore";
    case Builtin::BoundedSemaphore: return "BoundedSemaphore";
    case Builtin::Condition: return "Condition";
    case Builtin::Event: return "Event";
    case Builtin::Barrier: return "Barrier";
    case Builtin::Value: return "Value";
    case Builtin::Array: return "Array";
  }
  throw ValueError("unknown built-in manager type");
}

std::string random_authkey() {
  std::string key(32, '\0');
  std::size_t got = 0;
  while (got < key.size()) {
    ssize_t n = ::getrandom(key.data() + got, key.size() - got, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw OSError(std::string("getrandom failed: ") + std::strerror(errno), errno);
    got += static_cast<std::size_t>(n);
  }
  return key;
}

std::string private_directory() {
  std::error_code ec;
  auto base = std::filesystem::temp_directory_path(ec);
  std::string templ = (ec ? std::filesystem::path("/tmp") : base) / "multiproc-manager-XXXXXX";
  if (!::mkdtemp(templ.data()))  // mode 0700
    throw OSError(std::string("cannot create the manager's directory: ") + std::strerror(errno), errno);
  return templ;
}

// Waits for fd to become readable (the pidfd of an ended child); false on timeout.
bool wait_fd(int fd, std::chrono::milliseconds timeout) {
  return detail::wait_readable(fd, detail::deadline_after(timeout));
}

// Reads the child's startup report: "ok <address>" or "error <message>", then EOF.
std::string read_report(int fd) {
  std::string report;
  auto deadline = detail::deadline_after(server_start_timeout);
  char buf[512];
  for (;;) {
    if (!detail::wait_readable(fd, deadline)) throw ProcessError("the manager's server did not start within 10 s");
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return report;
    report.append(buf, static_cast<std::size_t>(n));
  }
}

// A server's report of the failure that kept it from starting: "error <message>", or
// "oserror <errno> <message>" for an OSError.
std::string failure_report(const std::exception& e) {
  if (const auto* os = dynamic_cast<const OSError*>(&e))
    return "oserror " + std::to_string(os->error_number()) + " " + e.what();
  return std::string("error ") + e.what();
}

// Throws what a failure report says: OSError when the server was out of threads or processes
// (EAGAIN: a process or cgroup limit, as Pool() and fork report it), ProcessError for anything
// else, an address it could not listen on included.
[[noreturn]] void throw_start_failure(const std::string& report) {
  const std::string prefix = "the manager's server failed to start: ";
  if (report.empty()) throw ProcessError(prefix + "it exited");
  auto message = report.substr(report.find(' ') + 1);
  int err = 0;
  if (report.rfind("oserror ", 0) == 0) {
    auto end = std::from_chars(message.data(), message.data() + message.size(), err).ptr;
    message.erase(0, std::min(message.size(), static_cast<std::size_t>(end - message.data()) + 1));
  }
  if (err == EAGAIN) throw OSError(prefix + message, err);
  throw ProcessError(prefix + message);
}

void write_all(int fd, std::string_view text) {
  while (!text.empty()) {
    ssize_t n = ::write(fd, text.data(), text.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    text.remove_prefix(static_cast<std::size_t>(n));
  }
}

} // namespace

// ---- proxies ----------------------------------------------------------------------------------

void detail::ProxyBase::msgpack_unpack(const msgpack::object& o) {
  if (o.type != msgpack::type::ARRAY || o.via.array.size < 3 || o.via.array.size > 4 ||
      o.via.array.ptr[1].type != msgpack::type::BIN)
    throw msgpack::type_error();
  const auto& key = o.via.array.ptr[1].via.bin;
  auto endpoint = std::make_shared<ManagerEndpoint>();
  endpoint->address = o.via.array.ptr[0].as<std::string>();
  endpoint->authkey.assign(key.ptr, key.size);
  auto token = o.via.array.size > 3 ? o.via.array.ptr[3].as<std::uint64_t>() : 0;
  ref_ = claim_unpacked(std::move(endpoint), o.via.array.ptr[2].as<std::uint64_t>(), token);
}

// ---- ManagerServer ----------------------------------------------------------------------------

ManagerServer::ManagerServer(std::string address, std::string authkey,
                             std::shared_ptr<const detail::TypeidRegistry> typeids)
    : address_(std::move(address)), authkey_(std::move(authkey)), typeids_(std::move(typeids)) {}

void ManagerServer::serve_forever(const std::function<void(const std::string&)>& on_ready) {
  detail::actors_plugin().serve_manager({address_, authkey_, typeids_}, [&](const std::string& bound) {
    detail::log(LogLevel::info, "manager serving at {}", bound);
    if (on_ready) on_ready(bound);
  });
}

// ---- BaseManager ------------------------------------------------------------------------------

struct BaseManager::State {
  std::shared_ptr<detail::ManagerEndpoint> endpoint;
  std::shared_ptr<detail::TypeidRegistry> typeids = std::make_shared<detail::TypeidRegistry>();
  std::optional<detail::Forked> server;  // set by start()
  std::string directory;                 // our private directory, removed at shutdown
  pid_t owner = ::getpid();              // only the process that started the server stops it
  std::optional<StartMethod> start_method;
  int lifeline = -1;                     // write end of a pipe whose EOF tells the server we are gone

  void stop_server();
  void remove_files();
};

namespace {
void close_internal_fd(int fd) {
  detail::unregister_internal_fd(fd);
  ::close(fd);
}

// Reaps a server child: it gets `grace` to end on its own, then SIGTERM, then SIGKILL.
void reap_server(const detail::Forked& child, std::chrono::milliseconds grace) {
  if (!wait_fd(child.pidfd, grace)) {
    detail::pidfd_send_signal(child.pidfd, SIGTERM);
    if (!wait_fd(child.pidfd, shutdown_step)) detail::pidfd_send_signal(child.pidfd, SIGKILL);
  }
  detail::try_reap(child.pidfd, true);
  close_internal_fd(child.pidfd);
}
// The server's life in its child: serves until asked to stop, reporting "ok <address>" or its
// failure on report_fd; when its owner died without shutting it down, removes dir (the owner's
// private directory) before it exits.
int serve_in_child(const detail::manager::ServerConfig& config, int report_fd, const std::string& dir) {
  ::prctl(PR_SET_PDEATHSIG, 0);  // the lifeline tells it when the owner is gone
  int code = 0;
  try {
    detail::actors_plugin().serve_manager(config, [report_fd](const std::string& bound) {
      write_all(report_fd, "ok " + bound);
      ::close(report_fd);
    });
  } catch (const std::exception& e) {
    write_all(report_fd, failure_report(e));
    code = 1;
  }
  if (!dir.empty() && wait_fd(config.owner_fd, std::chrono::milliseconds(0))) {
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }
  return code;
}

// A built-in typeid as it crosses into a server started by spawn or forkserver.
struct CrossingTypeid {
  std::string name, kind, init;
  bool shared = false;
  MSGPACK_DEFINE(name, kind, init, shared)
};

std::vector<CrossingTypeid> crossing_typeids(const detail::TypeidRegistry& typeids) {
  std::vector<CrossingTypeid> out;
  for (const auto& [name, spec] : typeids) {
    const auto* builtin = std::get_if<detail::BuiltinTypeid>(&spec.what);
    if (!builtin)
      throw ValueError("the manager's typeid '" + name + "' is a registered class: its factory and methods cannot "
                       "reach a server started by spawn or forkserver; give this manager "
                       "ManagerOptions{.start_method = StartMethod::fork}");
    out.push_back({name, builtin->kind, builtin->init, spec.shared});
  }
  return out;
}

// The target of a server started by spawn or forkserver.
void spawned_server(detail::Descriptor report, detail::Descriptor lifeline, std::string address, std::string authkey,
                    std::vector<CrossingTypeid> typeids, std::string dir) {
  auto registry = std::make_shared<detail::TypeidRegistry>();
  for (auto& t : typeids)
    (*registry)[t.name] = detail::TypeidSpec{detail::BuiltinTypeid{t.kind, t.init}, t.shared};
  detail::crypto();
  if (int code = serve_in_child({address, authkey, registry, lifeline.fd}, report.fd, dir)) throw SystemExit{code};
}

} // namespace

void BaseManager::State::stop_server() {
  try {
    auto request = detail::encode_manager_request(detail::server_object_id, "shutdown");
    detail::manager_exchange_once(*endpoint, request);
  } catch (const Error&) {
    // Already gone, or not answering: the signals settle it.
  }
  detail::forget_manager_connection(endpoint->address);
  detail::forget_manager_process_connection(endpoint->address);
  reap_server(*server, shutdown_step);
  server.reset();
  close_internal_fd(std::exchange(lifeline, -1));
  // A server that had to be killed could not remove its Unix socket.
  std::error_code ec;
  if (std::filesystem::is_socket(endpoint->address, ec)) std::filesystem::remove(endpoint->address, ec);
}

void BaseManager::State::remove_files() {
  if (directory.empty()) return;
  std::error_code ec;
  std::filesystem::remove_all(directory, ec);
  directory.clear();
}

BaseManager::BaseManager(std::string address, std::string authkey)
    : BaseManager(std::move(address), std::move(authkey), ManagerOptions{}) {}

BaseManager::BaseManager(std::string address, std::string authkey, ManagerOptions options)
    : state_(std::make_unique<State>()) {
  state_->endpoint = std::make_shared<detail::ManagerEndpoint>(detail::ManagerEndpoint{std::move(address), std::move(authkey)});
  state_->start_method = options.start_method;
}

BaseManager::~BaseManager() {
  try {
    shutdown();
  } catch (...) {
    // A destructor reports nothing; shutdown() already used every means to stop the server.
  }
}

BaseManager::BaseManager(BaseManager&&) noexcept = default;
BaseManager& BaseManager::operator=(BaseManager&& other) noexcept {
  if (this != &other) {
    try {
      shutdown();
    } catch (...) {
    }
    state_ = std::move(other.state_);
  }
  return *this;
}

void BaseManager::add_builtin(std::string typeid_, Builtin kind, Scope scope, std::string encoded_defaults) {
  (*state_->typeids)[std::move(typeid_)] =
      detail::TypeidSpec{detail::BuiltinTypeid{builtin_kind(kind), std::move(encoded_defaults)}, scope == Scope::shared};
}

void BaseManager::add_class(std::string typeid_, Scope scope, std::shared_ptr<detail::ExposedClass> cls) {
  (*state_->typeids)[std::move(typeid_)] = detail::TypeidSpec{std::move(cls), scope == Scope::shared};
}

void BaseManager::start() {
  if (!state_) throw ValueError("this manager was moved from");
  if (state_->server) throw ProcessError("the manager's server was already started");
  state_->owner = ::getpid();
  auto method = state_->start_method.value_or(get_start_method());
  // Loaded here, not in the server: a forked child must not dlopen (lazy_library.hpp). The server
  // runs in the plugin and authenticates every client with libcrypto.
  detail::actors_plugin();
  detail::crypto();
  // report: the child's "ok <address>" or "error <message>". lifeline: the server watches it
  // instead of dying by PDEATHSIG, so that when we die it still removes its socket and our
  // private directory before it exits.
  int report[2], lifeline[2];
  if (::pipe2(report, O_CLOEXEC) != 0) throw OSError(std::string("pipe failed: ") + std::strerror(errno), errno);
  if (::pipe2(lifeline, O_CLOEXEC) != 0) {
    int err = errno;
    ::close(report[0]);
    ::close(report[1]);
    throw OSError(std::string("pipe failed: ") + std::strerror(err), err);
  }
  detail::manager::ServerConfig config{state_->endpoint->address, state_->endpoint->authkey, state_->typeids,
                                       lifeline[0]};
  const auto& dir = state_->directory;
  auto body = [&config, &dir, fd = report[1], keep = lifeline[1]] {
    ::close(keep);
    return serve_in_child(config, fd, dir);
  };
  auto spawn_target = [&] {
    return detail::make_spawn_target(&spawned_server,
                                     std::make_tuple(detail::Descriptor{report[1]}, detail::Descriptor{lifeline[0]},
                                                     config.address, config.authkey, crossing_typeids(*config.typeids),
                                                     dir));
  };
  detail::Forked child{};
  try {
    auto identity = detail::next_child_identity();
    auto name = "SyncManager-" + std::to_string(identity.back());
    child = detail::start_child(method, {std::move(name), false, std::move(identity)}, body, spawn_target, {report[1]});
  } catch (...) {
    for (int fd : {report[0], report[1], lifeline[0], lifeline[1]}) ::close(fd);
    throw;
  }
  ::close(report[1]);
  ::close(lifeline[0]);
  detail::register_internal_fd(lifeline[1]);  // our other children must not keep the server alive
  std::string text;
  try {
    text = read_report(report[0]);
  } catch (...) {
    ::close(report[0]);
    reap_server(child, std::chrono::milliseconds(0));
    close_internal_fd(lifeline[1]);
    throw;
  }
  ::close(report[0]);
  if (text.rfind("ok ", 0) != 0) {
    reap_server(child, shutdown_step);  // it reported its failure and is on its way out
    close_internal_fd(lifeline[1]);
    throw_start_failure(text);
  }
  state_->server = child;
  state_->lifeline = lifeline[1];
  state_->endpoint = std::make_shared<detail::ManagerEndpoint>(detail::ManagerEndpoint{text.substr(3), state_->endpoint->authkey});
}

ManagerServer BaseManager::get_server() {
  if (!state_) throw ValueError("this manager was moved from");
  return ManagerServer(state_->endpoint->address, state_->endpoint->authkey, state_->typeids);
}

void BaseManager::connect() {
  if (!state_) throw ValueError("this manager was moved from");
  detail::manager_call<void>({state_->endpoint, detail::server_object_id}, "ping");
}

void BaseManager::shutdown() {
  if (!state_ || state_->owner != ::getpid()) return;
  if (state_->server) state_->stop_server();
  state_->remove_files();
  detail::log(LogLevel::info, "manager at {} shut down", state_->endpoint->address);
}

std::size_t BaseManager::number_of_objects() const {
  if (!state_) throw ValueError("this manager was moved from");
  return detail::manager_call<std::size_t>({state_->endpoint, detail::server_object_id}, "number_of_objects");
}

std::string BaseManager::debug_info() const {
  if (!state_) throw ValueError("this manager was moved from");
  return detail::manager_call<std::string>({state_->endpoint, detail::server_object_id}, "debug_info");
}

std::string BaseManager::address() const {
  if (!state_) throw ValueError("this manager was moved from");
  return state_->endpoint->address;
}

const std::string& BaseManager::authkey() const {
  if (!state_) throw ValueError("this manager was moved from");
  return state_->endpoint->authkey;
}

detail::ProxyRef BaseManager::create(std::string_view typeid_, const Object& args) const {
  if (!state_) throw ValueError("this manager was moved from");
  auto request = detail::encode_manager_request(detail::server_object_id, "create", typeid_, args);
  return detail::create_held(state_->endpoint, request);
}

void BaseManager::use_private_directory(std::string dir) {
  state_->endpoint->address = dir + "/manager.sock";
  state_->directory = std::move(dir);
}

// ---- Manager ----------------------------------------------------------------------------------

Manager::Manager() : Manager(ManagerOptions{}) {}

Manager::Manager(ManagerOptions options) : BaseManager({}, random_authkey(), options) {
  use_private_directory(private_directory());
  start();  // on failure ~BaseManager removes the directory
}

Manager::~Manager() = default;

} // namespace multiproc
