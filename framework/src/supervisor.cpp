// mp::Supervisor: the public face of the supervisor actor in libmultiproc_actors
// (actors/supervisor.hpp), and the child supervisor, an actor whose process runs a supervisor.
#include "multiproc/supervisor.hpp"

#include "actor_peer.hpp"
#include "actor_socket.hpp"
#include "actors_plugin.hpp"

namespace multiproc {

namespace {

// The news a child supervisor's own actor receives from its supervisor's thread: it gave up.
struct supervisor_gave_up {
  static constexpr std::string_view actor_type_name = "multiproc.supervisor_gave_up";
  int exitcode = 1;
  MSGPACK_DEFINE(exitcode);
};

// From the supervisor's thread to the actor's loop: over a connection of its own (the loop's
// own send path is the loop thread's alone).
void tell_gave_up(const ActorRef& self) {
  int fd = detail::connect_abstract(self.address());
  if (fd < 0) return;  // the actor is ending anyway
  detail::actor_peer peer(fd, self);
  auto frame = detail::make_frame(detail::actor_frame::send, supervisor_gave_up{});
  peer.write(frame);
}

} // namespace

ChildSpec supervisor_child(std::string id, SupervisorOptions options, std::vector<ChildSpec> children) {
  ChildSpec spec;
  spec.id = std::move(id);
  spec.is_supervisor = true;
  auto init = [options, children = std::move(children)](ActorContext& ctx) -> Behavior {
    // Loaded in the parent already (a forked child must not dlopen: actors_plugin.hpp).
    std::shared_ptr<actors::supervisor_handle> supervisor =
        detail::actors_plugin().make_supervisor(options, children, [self = ctx.self()] { tell_gave_up(self); });
    // The handler keeps the supervisor: when this actor ends (stopped, or gave up), the handler
    // goes and the supervisor stops its children before the process exits.
    return Behavior{[supervisor, &ctx](const supervisor_gave_up& news) { ctx.quit(news.exitcode); }};
  };
  // The specs (std::functions) reach the child supervisor's process only by fork.
  spec.start = [init = std::move(init)](std::optional<StartMethod>, detail::ActorSeat seat) mutable {
    return detail::actor_process(StartMethod::fork, std::move(seat), init);
  };
  return spec;
}

Supervisor::Supervisor(SupervisorOptions options, std::vector<ChildSpec> children)
    : impl_(detail::actors_plugin().make_supervisor(options, std::move(children), nullptr)) {}

Supervisor::~Supervisor() = default;  // the handle stops the children

ActorRef Supervisor::start_child(ChildSpec spec) { return impl_->start_child(std::move(spec)); }
ActorRef Supervisor::child(std::string_view id) const { return impl_->child(id); }
void Supervisor::terminate_child(std::string_view id) { impl_->terminate_child(id); }
ActorRef Supervisor::restart_child(std::string_view id) { return impl_->restart_child(id); }
void Supervisor::delete_child(std::string_view id) { impl_->delete_child(id); }
std::vector<ChildInfo> Supervisor::which_children() const { return impl_->which_children(); }
void Supervisor::stop() { impl_->stop(); }
bool Supervisor::broken() const { return impl_->broken(); }
bool Supervisor::join_for(std::chrono::nanoseconds timeout) { return impl_->join_for(timeout); }

} // namespace multiproc
