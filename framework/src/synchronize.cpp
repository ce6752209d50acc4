#include "multiproc/synchronize.hpp"

#include <linux/futex.h>

#include <algorithm>
#include <array>
#include <climits>
#include <cstdint>
#include <mutex>
#include <new>
#include <utility>

#include "function_id.hpp"
#include "multiproc/detail/shm.hpp"
#include "multiproc/errors.hpp"
#include "shm_primitives.hpp"

namespace multiproc {

namespace detail {

struct LockState {
  LockState() { init_robust_mutex(mutex, mutex_kind::normal); }
  pthread_mutex_t mutex;
};

// errorcheck: trylock by the owner answers EDEADLK, which is how ownership is told apart from a
// holder that died (the kernel clears a dead holder's id from the mutex, not from our fields).
struct RLockState {
  RLockState() { init_robust_mutex(mutex, mutex_kind::errorcheck); }
  pthread_mutex_t mutex;
  int count = 0;  // recursion levels; written only by the owner
};

struct SemaphoreState {
  SemaphoreState(int initial, int max) : value(initial), bound(max) {}
  std::atomic<int> value;
  const int bound;  // 0: unbounded
  WaitChannel channel;
};

// Python's Condition with glibc's two waiter groups, kept under the condition's lock: new waiters
// join G2; a notify signals the waiters of G1 (the older group) and, once every G1 waiter is
// signalled, makes G2 the new G1 and opens an empty G2. A signal can only be taken by a member of
// the group it was given to, so a wait that starts after a notify never takes that notify from a
// waiter that was already waiting, and a waiter that died inside wait() leaves at most its own
// group's signal behind, which no later waiter can take. (Like CPython's, a notify may be spent on
// a waiter that died: a dead process is not told apart from one about to take its signal.)
// Each group sleeps on its own futex word, so a notify wakes only members of the group it signals.
struct ConditionState {
  std::uint32_t g2 = 0;                // generation number of G2; G1's is g2 - 1, older ones were all signalled
  std::uint32_t g2_size = 0;           // waiters in G2
  std::uint32_t g1_unsignalled = 0;    // waiters in G1 neither signalled nor gone
  std::uint32_t g1_signals = 0;        // signals given to G1 and not taken yet
  FutexWord wake[2];                   // generation g sleeps on wake[g % 2]

  FutexWord& word_of(std::uint32_t generation) { return wake[generation % 2]; }

  std::uint32_t join() {
    ++g2_size;
    return g2;
  }
  // Whether a waiter of `generation` was notified; if so its signal is taken.
  bool take_signal(std::uint32_t generation) {
    if (generation == g2) return false;
    if (generation != g2 - 1) return true;
    if (g1_signals == 0) return false;
    --g1_signals;
    return true;
  }
  // A waiter that timed out without a signal leaves its group.
  void leave(std::uint32_t generation) {
    if (generation == g2)
      --g2_size;
    else
      --g1_unsignalled;
  }
  // Signals up to n waiters, G1's first, and wakes them.
  void notify(std::uint32_t n) {
    while (n > 0) {
      if (g1_unsignalled == 0) {
        if (g2_size == 0) return;
        g1_unsignalled = std::exchange(g2_size, 0);
        g1_signals = 0;
        ++g2;
      }
      auto woken = std::min(n, g1_unsignalled);
      g1_unsignalled -= woken;
      g1_signals += woken;
      n -= woken;
      auto& word = word_of(g2 - 1);
      word.fetch_add(1);
      futex_wake(word, static_cast<int>(woken));
    }
  }
};

struct EventState {
  std::atomic<std::uint32_t> flag{0};
  WaitChannel channel;
};

// Python's threading.Barrier state machine: filling, draining after a release, resetting while
// waiters leave, broken.
enum class barrier_phase : int { filling = 0, draining = 1, resetting = -1, broken = -2 };

// Each party inside wait() holds a slot, a robust mutex, from its arrival until it leaves, so that
// its death is seen: the kernel marks the slot (FUTEX_OWNER_DIED) and wakes a waiter that watches
// it. Sleepers watch every other held slot (up to max_futex_watches - 1 of them) besides
// `changes`, and each arrival wakes one sleeper to watch the newcomer too.
struct BarrierSlot {
  BarrierSlot() { init_robust_mutex(held, mutex_kind::normal); }
  pthread_mutex_t held;
};

// Lives in one mapping followed by its `parties` slots. phase and count are written under the
// lock; atomic so that n_waiting() and broken() may read them unlocked.
struct BarrierState {
  explicit BarrierState(int n) : parties(n) {
    init_robust_mutex(lock, mutex_kind::normal);
    for (int i = 0; i < parties; ++i) ::new (&slot(i)) BarrierSlot;
  }
  static std::size_t bytes(int parties) {
    return sizeof(BarrierState) + sizeof(BarrierSlot) * static_cast<std::size_t>(parties);
  }
  BarrierSlot& slot(int i) { return reinterpret_cast<BarrierSlot*>(this + 1)[i]; }

  const int parties;
  pthread_mutex_t lock;
  std::atomic<barrier_phase> phase{barrier_phase::filling};
  std::atomic<int> count{0};  // parties inside wait(): the slots held
  WaitChannel changes;        // notified on every change a sleeper waits for

  // --- all below under the lock ---

  void notify(int sleepers = INT_MAX) { changes.notify(sleepers); }
  void break_round() {
    phase = barrier_phase::broken;
    notify();
  }
  // The last party out of a released or reset round reopens the barrier.
  void reopen_if_empty() {
    if (count == 0 && (phase == barrier_phase::draining || phase == barrier_phase::resetting)) {
      phase = barrier_phase::filling;
      notify();
    }
  }

  // Frees the slots of parties that died inside wait(). A round being filled cannot complete
  // without them: it breaks. A round draining or resetting no longer waits for them.
  void reap_dead_parties() {
    bool died = false;
    for (int i = 0; i < parties; ++i) {
      auto& held = slot(i).held;
      if (!(robust_word(held).load() & FUTEX_OWNER_DIED)) continue;
      if (try_lock_robust(held) == lock_result::acquired) unlock_robust(held);  // made consistent
      died = true;
    }
    if (!died) return;
    int inside = 0;
    for (int i = 0; i < parties; ++i) inside += robust_word(slot(i).held).load() != 0;
    count = inside;
    if (phase == barrier_phase::filling)
      break_round();
    else
      reopen_if_empty();
  }

  // Takes a free slot for a party joining the round; returns the slot.
  int arrive() {
    for (int i = 0; i < parties; ++i) {
      int candidate = (count + i) % parties;
      auto& held = slot(candidate).held;
      // Only a slot nobody holds: try-locking a held one whose holder just died would take its
      // death over unseen.
      if (robust_word(held).load() == 0 && try_lock_robust(held) == lock_result::acquired) {
        ++count;
        return candidate;
      }
    }
    break_round();
    throw BrokenBarrierError("no free party slot: the barrier's state is corrupt; it is now broken");
  }
  void leave(int own) {
    --count;
    unlock_robust(slot(own).held);
    reopen_if_empty();
  }

  // Releases the lock and sleeps until a change is notified, a party's slot changes (it died or
  // left) or the deadline; takes the lock back. false on timeout. own: the caller's slot or -1.
  bool sleep(int own, Deadline deadline) {
    std::array<FutexWatch, max_futex_watches> watches;
    std::size_t n = 1;  // watches[0]: changes
    for (int i = 1; i <= parties && n < watches.size(); ++i) {
      int other = (own + i) % parties;
      if (other == own) continue;
      auto& word = robust_word(slot(other).held);
      auto value = word.load();
      while (value != 0 && !(value & FUTEX_WAITERS) && !(value & FUTEX_OWNER_DIED))
        if (word.compare_exchange_weak(value, value | FUTEX_WAITERS)) value |= FUTEX_WAITERS;
      if (value & FUTEX_OWNER_DIED) return true;  // a death to reap first
      if (value != 0) watches[n++] = {&word, value};
    }
    watches[0] = {&changes.seq, changes.prepare()};
    unlock_robust(lock);
    bool in_time = futex_wait_any(std::span(watches.data(), n), deadline);
    changes.done();
    lock_robust(lock, std::nullopt);
    return in_time;
  }
};

}  // namespace detail

// --- Lock -------------------------------------------------------------------------------------

Lock::Lock() : Lock(detail::make_shared_object<detail::LockState>()) {}

Lock::Lock(std::shared_ptr<detail::LockState> state) : state_(std::move(state)), mutex_(&state_->mutex) {}

void Lock::after_failed_lock(int error) {
  // EOWNERDEAD: the holder died and the lock is ours now. Anything else is not an acquisition.
  if (detail::check_lock_result(*mutex_, error) != detail::lock_result::acquired)
    throw ValueError("Lock.acquire: the calling thread already holds this Lock");
}

void Lock::throw_not_held() { throw ValueError("release of a Lock that the calling thread does not hold"); }

bool Lock::acquire_until(detail::Deadline deadline) {
  return detail::lock_robust(state_->mutex, deadline) == detail::lock_result::acquired;
}

bool Lock::try_acquire() { return detail::try_lock_robust(state_->mutex) == detail::lock_result::acquired; }

// --- RLock ------------------------------------------------------------------------------------

RLock::RLock() : state_(detail::make_shared_object<detail::RLockState>()) {}

bool RLock::acquire_until(detail::Deadline deadline) {
  auto& s = *state_;
  auto r = detail::try_lock_robust(s.mutex);
  if (r == detail::lock_result::already_owned) {
    ++s.count;
    return true;
  }
  if (r == detail::lock_result::timed_out) r = detail::lock_robust(s.mutex, deadline);
  if (r != detail::lock_result::acquired) return false;
  s.count = 1;
  return true;
}

bool RLock::try_acquire() { return acquire_until(detail::Clock::now()); }

bool RLock::is_owned() const {
  auto& s = *state_;
  switch (detail::try_lock_robust(s.mutex)) {
    case detail::lock_result::already_owned: return true;
    case detail::lock_result::acquired: detail::unlock_robust(s.mutex); return false;
    default: return false;
  }
}

void RLock::release() {
  auto& s = *state_;
  switch (detail::try_lock_robust(s.mutex)) {
    case detail::lock_result::already_owned:
      if (--s.count == 0) detail::unlock_robust(s.mutex);
      return;
    case detail::lock_result::acquired:
      detail::unlock_robust(s.mutex);
      throw ValueError("release of an RLock that is not acquired");
    default: throw ValueError("release of an RLock owned by another thread or process");
  }
}

int RLock::release_all() {
  auto& s = *state_;
  int levels = s.count;
  s.count = 0;
  detail::unlock_robust(s.mutex);
  return levels;
}

void RLock::restore(int levels) {
  detail::lock_robust(state_->mutex, std::nullopt);
  state_->count = levels;
}

// --- Semaphore --------------------------------------------------------------------------------

Semaphore::Semaphore(int value) : Semaphore(value, 0) {}

Semaphore::Semaphore(int value, int bound) {
  if (value < 0) throw ValueError("semaphore initial value must be >= 0");
  state_ = detail::make_shared_object<detail::SemaphoreState>(value, bound);
}

namespace {
bool try_decrement(std::atomic<int>& value) {
  int v = value.load();
  while (v > 0)
    if (value.compare_exchange_weak(v, v - 1)) return true;
  return false;
}
}  // namespace

bool Semaphore::acquire_until(detail::Deadline deadline) {
  auto& s = *state_;
  return detail::wait_for_claim(
      s.channel, [&] { return try_decrement(s.value); }, deadline);
}

bool Semaphore::try_acquire() { return try_decrement(state_->value); }

void Semaphore::release() {
  auto& s = *state_;
  if (s.bound == 0) {
    s.value.fetch_add(1);
  } else {
    int v = s.value.load();
    do {
      if (v >= s.bound) throw ValueError("BoundedSemaphore released too many times");
    } while (!s.value.compare_exchange_weak(v, v + 1));
  }
  s.channel.notify(1);
}

int Semaphore::get_value() const { return state_->value.load(); }

// --- Condition --------------------------------------------------------------------------------

Condition::Condition(std::optional<RLock> lock)
    : lock_(lock ? std::move(*lock) : RLock()),
      state_(detail::make_shared_object<detail::ConditionState>()) {}

bool Condition::wait_until(detail::Deadline deadline) {
  if (!lock_.is_owned()) throw ValueError("wait on a Condition whose lock the caller does not hold");
  auto& s = *state_;
  auto generation = s.join();
  for (;;) {
    auto& word = s.word_of(generation);
    auto observed = word.load();
    int levels = lock_.release_all();
    bool in_time = detail::futex_wait(word, observed, deadline);
    lock_.restore(levels);
    if (s.take_signal(generation)) return true;
    if (!in_time) {
      s.leave(generation);
      return false;
    }
  }
}

void Condition::notify(int n) {
  if (!lock_.is_owned()) throw ValueError("notify on a Condition whose lock the caller does not hold");
  if (n > 0) state_->notify(static_cast<std::uint32_t>(n));
}

void Condition::notify_all() { notify(INT_MAX); }

// --- Event ------------------------------------------------------------------------------------

Event::Event() : state_(detail::make_shared_object<detail::EventState>()) {}

void Event::set() {
  state_->flag.store(1);
  state_->channel.notify();
}

void Event::clear() { state_->flag.store(0); }

bool Event::is_set() const { return state_->flag.load() != 0; }

bool Event::wait_until(detail::Deadline deadline) {
  auto& s = *state_;
  return detail::wait_for_claim(
      s.channel, [&] { return s.flag.load() != 0; }, deadline);
}

// --- Barrier (Python's threading.Barrier) -----------------------------------------------------

using detail::barrier_phase;

namespace {
std::shared_ptr<detail::BarrierState> make_barrier_state(int parties) {
  if (parties < 1) throw ValueError("a Barrier needs at least one party");
  auto mapping = detail::map_shared(detail::BarrierState::bytes(parties));
  auto* state = ::new (mapping.get()) detail::BarrierState(parties);
  return std::shared_ptr<detail::BarrierState>(std::move(mapping), state);
}
}  // namespace

Barrier::Barrier(int parties, std::function<void()> action, OptionalTimeout timeout)
    : Barrier(parties, std::move(action), timeout, make_barrier_state(parties)) {}

Barrier::Barrier(int parties, std::function<void()> action, OptionalTimeout timeout,
                 std::shared_ptr<detail::BarrierState> state)
    : parties_(parties), action_(std::move(action)), timeout_(timeout), state_(std::move(state)) {}

int Barrier::wait() { return wait_until(timeout_ ? detail::deadline_after(*timeout_) : detail::Deadline{}); }

int Barrier::wait_until(detail::Deadline deadline) {
  auto& s = *state_;
  detail::RobustGuard guard(s.lock);
  // Block while the previous round drains or a reset completes.
  for (bool in_time = true;; in_time = s.sleep(-1, deadline)) {
    s.reap_dead_parties();
    if (s.phase != barrier_phase::draining && s.phase != barrier_phase::resetting) break;
    if (!in_time) {
      s.break_round();
      throw BrokenBarrierError("timed out waiting for the barrier's previous round; it is now broken");
    }
  }
  if (s.phase == barrier_phase::broken) throw BrokenBarrierError("the barrier is broken");
  int index = s.count;
  int own = s.arrive();
  struct Leave {
    detail::BarrierState& s;
    int own;
    ~Leave() { s.leave(own); }
  } leave_on_exit{s, own};
  if (index + 1 == parties_)
    release_all_waiting();
  else
    wait_for_release(own, deadline);
  return index;
}

void Barrier::release_all_waiting() {
  auto& s = *state_;
  if (action_) {
    s.notify(1);  // a sleeper that watches this party too sees it die inside the action
    try {
      action_();
    } catch (...) {
      s.break_round();
      throw;
    }
  }
  s.phase = barrier_phase::draining;
  s.notify();
}

void Barrier::wait_for_release(int own, detail::Deadline deadline) {
  auto& s = *state_;
  s.notify(1);  // one sleeper wakes to watch this party too
  for (bool in_time = true;; in_time = s.sleep(own, deadline)) {
    s.reap_dead_parties();
    if (s.phase != barrier_phase::filling) break;
    if (!in_time) {
      s.break_round();
      throw BrokenBarrierError("timed out waiting at the barrier; it is now broken");
    }
  }
  if (s.phase != barrier_phase::draining) throw BrokenBarrierError("the barrier was broken or reset");
}

void Barrier::reset() {
  auto& s = *state_;
  detail::RobustGuard guard(s.lock);
  s.reap_dead_parties();
  if (s.count > 0) {
    if (s.phase == barrier_phase::filling || s.phase == barrier_phase::broken) s.phase = barrier_phase::resetting;
  } else {
    s.phase = barrier_phase::filling;
  }
  s.notify();
}

void Barrier::abort() {
  auto& s = *state_;
  detail::RobustGuard guard(s.lock);
  s.break_round();
}

int Barrier::n_waiting() const {
  auto& s = *state_;
  return s.phase == barrier_phase::filling ? s.count.load() : 0;
}

bool Barrier::broken() const { return state_->phase == barrier_phase::broken; }

// --- crossing into spawn and forkserver children ------------------------------------------------

namespace detail {

void reducer<Lock>::reduce(const Lock& h, msgpack::packer<Buffer>& pk, Reduction& r) { reduce_mapping(h.state_, pk, r); }
Lock reducer<Lock>::rebuild(const msgpack::object& o, ReceivedFds& fds) {
  return Lock(rebuild_shared_object<LockState>(o, fds));
}

void reducer<RLock>::reduce(const RLock& h, msgpack::packer<Buffer>& pk, Reduction& r) {
  reduce_mapping(h.state_, pk, r);
}
RLock reducer<RLock>::rebuild(const msgpack::object& o, ReceivedFds& fds) {
  return RLock(rebuild_shared_object<RLockState>(o, fds));
}

void reducer<Semaphore>::reduce(const Semaphore& h, msgpack::packer<Buffer>& pk, Reduction& r) {
  reduce_mapping(h.state_, pk, r);
}
Semaphore reducer<Semaphore>::rebuild(const msgpack::object& o, ReceivedFds& fds) {
  return Semaphore(rebuild_shared_object<SemaphoreState>(o, fds));
}

// The bound lives in the shared state: a BoundedSemaphore reduces as its Semaphore does.
void reducer<BoundedSemaphore>::reduce(const BoundedSemaphore& h, msgpack::packer<Buffer>& pk, Reduction& r) {
  reduce_mapping(h.state_, pk, r);
}
BoundedSemaphore reducer<BoundedSemaphore>::rebuild(const msgpack::object& o, ReceivedFds& fds) {
  return BoundedSemaphore(rebuild_shared_object<SemaphoreState>(o, fds));
}

void reducer<Condition>::reduce(const Condition& h, msgpack::packer<Buffer>& pk, Reduction& r) {
  pk.pack_array(2);
  reducer<RLock>::reduce(h.lock_, pk, r);
  reduce_mapping(h.state_, pk, r);
}
Condition reducer<Condition>::rebuild(const msgpack::object& o, ReceivedFds& fds) {
  auto fields = reduced_fields(o, 2, "Condition");
  auto lock = reducer<RLock>::rebuild(fields[0], fds);
  return Condition(std::move(lock), rebuild_shared_object<ConditionState>(fields[1], fds));
}

void reducer<Event>::reduce(const Event& h, msgpack::packer<Buffer>& pk, Reduction& r) { reduce_mapping(h.state_, pk, r); }
Event reducer<Event>::rebuild(const msgpack::object& o, ReceivedFds& fds) {
  return Event(rebuild_shared_object<EventState>(o, fds));
}

// [parties, action's function identity, default timeout in seconds or nil, state]
void reducer<Barrier>::reduce(const Barrier& h, msgpack::packer<Buffer>& pk, Reduction& r) {
  const void* action = nullptr;
  if (h.action_) {
    auto* fn = h.action_.target<void (*)()>();
    if (!fn)
      throw ValueError("a Barrier whose action is not a function pointer cannot cross into a spawn or forkserver "
                       "child (its state cannot reach a fresh process): give the Barrier a plain function, or "
                       "+[] { ... } for a captureless lambda");
    action = reinterpret_cast<const void*>(*fn);
  }
  pk.pack_array(4);
  pk.pack(h.parties_);
  pk.pack(identify_function(action));
  if (h.timeout_)
    pk.pack(h.timeout_->count());
  else
    pk.pack_nil();
  reduce_mapping(h.state_, pk, r);
}
Barrier reducer<Barrier>::rebuild(const msgpack::object& o, ReceivedFds& fds) {
  auto fields = reduced_fields(o, 4, "Barrier");
  auto parties = convert<int>(fields[0]);
  if (parties < 1) throw Error("a Barrier's handle names fewer than one party (a malformed message)");
  std::function<void()> action;
  if (auto* fn = locate_function(convert<FunctionId>(fields[1]))) action = reinterpret_cast<void (*)()>(fn);
  OptionalTimeout timeout;
  if (!fields[2].is_nil()) timeout = std::chrono::duration<double>(convert<double>(fields[2]));
  auto state = rebuild_shared_object<BarrierState>(fields[3], fds, BarrierState::bytes(parties));
  if (state->parties != parties) throw Error("a Barrier's handle and its shared state disagree (a malformed message)");
  return Barrier(parties, std::move(action), timeout, std::move(state));
}

}  // namespace detail

}  // namespace multiproc
