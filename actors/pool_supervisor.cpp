#include "actors/pool_supervisor.hpp"

#include <caf/all.hpp>
#include <caf/io/all.hpp>
#include <cstdint>
#include <iostream>
#include <optional>
#include <unordered_map>

#include "actors/runtime.hpp"
#include "framework/src/log.hpp"

namespace multiproc::actors {

namespace {

using watch_atom = caf::atom_constant<caf::atom("mp_watch")>;
using stop_atom = caf::atom_constant<caf::atom("mp_stop")>;
using quit_atom = caf::atom_constant<caf::atom("mp_quit")>;

struct supervisor_state {
  pool_control* pool = nullptr;
  std::optional<restart_intensity> intensity;
  std::unordered_map<std::int64_t, std::size_t> slots;  // pidfd scribe -> worker slot
  bool stopping = false;  // stop_atom came: settle exits, start no replacements
};
using supervisor_actor = caf::stateful_actor<supervisor_state, caf::io::broker>;

// A pidfd is never readable before its process ends; then recv fails (ENOTSOCK) and the
// broker reports connection_closed_msg: an exit event without a SIGCHLD handler.
void adopt(supervisor_actor* self, std::size_t slot, int exit_fd) {
  auto handle = self->add_scribe(exit_fd);
  self->configure_read(handle, caf::io::receive_policy::at_most(1));
  self->state.slots[handle.id()] = slot;
}

void restart(supervisor_actor* self, std::size_t slot) {
  auto& st = self->state;
  try {
    int exit_fd = st.pool->start_worker(slot);
    if (exit_fd >= 0) adopt(self, slot, exit_fd);
  } catch (const std::exception& e) {
    st.pool->break_pool(std::string("could not start a replacement pool worker: ") + e.what());
  }
}

void on_worker_end(supervisor_actor* self, std::int64_t handle_id) {
  auto& st = self->state;
  auto it = st.slots.find(handle_id);
  if (it == st.slots.end()) return;
  std::size_t slot = it->second;
  st.slots.erase(it);
  bool crashed = st.pool->settle_exit(slot);
  if (crashed && !st.intensity->record(restart_intensity::clock::now())) {
    detail::log(LogLevel::error, "pool broken: workers crashed more than max_restarts times within restart_window");
    st.pool->break_pool("pool workers crashed more than max_restarts times within restart_window");
    return;
  }
  if (st.stopping) return;
  detail::log(LogLevel::info, "replacing pool worker {}: it {}", slot,
              crashed ? "crashed" : "retired (maxtasksperchild) or was killed at task_timeout");
  restart(self, slot);
}

caf::behavior supervise(supervisor_actor* self, pool_control* pool, restart_intensity intensity) {
  self->state.pool = pool;
  self->state.intensity.emplace(intensity);
  return {
      [=](watch_atom, std::uint64_t slot, int exit_fd) { adopt(self, slot, exit_fd); },
      [=](const caf::io::connection_closed_msg& msg) { on_worker_end(self, msg.handle.id()); },
      [=](const caf::io::new_data_msg&) {},  // a pidfd carries no data
      [=](stop_atom) {
        // Quitting closes the scribes. CAF 0.17.6 puts a scribe into its multiplexer's loop
        // only at the end of the round that adopted it, and a close in that same round cancels
        // the pending add: the scribe never leaves the loop, and keeps itself and its pidfd
        // alive for good (a pool stopped right after it started lost one per worker). A
        // function posted to the multiplexer runs after this round's adds: quit from there.
        self->state.stopping = true;
        self->backend().post([me = caf::actor_cast<caf::actor>(self)] { caf::anon_send(me, quit_atom::value); });
      },
      [=](quit_atom) { self->quit(); },
  };
}

class caf_pool_supervisor final : public pool_supervisor {
public:
  caf_pool_supervisor(pool_control& pool, restart_intensity intensity)
      : actor_(sys_->middleman().spawn_broker(supervise, &pool, intensity)) {
    release_thread_logger();
  }
  ~caf_pool_supervisor() override { stop(); }

  void watch(std::size_t slot, int exit_fd) override {
    caf::anon_send(actor_, watch_atom::value, static_cast<std::uint64_t>(slot), exit_fd);
  }

  void stop() override {
    if (!actor_) return;
    UserThreadCall call;
    caf::scoped_actor self{*sys_};
    self->send(actor_, stop_atom::value);
    self->wait_for(actor_);
    actor_ = nullptr;
  }

private:
  std::shared_ptr<caf::actor_system> sys_ = acquire_system();  // before actor_: it spawns there
  caf::actor actor_;
};

} // namespace

std::unique_ptr<pool_supervisor> make_pool_supervisor(pool_control& pool, restart_intensity intensity) {
  return std::make_unique<caf_pool_supervisor>(pool, intensity);
}

} // namespace multiproc::actors
