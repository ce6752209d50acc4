// Two "hosts" for the tests that cross machines: network namespaces joined by a veth pair.
// Creating them needs root and iproute2; tests skip (with a WARN) without them.
#pragma once

#include <fcntl.h>
#include <sched.h>
#include <unistd.h>

#include <cstdlib>
#include <stdexcept>
#include <string>

namespace multiproc_test {

inline bool run_quietly(const std::string& command) {
  return std::system(("timeout 10 " + command + " >/dev/null 2>&1").c_str()) == 0;
}

// Two network namespaces, 10.213.0.1/24 and 10.213.0.2/24, joined only to each other. Names are
// unique per test process; the destructor removes both (which removes the veth pair).
class TwoHosts {
public:
  TwoHosts()
      : a_("mpA" + std::to_string(::getpid())), b_("mpB" + std::to_string(::getpid())),
        va_("va" + std::to_string(::getpid())), vb_("vb" + std::to_string(::getpid())) {
    const auto& va = va_;
    const auto& vb = vb_;
    ok_ = run_quietly("ip netns add " + a_) && run_quietly("ip netns add " + b_) &&
          run_quietly("ip link add " + va + " type veth peer name " + vb) &&
          run_quietly("ip link set " + va + " netns " + a_) && run_quietly("ip link set " + vb + " netns " + b_) &&
          run_quietly("ip -n " + a_ + " addr add 10.213.0.1/24 dev " + va) &&
          run_quietly("ip -n " + b_ + " addr add 10.213.0.2/24 dev " + vb) &&
          run_quietly("ip -n " + a_ + " link set " + va + " up") && run_quietly("ip -n " + b_ + " link set " + vb + " up") &&
          run_quietly("ip -n " + a_ + " link set lo up") && run_quietly("ip -n " + b_ + " link set lo up");
  }
  ~TwoHosts() {
    run_quietly("ip netns del " + a_);
    run_quietly("ip netns del " + b_);
  }
  TwoHosts(const TwoHosts&) = delete;
  TwoHosts& operator=(const TwoHosts&) = delete;
  bool ok() const { return ok_; }
  const std::string& a() const { return a_; }
  const std::string& b() const { return b_; }
  // Cuts the wire: b's end of the pair goes down, so packets between the hosts are lost
  // silently, as when a cable is pulled (no reset, no FIN).
  bool cut() { return run_quietly("ip -n " + b_ + " link set " + vb_ + " down"); }

private:
  std::string a_, b_, va_, vb_;
  bool ok_ = false;
};

inline void enter_netns(const std::string& name) {
  int fd = ::open(("/run/netns/" + name).c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0 || ::setns(fd, CLONE_NEWNET) != 0) throw std::runtime_error("cannot enter network namespace " + name);
  ::close(fd);
}

// Whether this process may create network namespaces.
inline bool can_make_hosts() { return ::geteuid() == 0 && run_quietly("ip -V"); }

} // namespace multiproc_test
