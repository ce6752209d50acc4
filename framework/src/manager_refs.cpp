// This process's references to manager objects (multiproc/detail/manager_client.hpp): one per
// proxy hold, taken and given back on the process's own connection to the manager.
#include <unistd.h>

#include <type_traits>
#include <unordered_map>
#include <unordered_set>

#include "launch.hpp"
#include "multiproc/detail/manager_client.hpp"
#include "multiproc/errors.hpp"

namespace multiproc::detail {

struct ProxyHold {
  std::shared_ptr<const ManagerEndpoint> endpoint;
  std::uint64_t id = server_object_id;  // the server's id: no reference (yet)
};

namespace {

thread_local bool t_packing_manager_args = false;

// Every hold alive in this process, and the references a fork left for this child to claim.
// Every call on references is made under m, so a fork sees the holds and the server agree.
struct Holds {
  std::mutex m;
  std::unordered_set<const ProxyHold*> live;
  struct Inherited {
    std::shared_ptr<const ManagerEndpoint> endpoint;
    std::uint64_t token;
  };
  std::unordered_map<std::string, Inherited> inherited;  // by manager address
  bool exit_hook_registered = false;
};

Holds& holds() {
  static auto* h = new Holds;  // never destroyed: static destructors may still drop proxies
  return *h;
}

template <class R, class... A>
R call_server(const ManagerEndpoint& endpoint, std::string_view method, const A&... args) {
  auto request = encode_manager_request(server_object_id, method, args...);
  auto reply = manager_exchange_process(endpoint, request);
  if constexpr (!std::is_void_v<R>) return convert<R>(reply.get());
}

// Under holds().m: the child's references at endpoint, before any other call there.
void claim_inherited_locked(const ManagerEndpoint& endpoint) {
  auto& h = holds();
  auto it = h.inherited.find(endpoint.address);
  if (it == h.inherited.end()) return;
  auto token = it->second.token;
  h.inherited.erase(it);
  call_server<void>(endpoint, "claim_all", token);
}

// A child that never used a manager still claims what it inherited, so that its end (not its
// parent's) gives the references back.
void claim_all_inherited() {
  auto& h = holds();
  std::lock_guard lock(h.m);
  while (!h.inherited.empty()) {
    auto endpoint = h.inherited.begin()->second.endpoint;
    try {
      claim_inherited_locked(*endpoint);
    } catch (const Error&) {
      // The manager is gone: nothing left to claim.
    }
  }
}

// The last proxy copy of a hold is gone: its reference goes back to the server.
void give_back(ProxyHold* hold) {
  std::unique_ptr<ProxyHold> owned(hold);
  if (hold->id == server_object_id) return;
  auto& h = holds();
  std::lock_guard lock(h.m);
  h.live.erase(hold);
  try {
    claim_inherited_locked(*hold->endpoint);
    call_server<void>(*hold->endpoint, "decref", hold->id);
  } catch (const Error&) {
    // The manager is gone or was shut down: there is nothing to give back.
  }
}

std::shared_ptr<ProxyHold> new_hold(std::shared_ptr<const ManagerEndpoint> endpoint) {
  return std::shared_ptr<ProxyHold>(new ProxyHold{std::move(endpoint)}, give_back);
}

// Under holds().m: the hold now stands for the server's reference to id.
ProxyRef held(std::shared_ptr<ProxyHold> hold, std::uint64_t id) {
  hold->id = id;
  holds().live.insert(hold.get());
  return {hold->endpoint, id, std::move(hold)};
}

} // namespace

ProxyRef create_held(std::shared_ptr<const ManagerEndpoint> endpoint, std::string& create_request) {
  auto hold = new_hold(endpoint);  // allocated before the lock: its deleter takes it
  std::lock_guard lock(holds().m);
  claim_inherited_locked(*endpoint);
  auto reply = manager_exchange_process(*endpoint, create_request, true);
  return held(std::move(hold), convert<std::uint64_t>(reply.get()));
}

void claim_inherited_references(const ManagerEndpoint& endpoint) {
  std::lock_guard lock(holds().m);
  claim_inherited_locked(endpoint);
}

std::uint64_t take_transit_token(const ProxyRef& ref) {
  if (!ref.endpoint) return 0;
  bool pinned = t_packing_manager_args;  // read now: packing the transit request sets it
  std::lock_guard lock(holds().m);
  try {
    claim_inherited_locked(*ref.endpoint);
    return call_server<std::uint64_t>(*ref.endpoint, "transit", std::vector<std::uint64_t>{ref.id}, pinned, false);
  } catch (const Error&) {
    return 0;  // no such object (any more): the receiver's proxy will say so when used
  }
}

ProxyRef claim_unpacked(std::shared_ptr<const ManagerEndpoint> endpoint, std::uint64_t id, std::uint64_t token) {
  auto hold = new_hold(endpoint);
  std::lock_guard lock(holds().m);
  bool claimed = false;
  try {
    claim_inherited_locked(*endpoint);
    claimed = call_server<bool>(*endpoint, "claim", token, id);
  } catch (const Error&) {
    // An unreachable manager: the proxy's calls will say so.
  }
  if (!claimed) return {std::move(endpoint), id};
  return held(std::move(hold), id);
}

PackingManagerArgs::PackingManagerArgs() : previous_(std::exchange(t_packing_manager_args, true)) {}
PackingManagerArgs::~PackingManagerArgs() { t_packing_manager_args = previous_; }

InheritedReferences::InheritedReferences() : lock_(holds().m) {
  auto& h = holds();
  struct Ids {
    std::shared_ptr<const ManagerEndpoint> endpoint;
    std::vector<std::uint64_t> ids;
  };
  std::unordered_map<std::string, Ids> by_address;
  for (const auto* hold : h.live) {
    auto& entry = by_address[hold->endpoint->address];
    entry.endpoint = hold->endpoint;
    entry.ids.push_back(hold->id);
  }
  for (auto& [address, entry] : by_address) {
    try {
      claim_inherited_locked(*entry.endpoint);
      tokens_.emplace_back(entry.endpoint, call_server<std::uint64_t>(*entry.endpoint, "transit", entry.ids, false, true));
    } catch (const Error&) {
      // The manager is gone: the child's proxies to it have nothing to keep alive.
    }
  }
}

void InheritedReferences::in_child() {
  auto& h = holds();
  h.inherited.clear();
  for (auto& [endpoint, token] : tokens_) h.inherited[endpoint->address] = {endpoint, token};
  tokens_.clear();
  if (!h.inherited.empty() && !std::exchange(h.exit_hook_registered, true)) at_process_exit(claim_all_inherited);
  lock_.unlock();
}

} // namespace multiproc::detail
