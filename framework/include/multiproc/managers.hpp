// mp::Manager, mp::BaseManager and their proxies — Python's multiprocessing.managers.
//
// A manager is a server process holding shared objects; a proxy names one of them (manager
// address + authkey + object id) and forwards each method call to it. Inside the server every
// object is owned by one actor, so calls on it run one at a time, in arrival order. Blocking calls
// (a queue's get, a lock's acquire, an event's wait, ...) wait in the server and time out there,
// so a call that timed out never loses an item or leaves a lock taken; a lock held by a client
// whose process dies is released. If the server dies, every call throws mp::Error at once.
//
// Proxies are cheap handles: copies name the same object. They work from any process and thread
// (each uses its own authenticated connection, opened on first use and again after a fork), can
// be Process arguments, and are MessagePack-serializable — the manager's address and authkey
// travel with them — so they can be Pool task arguments too. Objects are counted as CPython
// counts them: a process holds one reference per object it has proxies for, given back when its
// last copy goes or when the process ends (a crash too); an object nobody holds is freed. A proxy
// packed for another process (a Process or Pool task argument) carries a reference taken for the
// receiver, so the object cannot vanish in between; one stored inside another shared object keeps
// its referent for the server's lifetime, as CPython's does. Objects of a Scope::shared typeid
// live as long as the server.
//
// Manager (Python's SyncManager) starts its server in the constructor, on a Unix socket in a
// private (0700) directory with a random authkey; shutdown() or the destructor stops the server
// and removes the socket and directory. BaseManager serves typeids you register, on a Unix path or
// "host:port" (TCP), with the authkey you give: start() (server in a child process),
// get_server().serve_forever() (server in this process), connect() (a client of a server
// elsewhere). Every connection passes CPython's HMAC challenge first; a wrong key is
// AuthenticationError for that client only. Manager and BaseManager objects are not thread-safe;
// proxies are (each thread has its own connection).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>
#include <vector>

#include "multiproc/detail/manager_client.hpp"
#include "multiproc/detail/manager_registry.hpp"
#include "multiproc/object.hpp"
#include "multiproc/process.hpp"

namespace multiproc {

namespace detail {

// What every proxy is: a ProxyRef, calls on it, and its MessagePack form
// [address, authkey (bin), object id, transit token] (manager_client.hpp).
class ProxyBase {
public:
  ProxyBase() = default;
  explicit ProxyBase(ProxyRef ref) : ref_(std::move(ref)) {}
  std::uint64_t id() const noexcept { return ref_.id; }
  const ProxyRef& ref() const noexcept { return ref_; }
  friend bool operator==(const ProxyBase& a, const ProxyBase& b) {
    return a.ref_.id == b.ref_.id && a.ref_.endpoint && b.ref_.endpoint &&
           a.ref_.endpoint->address == b.ref_.endpoint->address;
  }

  template <class Packer>
  void msgpack_pack(Packer& p) const {
    const std::string empty;
    const auto& address = ref_.endpoint ? ref_.endpoint->address : empty;
    const auto& key = ref_.endpoint ? ref_.endpoint->authkey : empty;
    p.pack_array(4);
    p.pack(address);
    p.pack_bin(static_cast<std::uint32_t>(key.size()));
    p.pack_bin_body(key.data(), static_cast<std::uint32_t>(key.size()));
    p.pack(ref_.id);
    p.pack(take_transit_token(ref_));
  }
  void msgpack_unpack(const msgpack::object& o);

protected:
  template <class R = void, class... A>
  R invoke(std::string_view method, const A&... args) const {
    return manager_call<R>(ref_, method, args...);
  }
  // Calls whose reply is [value] or [] ("nothing there").
  template <class T, class... A>
  std::optional<T> invoke_optional(std::string_view method, const A&... args) const {
    auto found = invoke<std::vector<T>>(method, args...);
    if (found.empty()) return std::nullopt;
    return std::move(found.front());
  }

private:
  ProxyRef ref_;
};

// proxy[key] = value assigns; reading it converts to the value (KeyError/IndexError if absent).
template <class Proxy, class Key, class Value>
class ItemRef {
public:
  ItemRef(Proxy proxy, Key key) : proxy_(std::move(proxy)), key_(std::move(key)) {}
  ItemRef& operator=(const Value& value) {
    proxy_.set(key_, value);
    return *this;
  }
  ItemRef& operator=(const ItemRef& other) { return *this = static_cast<Value>(other); }
  operator Value() const { return proxy_.at(key_); }
  Value value() const { return proxy_.at(key_); }

private:
  Proxy proxy_;
  Key key_;
};

using Seconds = std::chrono::duration<double>;

} // namespace detail

// Python's DictProxy. K and V may be mp::Object for Python's mixed-type dicts.
template <class K, class V>
class DictProxy : public detail::ProxyBase {
public:
  using ProxyBase::ProxyBase;
  void set(const K& key, const V& value) const { invoke("set", key, value); }
  V at(const K& key) const { return invoke<V>("getitem", key); }  // KeyError
  std::optional<V> get(const K& key) const { return invoke_optional<V>("get", key); }
  V get(const K& key, const V& fallback) const { return get(key).value_or(fallback); }
  auto operator[](const K& key) const { return detail::ItemRef<DictProxy, K, V>(*this, key); }
  bool contains(const K& key) const { return invoke<bool>("contains", key); }
  std::size_t size() const { return invoke<std::size_t>("len"); }
  bool erase(const K& key) const { return invoke<bool>("erase", key); }
  V pop(const K& key) const { return invoke<V>("pop", key); }  // KeyError
  std::vector<K> keys() const { return invoke<std::vector<K>>("keys"); }
  std::vector<V> values() const { return invoke<std::vector<V>>("values"); }
  std::vector<std::pair<K, V>> items() const { return invoke<std::vector<std::pair<K, V>>>("items"); }
  std::map<K, V> copy() const { return invoke<std::map<K, V>>("copy"); }
  void update(const std::map<K, V>& other) const { invoke("update", other); }
  void clear() const { invoke("clear"); }
};

// Python's ListProxy. Negative indexes count from the end.
template <class T>
class ListProxy : public detail::ProxyBase {
public:
  using ProxyBase::ProxyBase;
  void append(const T& value) const { invoke("append", value); }
  void extend(const std::vector<T>& values) const { invoke("extend", values); }
  T at(std::ptrdiff_t i) const { return invoke<T>("getitem", static_cast<std::int64_t>(i)); }  // IndexError
  void set(std::ptrdiff_t i, const T& value) const { invoke("setitem", static_cast<std::int64_t>(i), value); }
  auto operator[](std::ptrdiff_t i) const { return detail::ItemRef<ListProxy, std::ptrdiff_t, T>(*this, i); }
  std::size_t size() const { return invoke<std::size_t>("len"); }
  T pop(std::ptrdiff_t i = -1) const { return invoke<T>("pop", static_cast<std::int64_t>(i)); }  // IndexError
  void insert(std::ptrdiff_t i, const T& value) const { invoke("insert", static_cast<std::int64_t>(i), value); }
  void remove(const T& value) const { invoke("remove", value); }                       // ValueError
  std::size_t index(const T& value) const { return invoke<std::size_t>("index", value); }  // ValueError
  std::size_t count(const T& value) const { return invoke<std::size_t>("count", value); }
  void clear() const { invoke("clear"); }
  std::vector<T> copy() const { return invoke<std::vector<T>>("copy"); }
};

// A Namespace's attributes; get() of a missing one is AttributeError.
class NamespaceProxy : public detail::ProxyBase {
public:
  using ProxyBase::ProxyBase;
  template <class T>
  void set(std::string_view attr, const T& value) const {
    invoke("set", attr, value);
  }
  template <class T = Object>
  T get(std::string_view attr) const {
    return invoke<T>("get", attr);
  }
  bool has(std::string_view attr) const { return invoke<bool>("has", attr); }
  void del(std::string_view attr) const { invoke("del", attr); }  // AttributeError
};

// The methods of Queue<T>, served by the manager. get(timeout)/put(timeout) time out in the
// server (Empty/Full), so nothing is lost when they do. close(), join_thread() and
// cancel_join_thread() have nothing to do: a proxy buffers nothing.
template <class T>
class QueueProxy : public detail::ProxyBase {
public:
  using ProxyBase::ProxyBase;
  void put(const T& item) const { invoke("put", item, detail::NoTimeout{}); }
  template <class Rep, class Period>
  void put(const T& item, std::chrono::duration<Rep, Period> timeout) const {
    invoke("put", item, detail::timeout_seconds(timeout));
  }
  void put_nowait(const T& item) const { invoke("put", item, 0.0); }  // Full
  T get() const { return invoke<T>("get", detail::NoTimeout{}); }
  template <class Rep, class Period>
  T get(std::chrono::duration<Rep, Period> timeout) const {  // Empty
    return invoke<T>("get", detail::timeout_seconds(timeout));
  }
  T get_nowait() const { return invoke<T>("get", 0.0); }  // Empty
  std::optional<T> try_get() const { return invoke_optional<T>("try_get"); }
  std::size_t qsize() const { return invoke<std::size_t>("qsize"); }
  bool empty() const { return invoke<bool>("empty"); }
  bool full() const { return invoke<bool>("full"); }
  void close() const {}
  void join_thread() const {}
  void cancel_join_thread() const {}
};

template <class T>
class JoinableQueueProxy : public QueueProxy<T> {
public:
  using QueueProxy<T>::QueueProxy;
  void task_done() const { this->invoke("task_done"); }  // ValueError when called too often
  void join() const { this->template invoke<bool>("join", detail::NoTimeout{}); }
  template <class Rep, class Period>
  bool join(std::chrono::duration<Rep, Period> timeout) const {
    return this->template invoke<bool>("join", detail::timeout_seconds(timeout));
  }
};

namespace detail {
// acquire/release and the Lockable trio, shared by every lock-like proxy.
class AcquirableProxy : public ProxyBase {
public:
  using ProxyBase::ProxyBase;
  void acquire() const { invoke<bool>("acquire", NoTimeout{}); }
  template <class Rep, class Period>
  bool acquire(std::chrono::duration<Rep, Period> timeout) const {
    return invoke<bool>("acquire", timeout_seconds(timeout));
  }
  bool try_acquire() const { return invoke<bool>("acquire", 0.0); }
  void release() const { invoke("release"); }  // ValueError when not held (by this thread, for RLock)
  void lock() const { acquire(); }
  void unlock() const { release(); }
  bool try_lock() const { return try_acquire(); }
};
} // namespace detail

class LockProxy : public detail::AcquirableProxy {
public:
  using AcquirableProxy::AcquirableProxy;
};
class RLockProxy : public detail::AcquirableProxy {
public:
  using AcquirableProxy::AcquirableProxy;
};
class SemaphoreProxy : public detail::AcquirableProxy {
public:
  using AcquirableProxy::AcquirableProxy;
  int get_value() const { return invoke<int>("get_value"); }
};
class BoundedSemaphoreProxy : public SemaphoreProxy {
public:
  using SemaphoreProxy::SemaphoreProxy;
};

// A condition variable with its own reentrant lock (Lockable through it).
class ConditionProxy : public detail::AcquirableProxy {
public:
  using AcquirableProxy::AcquirableProxy;
  void wait() const { invoke<bool>("wait", detail::NoTimeout{}); }  // ValueError unless held
  template <class Rep, class Period>
  bool wait(std::chrono::duration<Rep, Period> timeout) const {
    return invoke<bool>("wait", detail::timeout_seconds(timeout));
  }
  // Python's wait_for: waits until pred() holds or the timeout passes; pred()'s last value.
  template <class Pred>
  bool wait_for(Pred pred, std::optional<detail::Seconds> timeout = {}) const {
    auto end = timeout ? std::optional(std::chrono::steady_clock::now() + *timeout) : std::nullopt;
    bool result = pred();
    while (!result) {
      if (end) {
        auto left = std::chrono::duration_cast<detail::Seconds>(*end - std::chrono::steady_clock::now());
        if (left <= detail::Seconds::zero()) break;
        wait(left);
      } else {
        wait();
      }
      result = pred();
    }
    return result;
  }
  void notify(int n = 1) const { invoke("notify", n); }
  void notify_all() const { invoke("notify_all"); }
};

class EventProxy : public detail::ProxyBase {
public:
  using ProxyBase::ProxyBase;
  void set() const { invoke("set"); }
  void clear() const { invoke("clear"); }
  bool is_set() const { return invoke<bool>("is_set"); }
  void wait() const { invoke<bool>("wait", detail::NoTimeout{}); }
  template <class Rep, class Period>
  bool wait(std::chrono::duration<Rep, Period> timeout) const {
    return invoke<bool>("wait", detail::timeout_seconds(timeout));
  }
};

// A party that times out, or whose process dies while waiting, breaks the barrier
// (BrokenBarrierError for every waiter).
class BarrierProxy : public detail::ProxyBase {
public:
  using ProxyBase::ProxyBase;
  int wait() const { return invoke<int>("wait", detail::NoTimeout{}); }
  template <class Rep, class Period>
  int wait(std::chrono::duration<Rep, Period> timeout) const {
    return invoke<int>("wait", detail::timeout_seconds(timeout));
  }
  void reset() const { invoke("reset"); }
  void abort() const { invoke("abort"); }
  int parties() const { return invoke<int>("parties"); }
  int n_waiting() const { return invoke<int>("n_waiting"); }
  bool broken() const { return invoke<bool>("broken"); }
};

template <class T>
class ValueProxy : public detail::ProxyBase {
public:
  using ProxyBase::ProxyBase;
  T get() const { return invoke<T>("get"); }
  void set(const T& value) const { invoke("set", value); }
};

template <class T>
class ArrayProxy : public detail::ProxyBase {
public:
  using ProxyBase::ProxyBase;
  T at(std::size_t i) const { return invoke<T>("getitem", static_cast<std::int64_t>(i)); }  // IndexError
  void set(std::size_t i, const T& value) const { invoke("setitem", static_cast<std::int64_t>(i), value); }
  auto operator[](std::size_t i) const { return detail::ItemRef<ArrayProxy, std::size_t, T>(*this, i); }
  std::size_t size() const { return invoke<std::size_t>("len"); }
  std::vector<T> copy() const { return invoke<std::vector<T>>("copy"); }
};

// Python's AutoProxy: any method a registered class exposes, called by name.
class AutoProxy : public detail::ProxyBase {
public:
  using ProxyBase::ProxyBase;
  template <class R = Object, class... A>
  R call(std::string_view method, const A&... args) const {  // AttributeError if not exposed
    return invoke<R>(method, args...);
  }
};

// ---- BaseManager ------------------------------------------------------------------------------

// The built-in object kinds a typeid can serve (Manager's factories use them too).
enum class Builtin { dict, list, Namespace, Queue, JoinableQueue, Lock, RLock, Semaphore, BoundedSemaphore,
                     Condition, Event, Barrier, Value, Array };
// per_call: every proxy() call makes a new object (Python's default); shared: all callers get the
// one object made on first use (the seed's job queues, registered with a callable that returns
// the same queue).
enum class Scope { per_call, shared };

// Exposes methods of a registered class T by name; returned by BaseManager::register_class.
template <class T>
class ClassRegistration {
public:
  explicit ClassRegistration(std::shared_ptr<detail::ExposedClass> cls) : cls_(std::move(cls)) {}
  template <class R, class... A>
  ClassRegistration& expose(std::string name, R (T::*method)(A...)) {
    cls_->methods[std::move(name)] = detail::expose_method<T, R, A...>(method);
    return *this;
  }
  template <class R, class... A>
  ClassRegistration& expose(std::string name, R (T::*method)(A...) const) {
    cls_->methods[std::move(name)] = detail::expose_method<T, R, A...>(method);
    return *this;
  }

private:
  std::shared_ptr<detail::ExposedClass> cls_;
};

// A server running in this process (BaseManager::get_server()).
class ManagerServer {
public:
  ManagerServer(std::string address, std::string authkey, std::shared_ptr<const detail::TypeidRegistry> typeids);
  // Serves for as long as this process runs (end it with a signal, as Python's serve_forever
  // ends with Ctrl-C). on_ready gets the bound address ("host:port" with the real port for
  // "host:0") once clients can connect. Throws OSError when it cannot listen.
  void serve_forever(const std::function<void(const std::string&)>& on_ready = {});

private:
  std::string address_, authkey_;
  std::shared_ptr<const detail::TypeidRegistry> typeids_;
};

// Serving a queue every worker shares, and a class of your own:
//
//   mp::BaseManager server("0.0.0.0:58881", "jobs");
//   server.register_typeid("get_job_queue", mp::Builtin::Queue, mp::Scope::shared);
//   server.register_class<Counter>("Counter").expose("add", &Counter::add).expose("get", &Counter::get);
//   server.start();
//
//   mp::BaseManager client("master-host:58881", "jobs");     // on another host
//   client.connect();
//   auto jobs = client.proxy<mp::QueueProxy<Job>>("get_job_queue");
//   int n = client.proxy("Counter").call<int>("add", 5);    // an AutoProxy
// How a manager's server process starts: start_method as Process's (nullopt: get_start_method()
// when the server starts). Under spawn and forkserver a BaseManager can serve built-in typeids
// only: a registered class (its factory and methods) cannot reach a fresh process (ValueError
// from start()).
struct ManagerOptions {
  std::optional<StartMethod> start_method{};
};

class BaseManager {
public:
  // address: a Unix socket path or "host:port"; authkey: the shared secret of every connection.
  BaseManager(std::string address, std::string authkey);
  BaseManager(std::string address, std::string authkey, ManagerOptions options);
  virtual ~BaseManager();  // shuts down a server this manager started
  BaseManager(BaseManager&&) noexcept;
  BaseManager& operator=(BaseManager&&) noexcept;

  // Registration, before start() or get_server(). defaults: the built-in's factory arguments
  // (a Queue's maxsize, a Value's initial value, ...), used when a caller passes none.
  template <class... A>
  void register_typeid(std::string typeid_, Builtin kind, Scope scope = Scope::per_call, const A&... defaults) {
    add_builtin(std::move(typeid_), kind, scope, detail::encode(std::make_tuple(defaults...)));
  }
  // A class T made by factory in the server; expose its methods on the result.
  template <class T>
  ClassRegistration<T> register_class(std::string typeid_, Scope scope = Scope::per_call,
                                      std::function<T()> factory = [] { return T{}; }) {
    auto cls = std::make_shared<detail::ExposedClass>();
    cls->name = typeid_;
    cls->make = [factory = std::move(factory)] { return std::static_pointer_cast<void>(std::make_shared<T>(factory())); };
    add_class(std::move(typeid_), scope, cls);
    return ClassRegistration<T>(cls);
  }

  // The server in a child process; ProcessError if already started; ValueError (spawn,
  // forkserver) when a registered class cannot cross.
  void start();
  ManagerServer get_server(); // the server for this process to run (serve_forever)
  void connect();             // checks the server answers; AuthenticationError on a wrong key
  // Stops a server started with start() (asking it, then SIGTERM, then SIGKILL, 2 s apart) and
  // removes its files. A manager that only connect()ed leaves the server running, as Python's;
  // so does a copy of the manager in a child process. Idempotent.
  void shutdown();

  // A proxy to the object typeid_ gives (a new one, or the shared one); built-in kinds ("Queue",
  // "dict", ...) need no registration. ValueError for an unknown typeid.
  template <class P = AutoProxy, class... A>
  P proxy(std::string_view typeid_, const A&... args) const {
    return P(create(typeid_, Object(Object::Array{Object(args)...})));
  }

  // CPython's _number_of_objects and _debug_info: the objects the server holds now, and one line
  // "<id> <typeid> refs=<n>" for each.
  std::size_t number_of_objects() const;
  std::string debug_info() const;

  std::string address() const;  // the bound address once started
  const std::string& authkey() const;

protected:
  detail::ProxyRef create(std::string_view typeid_, const Object& args) const;
  // Listen on a socket inside dir, a private directory removed with everything in it at shutdown.
  void use_private_directory(std::string dir);

private:
  void add_builtin(std::string typeid_, Builtin kind, Scope scope, std::string encoded_defaults);
  void add_class(std::string typeid_, Scope scope, std::shared_ptr<detail::ExposedClass> cls);
  struct State;
  std::unique_ptr<State> state_;
};

// ---- Manager ----------------------------------------------------------------------------------

// Python's SyncManager, started: its server runs from the constructor to shutdown()/destructor.
class Manager : public BaseManager {
public:
  Manager();
  explicit Manager(ManagerOptions options);
  ~Manager() override;
  Manager(Manager&&) noexcept = default;
  Manager& operator=(Manager&&) noexcept = default;

  template <class K, class V>
  DictProxy<K, V> dict() const {
    return proxy<DictProxy<K, V>>("dict");
  }
  template <class K, class V>
  DictProxy<K, V> dict(const std::map<K, V>& init) const {
    auto d = dict<K, V>();
    d.update(init);
    return d;
  }
  template <class T>
  ListProxy<T> list(const std::vector<T>& init = {}) const {
    return proxy<ListProxy<T>>("list", init);
  }
  NamespaceProxy Namespace() const { return proxy<NamespaceProxy>("Namespace"); }
  template <class T>
  QueueProxy<T> Queue(std::size_t maxsize = 0) const {
    return proxy<QueueProxy<T>>("Queue", maxsize);
  }
  template <class T>
  JoinableQueueProxy<T> JoinableQueue(std::size_t maxsize = 0) const {
    return proxy<JoinableQueueProxy<T>>("JoinableQueue", maxsize);
  }
  LockProxy Lock() const { return proxy<LockProxy>("Lock"); }
  RLockProxy RLock() const { return proxy<RLockProxy>("RLock"); }
  SemaphoreProxy Semaphore(int value = 1) const { return proxy<SemaphoreProxy>("Semaphore", value); }
  BoundedSemaphoreProxy BoundedSemaphore(int value = 1) const {
    return proxy<BoundedSemaphoreProxy>("BoundedSemaphore", value);
  }
  ConditionProxy Condition() const { return proxy<ConditionProxy>("Condition"); }
  EventProxy Event() const { return proxy<EventProxy>("Event"); }
  BarrierProxy Barrier(int parties) const { return proxy<BarrierProxy>("Barrier", parties); }
  template <class T>
  ValueProxy<T> Value(T init) const {
    return proxy<ValueProxy<T>>("Value", init);
  }
  template <class T>
  ArrayProxy<T> Array(std::vector<T> init) const {
    return proxy<ArrayProxy<T>>("Array", init);
  }
};

} // namespace multiproc
