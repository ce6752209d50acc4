#include "actors/manager_objects.hpp"

#include <algorithm>
#include <atomic>
#include <deque>
#include <list>
#include <map>
#include <unordered_map>
#include <vector>

#include "multiproc/errors.hpp"

namespace multiproc::detail::manager {

namespace {

// ---- calls: arguments, method tables, parked waiters ----------------------------------------

const msgpack::object& arg_object(const Call& call, std::size_t i) {
  const auto& a = call.args();
  if (a.type != msgpack::type::ARRAY || i >= a.via.array.size)
    throw TypeError(call.method + "() is missing argument " + std::to_string(i + 1));
  return a.via.array.ptr[i];
}
template <class T>
T arg(const Call& call, std::size_t i) {
  return convert<T>(arg_object(call, i));
}
// A blocking call's timeout: nullopt blocks, 0 does not wait at all.
std::optional<double> timeout_arg(const Call& call, std::size_t i) {
  return arg<std::optional<double>>(call, i);
}
std::ptrdiff_t normalize_index(std::int64_t i, std::size_t size) {
  return static_cast<std::ptrdiff_t>(i < 0 ? i + static_cast<std::int64_t>(size) : i);
}

template <class Self>
using MethodTable = std::unordered_map<std::string_view, void (Self::*)(Call&, Host&)>;

template <class Self>
void dispatch(Self& self, const MethodTable<Self>& table, Call& call, Host& host, std::string_view kind) {
  auto it = table.find(call.method);
  if (it == table.end())
    throw AttributeError("'" + std::string(kind) + "' object has no attribute '" + call.method + "'");
  (self.*(it->second))(call, host);
}

// Timer tokens are unique in the server, so an object can tell which of its waiters timed out.
std::uint64_t next_token() {
  static std::atomic<std::uint64_t> counter{0};
  return ++counter;
}

struct Waiter {
  Call call;
  std::uint64_t token = 0;
  Object item;           // a parked put's item
  std::int64_t count = 0;  // a condition waiter's saved recursion count
  bool result = true;    // what a condition waiter answers once it has the lock back
};

// Calls parked until the object can answer them, oldest first.
class WaitList {
public:
  Waiter& park(Call& call, std::optional<double> timeout, Host& host) {
    Waiter w{std::move(call), next_token(), {}, 0, true};
    if (timeout) host.arm_timer(std::chrono::duration<double>(*timeout), w.token);
    return waiters_.emplace_back(std::move(w));
  }
  void push(Waiter w) { waiters_.push_back(std::move(w)); }
  bool empty() const { return waiters_.empty(); }
  std::size_t size() const { return waiters_.size(); }
  Waiter pop_front() {
    Waiter w = std::move(waiters_.front());
    waiters_.pop_front();
    return w;
  }
  std::optional<Waiter> take(std::uint64_t token) {
    auto it = std::find_if(waiters_.begin(), waiters_.end(), [&](const Waiter& w) { return w.token == token; });
    if (it == waiters_.end()) return std::nullopt;
    Waiter w = std::move(*it);
    waiters_.erase(it);
    return w;
  }
  void drop_session(SessionId s) {
    waiters_.remove_if([s](const Waiter& w) { return w.call.session() == s; });
  }
  bool has_session(SessionId s) const {
    return std::any_of(waiters_.begin(), waiters_.end(), [s](const Waiter& w) { return w.call.session() == s; });
  }
  template <class F>
  void drain(F&& f) {
    while (!waiters_.empty()) f(pop_front());
  }

private:
  std::list<Waiter> waiters_;
};

bool no_wait(std::optional<double> timeout) { return timeout && *timeout <= 0; }

// ---- dict, list, Namespace, Value, Array ----------------------------------------------------

// A dict that keeps insertion order, as Python's does.
class DictObject final : public SharedObject {
public:
  void handle(Call& c, Host& h) override {
    static const MethodTable<DictObject> table{
        {"set", &DictObject::set},       {"getitem", &DictObject::getitem}, {"get", &DictObject::get},
        {"contains", &DictObject::contains}, {"len", &DictObject::len},   {"erase", &DictObject::erase},
        {"pop", &DictObject::pop},       {"keys", &DictObject::keys},       {"values", &DictObject::values},
        {"items", &DictObject::items},   {"copy", &DictObject::copy},       {"update", &DictObject::update},
        {"clear", &DictObject::clear}};
    dispatch(*this, table, c, h, "dict");
  }

private:
  using Entries = std::list<std::pair<Object, Object>>;

  void assign(Object key, Object value) {
    auto it = index_.find(key);
    if (it != index_.end()) {
      it->second->second = std::move(value);
      return;
    }
    entries_.emplace_back(key, std::move(value));
    index_.emplace(std::move(key), std::prev(entries_.end()));
  }
  Entries::iterator find_or_throw(const Object& key) {
    auto it = index_.find(key);
    if (it == index_.end()) throw KeyError(key.repr());
    return it->second;
  }
  void remove(const Object& key) {
    auto it = index_.find(key);
    entries_.erase(it->second);
    index_.erase(it);
  }

  void set(Call& c, Host&) {
    assign(arg<Object>(c, 0), arg<Object>(c, 1));
    reply_ok(c);
  }
  void getitem(Call& c, Host&) { reply_ok(c, find_or_throw(arg<Object>(c, 0))->second); }
  // [value] when present, [] when not: a present nil and a missing key must differ.
  void get(Call& c, Host&) {
    auto it = index_.find(arg<Object>(c, 0));
    reply_ok(c, it == index_.end() ? Object::Array{} : Object::Array{it->second->second});
  }
  void contains(Call& c, Host&) { reply_ok(c, index_.count(arg<Object>(c, 0)) > 0); }
  void len(Call& c, Host&) { reply_ok(c, entries_.size()); }
  void erase(Call& c, Host&) {
    auto key = arg<Object>(c, 0);
    bool present = index_.count(key) > 0;
    if (present) remove(key);
    reply_ok(c, present);
  }
  void pop(Call& c, Host&) {
    auto key = arg<Object>(c, 0);
    Object value = std::move(find_or_throw(key)->second);
    remove(key);
    reply_ok(c, value);
  }
  template <class F>
  Object::Array collect(F&& f) const {
    Object::Array out;
    out.reserve(entries_.size());
    for (const auto& e : entries_) out.push_back(f(e));
    return out;
  }
  void keys(Call& c, Host&) { reply_ok(c, collect([](const auto& e) { return e.first; })); }
  void values(Call& c, Host&) { reply_ok(c, collect([](const auto& e) { return e.second; })); }
  void items(Call& c, Host&) {
    reply_ok(c, collect([](const auto& e) { return Object(Object::Array{e.first, e.second}); }));
  }
  void copy(Call& c, Host&) { reply_ok(c, Object(Object::Map(entries_.begin(), entries_.end()))); }
  void update(Call& c, Host&) {
    auto other = arg<Object>(c, 0);
    if (other.kind() != Object::Kind::map) throw TypeError("dict.update() expects a map");
    for (const auto& [k, v] : other.as_map()) assign(k, v);
    reply_ok(c);
  }
  void clear(Call& c, Host&) {
    entries_.clear();
    index_.clear();
    reply_ok(c);
  }

  Entries entries_;
  std::map<Object, Entries::iterator> index_;
};

// Shared by list and Array: a sequence with Python's indexing.
class SequenceBase : public SharedObject {
protected:
  explicit SequenceBase(std::string kind) : kind_(std::move(kind)) {}
  std::size_t checked_index(std::int64_t i) const {
    auto n = normalize_index(i, items_.size());
    if (n < 0 || static_cast<std::size_t>(n) >= items_.size()) throw IndexError(kind_ + " index out of range");
    return static_cast<std::size_t>(n);
  }
  void getitem(Call& c, Host&) { reply_ok(c, items_[checked_index(arg<std::int64_t>(c, 0))]); }
  void setitem(Call& c, Host&) {
    items_[checked_index(arg<std::int64_t>(c, 0))] = arg<Object>(c, 1);
    reply_ok(c);
  }
  void len(Call& c, Host&) { reply_ok(c, items_.size()); }
  void copy(Call& c, Host&) { reply_ok(c, items_); }

  std::string kind_;
  Object::Array items_;
};

class ListObject final : public SequenceBase {
public:
  explicit ListObject(Object::Array init) : SequenceBase("list") { items_ = std::move(init); }
  void handle(Call& c, Host& h) override {
    static const MethodTable<ListObject> table{
        {"append", &ListObject::append}, {"extend", &ListObject::extend}, {"getitem", &ListObject::getitem},
        {"setitem", &ListObject::setitem}, {"len", &ListObject::len},     {"pop", &ListObject::pop},
        {"insert", &ListObject::insert}, {"remove", &ListObject::remove}, {"index", &ListObject::index},
        {"count", &ListObject::count},   {"clear", &ListObject::clear},   {"copy", &ListObject::copy}};
    dispatch(*this, table, c, h, "list");
  }

private:
  void append(Call& c, Host&) {
    items_.push_back(arg<Object>(c, 0));
    reply_ok(c);
  }
  void extend(Call& c, Host&) {
    auto more = arg<Object::Array>(c, 0);
    items_.insert(items_.end(), std::make_move_iterator(more.begin()), std::make_move_iterator(more.end()));
    reply_ok(c);
  }
  void pop(Call& c, Host&) {
    if (items_.empty()) throw IndexError("pop from empty list");
    auto n = normalize_index(arg<std::int64_t>(c, 0), items_.size());
    if (n < 0 || static_cast<std::size_t>(n) >= items_.size()) throw IndexError("pop index out of range");
    Object value = std::move(items_[static_cast<std::size_t>(n)]);
    items_.erase(items_.begin() + n);
    reply_ok(c, value);
  }
  // Python clamps insert positions to the list.
  void insert(Call& c, Host&) {
    auto n = std::clamp<std::ptrdiff_t>(normalize_index(arg<std::int64_t>(c, 0), items_.size()), 0,
                                        static_cast<std::ptrdiff_t>(items_.size()));
    items_.insert(items_.begin() + n, arg<Object>(c, 1));
    reply_ok(c);
  }
  Object::Array::iterator find_or_throw(const Object& value, const char* what) {
    auto it = std::find(items_.begin(), items_.end(), value);
    if (it == items_.end()) throw ValueError(value.repr() + what);
    return it;
  }
  void remove(Call& c, Host&) {
    items_.erase(find_or_throw(arg<Object>(c, 0), " is not in list (list.remove)"));
    reply_ok(c);
  }
  void index(Call& c, Host&) {
    reply_ok(c, static_cast<std::size_t>(find_or_throw(arg<Object>(c, 0), " is not in list") - items_.begin()));
  }
  void count(Call& c, Host&) {
    auto value = arg<Object>(c, 0);
    reply_ok(c, static_cast<std::size_t>(std::count(items_.begin(), items_.end(), value)));
  }
  void clear(Call& c, Host&) {
    items_.clear();
    reply_ok(c);
  }
};

class ArrayObject final : public SequenceBase {
public:
  explicit ArrayObject(Object::Array init) : SequenceBase("array") { items_ = std::move(init); }
  void handle(Call& c, Host& h) override {
    static const MethodTable<ArrayObject> table{{"getitem", &ArrayObject::getitem},
                                                {"setitem", &ArrayObject::setitem},
                                                {"len", &ArrayObject::len},
                                                {"copy", &ArrayObject::copy}};
    dispatch(*this, table, c, h, "Array");
  }
};

class NamespaceObject final : public SharedObject {
public:
  void handle(Call& c, Host& h) override {
    static const MethodTable<NamespaceObject> table{{"set", &NamespaceObject::set},
                                                    {"get", &NamespaceObject::get},
                                                    {"has", &NamespaceObject::has},
                                                    {"del", &NamespaceObject::del}};
    dispatch(*this, table, c, h, "Namespace");
  }

private:
  std::map<std::string, Object>::iterator find_or_throw(const std::string& name) {
    auto it = attrs_.find(name);
    if (it == attrs_.end()) throw AttributeError("'Namespace' object has no attribute '" + name + "'");
    return it;
  }
  void set(Call& c, Host&) {
    attrs_[arg<std::string>(c, 0)] = arg<Object>(c, 1);
    reply_ok(c);
  }
  void get(Call& c, Host&) { reply_ok(c, find_or_throw(arg<std::string>(c, 0))->second); }
  void has(Call& c, Host&) { reply_ok(c, attrs_.count(arg<std::string>(c, 0)) > 0); }
  void del(Call& c, Host&) {
    attrs_.erase(find_or_throw(arg<std::string>(c, 0)));
    reply_ok(c);
  }

  std::map<std::string, Object> attrs_;
};

class ValueObject final : public SharedObject {
public:
  explicit ValueObject(Object init) : value_(std::move(init)) {}
  void handle(Call& c, Host& h) override {
    static const MethodTable<ValueObject> table{{"get", &ValueObject::get}, {"set", &ValueObject::set}};
    dispatch(*this, table, c, h, "Value");
  }

private:
  void get(Call& c, Host&) { reply_ok(c, value_); }
  void set(Call& c, Host&) {
    value_ = arg<Object>(c, 0);
    reply_ok(c);
  }
  Object value_;
};

// ---- Queue and JoinableQueue ----------------------------------------------------------------

class QueueObject final : public SharedObject {
public:
  QueueObject(std::size_t maxsize, bool joinable) : maxsize_(maxsize), joinable_(joinable) {}
  void handle(Call& c, Host& h) override {
    static const MethodTable<QueueObject> table{
        {"put", &QueueObject::put},         {"get", &QueueObject::get},     {"try_get", &QueueObject::try_get},
        {"qsize", &QueueObject::qsize},     {"empty", &QueueObject::empty}, {"full", &QueueObject::full},
        {"task_done", &QueueObject::task_done}, {"join", &QueueObject::join}};
    if (!joinable_ && (c.method == "task_done" || c.method == "join"))
      throw AttributeError("'Queue' object has no attribute '" + c.method + "' (use a JoinableQueue)");
    dispatch(*this, table, c, h, joinable_ ? "JoinableQueue" : "Queue");
  }
  void session_closed(SessionId s) override {
    getters_.drop_session(s);
    putters_.drop_session(s);
    joiners_.drop_session(s);
    write_off_held(s);
    settle();
  }
  void timer_fired(std::uint64_t token) override {
    if (auto w = getters_.take(token)) w->call.sink->deliver(encode_error(errc::empty, "queue is empty"));
    if (auto w = putters_.take(token)) w->call.sink->deliver(encode_error(errc::full, "queue is full"));
    if (auto w = joiners_.take(token)) reply_ok(w->call, false);
  }

private:
  bool is_full() const { return maxsize_ > 0 && items_.size() >= maxsize_; }
  void enqueue(Object item) {
    items_.push_back(std::move(item));
    ++unfinished_;
  }
  // Hands items to parked getters and admits parked putters until neither can move.
  void settle() {
    for (;;) {
      if (!items_.empty() && !getters_.empty()) {
        Waiter w = getters_.pop_front();
        reply_ok(w.call, items_.front());
        items_.pop_front();
        took(w.call);
      } else if (!putters_.empty() && !is_full()) {
        Waiter w = putters_.pop_front();
        enqueue(std::move(w.item));
        reply_ok(w.call);
      } else {
        return;
      }
    }
  }
  void put(Call& c, Host& h) {
    auto item = arg<Object>(c, 0);
    auto timeout = timeout_arg(c, 1);
    if (!is_full()) {
      enqueue(std::move(item));
      reply_ok(c);
      settle();
      return;
    }
    if (no_wait(timeout)) throw Full("queue is full");
    putters_.park(c, timeout, h).item = std::move(item);
  }
  void get(Call& c, Host& h) {
    auto timeout = timeout_arg(c, 0);
    if (!items_.empty()) {
      reply_ok(c, items_.front());
      items_.pop_front();
      took(c);
      settle();
      return;
    }
    if (no_wait(timeout)) throw Empty("queue is empty");
    getters_.park(c, timeout, h);
  }
  // [item] or [] without waiting: "nothing yet" is a value.
  void try_get(Call& c, Host&) {
    if (items_.empty()) return reply_ok(c, Object::Array{});
    reply_ok(c, Object::Array{std::move(items_.front())});
    items_.pop_front();
    took(c);
    settle();
  }
  void qsize(Call& c, Host&) { reply_ok(c, items_.size()); }
  void empty(Call& c, Host&) { reply_ok(c, items_.empty()); }
  void full(Call& c, Host&) { reply_ok(c, is_full()); }
  void task_done(Call& c, Host&) {
    if (unfinished_ == 0) throw ValueError("task_done() called too many times");
    done_with_one(c.session());
    if (--unfinished_ == 0) joiners_.drain([](Waiter w) { reply_ok(w.call, true); });
    reply_ok(c);
  }
  void join(Call& c, Host& h) {
    if (unreported_death_)
      return c.sink->deliver(encode_error(errc::process_error, *std::exchange(unreported_death_, std::nullopt)));
    auto timeout = timeout_arg(c, 0);
    if (unfinished_ == 0) return reply_ok(c, true);
    if (no_wait(timeout)) return reply_ok(c, false);
    joiners_.park(c, timeout, h);
  }

  // JoinableQueue: who holds the items got and not yet done.
  void took(const Call& c) {
    if (!joinable_) return;
    auto& holder = held_[c.session()];
    holder.pid = c.peer_pid();
    ++holder.count;
  }
  // An item is done: one the caller holds, else another holder's (an item got in one process
  // may be marked done in another).
  void done_with_one(SessionId s) {
    auto it = held_.find(s);
    if (it == held_.end()) it = held_.begin();
    if (it == held_.end()) return;
    if (--it->second.count == 0) held_.erase(it);
  }
  // A session ended holding items: they will never be done. They are written off, and join()
  // raises ProcessError naming the dead consumer, as the local JoinableQueue does: every join()
  // waiting now, or the next one to come if none is.
  void write_off_held(SessionId s) {
    auto it = held_.find(s);
    if (it == held_.end()) return;
    Holder holder = it->second;
    held_.erase(it);
    std::size_t count = std::min(holder.count, unfinished_);
    if (count == 0) return;
    unfinished_ -= count;
    std::string message = "JoinableQueue.join: consumer process " +
                          (holder.pid > 0 ? std::to_string(holder.pid) : std::string("(pid unknown)")) +
                          " died holding " + std::to_string(count) +
                          " item(s) it had taken with get() and not marked task_done(); they are written off";
    if (joiners_.empty()) {
      unreported_death_ = std::move(message);
      return;
    }
    joiners_.drain([&](Waiter w) { w.call.sink->deliver(encode_error(errc::process_error, message)); });
  }

  struct Holder {
    std::int32_t pid = 0;
    std::size_t count = 0;
  };

  std::size_t maxsize_;
  bool joinable_;
  std::deque<Object> items_;
  std::size_t unfinished_ = 0;
  WaitList getters_, putters_, joiners_;
  std::unordered_map<SessionId, Holder> held_;
  std::optional<std::string> unreported_death_;  // for the next join(): no join() was waiting
};

// ---- Lock, RLock, Semaphore, BoundedSemaphore -----------------------------------------------

enum class LockKind { lock, rlock, semaphore, bounded };

// Locks are owned by the session (one client thread) that acquired them, so a session that
// closes (its process died) releases them. Semaphores are counters, not owned.
class SemaphoreObject final : public SharedObject {
public:
  SemaphoreObject(LockKind kind, std::int64_t value) : kind_(kind), value_(value), initial_(value) {
    if (value < 0) throw ValueError("semaphore initial value must be >= 0");
  }
  void handle(Call& c, Host& h) override {
    static const MethodTable<SemaphoreObject> table{{"acquire", &SemaphoreObject::acquire},
                                                    {"release", &SemaphoreObject::release},
                                                    {"get_value", &SemaphoreObject::get_value}};
    if (c.method == "get_value" && owned()) throw AttributeError("'Lock' object has no attribute 'get_value'");
    dispatch(*this, table, c, h, owned() ? "Lock" : "Semaphore");
  }
  void session_closed(SessionId s) override {
    waiters_.drop_session(s);
    if (owned() && depth_ > 0 && owner_ == s) {
      depth_ = 0;
      hand_over();
    }
  }
  void timer_fired(std::uint64_t token) override {
    if (auto w = waiters_.take(token)) reply_ok(w->call, false);
  }

private:
  bool owned() const { return kind_ == LockKind::lock || kind_ == LockKind::rlock; }
  bool available(SessionId s) const {
    if (kind_ == LockKind::rlock && depth_ > 0 && owner_ == s) return true;
    return value_ > 0;
  }
  void take(SessionId s) {
    if (kind_ == LockKind::rlock && depth_ > 0) {
      ++depth_;
      return;
    }
    --value_;
    owner_ = s;
    depth_ = 1;
  }
  // Gives a freed unit to the oldest waiter, if any.
  void hand_over() {
    if (owned()) value_ = 1;
    else ++value_;
    while (value_ > 0 && !waiters_.empty()) {
      Waiter w = waiters_.pop_front();
      take(w.call.session());
      reply_ok(w.call, true);
    }
  }
  void acquire(Call& c, Host& h) {
    auto timeout = timeout_arg(c, 0);
    if (available(c.session())) {
      take(c.session());
      return reply_ok(c, true);
    }
    if (no_wait(timeout)) return reply_ok(c, false);
    waiters_.park(c, timeout, h);
  }
  void release(Call& c, Host&) {
    switch (kind_) {
      case LockKind::lock:
        if (value_ > 0) throw ValueError("release of an unlocked lock");
        break;
      case LockKind::rlock:
        if (depth_ == 0 || owner_ != c.session()) throw ValueError("cannot release un-acquired lock");
        if (--depth_ > 0) return reply_ok(c);
        break;
      case LockKind::bounded:
        if (value_ >= initial_) throw ValueError("Semaphore released too many times");
        break;
      case LockKind::semaphore: break;
    }
    depth_ = 0;
    hand_over();
    reply_ok(c);
  }
  void get_value(Call& c, Host&) { reply_ok(c, value_); }

  LockKind kind_;
  std::int64_t value_;
  std::int64_t initial_;
  SessionId owner_ = 0;
  std::int64_t depth_ = 0;
  WaitList waiters_;
};

// ---- Condition --------------------------------------------------------------------------------

// A condition variable with its own reentrant lock. wait() releases the lock completely, parks
// until notified (or its timeout), then queues to take the lock back with its old depth.
class ConditionObject final : public SharedObject {
public:
  void handle(Call& c, Host& h) override {
    static const MethodTable<ConditionObject> table{{"acquire", &ConditionObject::acquire},
                                                    {"release", &ConditionObject::release},
                                                    {"wait", &ConditionObject::wait},
                                                    {"notify", &ConditionObject::notify},
                                                    {"notify_all", &ConditionObject::notify_all}};
    dispatch(*this, table, c, h, "Condition");
  }
  void session_closed(SessionId s) override {
    lock_waiters_.drop_session(s);
    notify_waiters_.drop_session(s);
    if (depth_ > 0 && owner_ == s) {
      depth_ = 0;
      hand_over();
    }
  }
  void timer_fired(std::uint64_t token) override {
    if (auto w = lock_waiters_.take(token)) return reply_ok(w->call, false);
    if (auto w = notify_waiters_.take(token)) {
      w->result = false;
      requeue(std::move(*w));
    }
  }

private:
  bool owns(SessionId s) const { return depth_ > 0 && owner_ == s; }
  void require_owner(const Call& c, const char* what) const {
    if (!owns(c.session())) throw ValueError(std::string("cannot ") + what + " un-acquired lock");
  }
  // A woken waiter no longer times out: it just waits for the lock, as Python's wait() does.
  void requeue(Waiter w) {
    w.token = 0;
    lock_waiters_.push(std::move(w));
    if (depth_ == 0) hand_over();
  }
  void hand_over() {
    if (lock_waiters_.empty()) return;
    Waiter w = lock_waiters_.pop_front();
    owner_ = w.call.session();
    depth_ = w.count > 0 ? w.count : 1;
    reply_ok(w.call, w.result);
  }
  void acquire(Call& c, Host& h) {
    auto timeout = timeout_arg(c, 0);
    if (depth_ == 0 || owner_ == c.session()) {
      owner_ = c.session();
      ++depth_;
      return reply_ok(c, true);
    }
    if (no_wait(timeout)) return reply_ok(c, false);
    lock_waiters_.park(c, timeout, h);
  }
  void release(Call& c, Host&) {
    require_owner(c, "release");
    if (--depth_ == 0) hand_over();
    reply_ok(c);
  }
  void wait(Call& c, Host& h) {
    require_owner(c, "wait on");
    auto timeout = timeout_arg(c, 0);
    auto depth = depth_;
    depth_ = 0;
    notify_waiters_.park(c, timeout, h).count = depth;
    hand_over();
  }
  void wake(std::int64_t n) {
    for (; n > 0 && !notify_waiters_.empty(); --n) requeue(notify_waiters_.pop_front());
  }
  void notify(Call& c, Host&) {
    require_owner(c, "notify on");
    wake(arg<std::int64_t>(c, 0));
    reply_ok(c);
  }
  void notify_all(Call& c, Host&) {
    require_owner(c, "notify on");
    wake(static_cast<std::int64_t>(notify_waiters_.size()));
    reply_ok(c);
  }

  SessionId owner_ = 0;
  std::int64_t depth_ = 0;
  WaitList lock_waiters_, notify_waiters_;
};

// ---- Event ------------------------------------------------------------------------------------

class EventObject final : public SharedObject {
public:
  void handle(Call& c, Host& h) override {
    static const MethodTable<EventObject> table{{"set", &EventObject::set},
                                                {"clear", &EventObject::clear},
                                                {"is_set", &EventObject::is_set},
                                                {"wait", &EventObject::wait}};
    dispatch(*this, table, c, h, "Event");
  }
  void session_closed(SessionId s) override { waiters_.drop_session(s); }
  void timer_fired(std::uint64_t token) override {
    if (auto w = waiters_.take(token)) reply_ok(w->call, false);
  }

private:
  void set(Call& c, Host&) {
    flag_ = true;
    waiters_.drain([](Waiter w) { reply_ok(w.call, true); });
    reply_ok(c);
  }
  void clear(Call& c, Host&) {
    flag_ = false;
    reply_ok(c);
  }
  void is_set(Call& c, Host&) { reply_ok(c, flag_); }
  void wait(Call& c, Host& h) {
    auto timeout = timeout_arg(c, 0);
    if (flag_ || no_wait(timeout)) return reply_ok(c, flag_);
    waiters_.park(c, timeout, h);
  }

  bool flag_ = false;
  WaitList waiters_;
};

// ---- Barrier ----------------------------------------------------------------------------------

// Python's threading.Barrier. A waiter that times out, or whose process dies, breaks it: the
// others would otherwise wait for a party that never comes.
class BarrierObject final : public SharedObject {
public:
  explicit BarrierObject(std::int64_t parties) : parties_(parties) {
    if (parties < 1) throw ValueError("a barrier needs at least one party");
  }
  void handle(Call& c, Host& h) override {
    static const MethodTable<BarrierObject> table{
        {"wait", &BarrierObject::wait},       {"reset", &BarrierObject::reset},
        {"abort", &BarrierObject::abort},     {"parties", &BarrierObject::parties},
        {"n_waiting", &BarrierObject::n_waiting}, {"broken", &BarrierObject::broken}};
    dispatch(*this, table, c, h, "Barrier");
  }
  void session_closed(SessionId s) override {
    if (waiters_.has_session(s)) {
      waiters_.drop_session(s);
      break_barrier();
    }
  }
  void timer_fired(std::uint64_t token) override {
    if (auto w = waiters_.take(token)) {
      broken_error(w->call);
      break_barrier();
    }
  }

private:
  static void broken_error(const Call& c) {
    c.sink->deliver(encode_error(errc::broken_barrier, "the barrier is broken"));
  }
  void break_barrier() {
    broken_ = true;
    waiters_.drain([](Waiter w) { broken_error(w.call); });
  }
  void wait(Call& c, Host& h) {
    auto timeout = timeout_arg(c, 0);
    if (broken_) throw BrokenBarrierError("the barrier is broken");
    auto index = static_cast<std::int64_t>(waiters_.size());
    if (index + 1 < parties_) {
      waiters_.park(c, timeout, h).count = index;
      return;
    }
    waiters_.drain([](Waiter w) { reply_ok(w.call, w.count); });
    reply_ok(c, index);
  }
  void reset(Call& c, Host&) {
    waiters_.drain([](Waiter w) { broken_error(w.call); });
    broken_ = false;
    reply_ok(c);
  }
  void abort(Call& c, Host&) {
    break_barrier();
    reply_ok(c);
  }
  void parties(Call& c, Host&) { reply_ok(c, parties_); }
  void n_waiting(Call& c, Host&) { reply_ok(c, waiters_.size()); }
  void broken(Call& c, Host&) { reply_ok(c, broken_); }

  std::int64_t parties_;
  bool broken_ = false;
  WaitList waiters_;
};

// ---- user classes -----------------------------------------------------------------------------

class ExposedObject final : public SharedObject {
public:
  explicit ExposedObject(std::shared_ptr<const ExposedClass> cls) : cls_(std::move(cls)), instance_(cls_->make()) {}
  void handle(Call& c, Host&) override {
    auto it = cls_->methods.find(c.method);
    if (it == cls_->methods.end())
      throw AttributeError("'" + cls_->name + "' exposes no method '" + c.method + "'");
    std::string result = it->second(instance_.get(), c.args());
    Buffer buf;
    msgpack::packer<Buffer> packer(buf);
    packer.pack_array(2);
    packer.pack(0);
    buf.data += result;
    c.sink->deliver(std::move(buf.data));
  }

private:
  std::shared_ptr<const ExposedClass> cls_;
  std::shared_ptr<void> instance_;
};

// ---- factories ----------------------------------------------------------------------------------

template <class T>
T init_arg(const msgpack::object& init, std::size_t i, T fallback) {
  if (init.type != msgpack::type::ARRAY || i >= init.via.array.size) return fallback;
  return convert<T>(init.via.array.ptr[i]);
}

using Factory = std::unique_ptr<SharedObject> (*)(const msgpack::object&);

const std::unordered_map<std::string_view, Factory>& factories() {
  static const std::unordered_map<std::string_view, Factory> table{
      {"dict", [](const msgpack::object&) -> std::unique_ptr<SharedObject> { return std::make_unique<DictObject>(); }},
      {"list", [](const msgpack::object& i) -> std::unique_ptr<SharedObject> {
         return std::make_unique<ListObject>(init_arg<Object::Array>(i, 0, {}));
       }},
      {"Namespace",
       [](const msgpack::object&) -> std::unique_ptr<SharedObject> { return std::make_unique<NamespaceObject>(); }},
      {"Value", [](const msgpack::object& i) -> std::unique_ptr<SharedObject> {
         return std::make_unique<ValueObject>(init_arg<Object>(i, 0, {}));
       }},
      {"Array", [](const msgpack::object& i) -> std::unique_ptr<SharedObject> {
         return std::make_unique<ArrayObject>(init_arg<Object::Array>(i, 0, {}));
       }},
      {"Queue", [](const msgpack::object& i) -> std::unique_ptr<SharedObject> {
         return std::make_unique<QueueObject>(init_arg<std::size_t>(i, 0, 0), false);
       }},
      {"JoinableQueue", [](const msgpack::object& i) -> std::unique_ptr<SharedObject> {
         return std::make_unique<QueueObject>(init_arg<std::size_t>(i, 0, 0), true);
       }},
      {"Lock", [](const msgpack::object&) -> std::unique_ptr<SharedObject> {
         return std::make_unique<SemaphoreObject>(LockKind::lock, 1);
       }},
      {"RLock", [](const msgpack::object&) -> std::unique_ptr<SharedObject> {
         return std::make_unique<SemaphoreObject>(LockKind::rlock, 1);
       }},
      {"Semaphore", [](const msgpack::object& i) -> std::unique_ptr<SharedObject> {
         return std::make_unique<SemaphoreObject>(LockKind::semaphore, init_arg<std::int64_t>(i, 0, 1));
       }},
      {"BoundedSemaphore", [](const msgpack::object& i) -> std::unique_ptr<SharedObject> {
         return std::make_unique<SemaphoreObject>(LockKind::bounded, init_arg<std::int64_t>(i, 0, 1));
       }},
      {"Condition",
       [](const msgpack::object&) -> std::unique_ptr<SharedObject> { return std::make_unique<ConditionObject>(); }},
      {"Event", [](const msgpack::object&) -> std::unique_ptr<SharedObject> { return std::make_unique<EventObject>(); }},
      {"Barrier", [](const msgpack::object& i) -> std::unique_ptr<SharedObject> {
         return std::make_unique<BarrierObject>(init_arg<std::int64_t>(i, 0, 1));
       }},
  };
  return table;
}

} // namespace

std::string encode_error(errc code, std::string_view message, std::string_view detail) {
  Buffer buf;
  msgpack::packer<Buffer> packer(buf);
  packer.pack_array(3);
  packer.pack(static_cast<unsigned>(code));
  packer.pack(message);
  packer.pack(detail);
  return std::move(buf.data);
}

std::string encode_exception(std::exception_ptr error) {
  try {
    std::rethrow_exception(error);
  } catch (const KeyError& e) {
    return encode_error(errc::key_error, e.what());
  } catch (const IndexError& e) {
    return encode_error(errc::index_error, e.what());
  } catch (const AttributeError& e) {
    return encode_error(errc::attribute_error, e.what());
  } catch (const ValueError& e) {
    return encode_error(errc::value_error, e.what());
  } catch (const TypeError& e) {
    return encode_error(errc::type_error, e.what());
  } catch (const Empty& e) {
    return encode_error(errc::empty, e.what());
  } catch (const Full& e) {
    return encode_error(errc::full, e.what());
  } catch (const BrokenBarrierError& e) {
    return encode_error(errc::broken_barrier, e.what());
  } catch (const RemoteError& e) {
    return encode_error(errc::remote_error, e.what(), e.type_name());
  } catch (const std::exception& e) {
    return encode_error(errc::remote_error, e.what(), demangle(typeid(e).name()));
  } catch (...) {
    return encode_error(errc::remote_error, "an exception of unknown type", "unknown");
  }
}

bool is_builtin_kind(std::string_view kind) { return factories().count(kind) > 0; }

std::unique_ptr<SharedObject> make_builtin(std::string_view kind, const msgpack::object& init) {
  auto it = factories().find(kind);
  if (it == factories().end()) throw ValueError("unknown typeid '" + std::string(kind) + "'");
  return it->second(init);
}

std::unique_ptr<SharedObject> make_exposed(std::shared_ptr<const ExposedClass> cls) {
  return std::make_unique<ExposedObject>(std::move(cls));
}

} // namespace multiproc::detail::manager
