#!/bin/bash
# Runs examples/distributed_primes (the program, $1) over three "hosts": network namespaces with
# hostnames of their own (host-a runs the pool, host-b and host-c serve nodes), joined by veth
# pairs a-b and a-c. When the pool prints "half way" the node on host-b is killed (SIGKILL); the
# pool re-runs the chunk it held (task_retries) and the count stays right. Then host-c's node is
# stopped, and the namespaces and every process in them are removed, also on failure.
# Needs root, iproute2 and unshare; without them it prints "skipped: ..." (CTest: skipped).
set -u -o pipefail
program=$1
if [ "$(id -u)" != 0 ] || ! ip -V >/dev/null 2>&1 || ! unshare --uts true 2>/dev/null; then
  echo "skipped: network namespaces need root, iproute2 and unshare"
  exit 0
fi

tag=$$
a=dpA$tag b=dpB$tag c=dpC$tag
MULTIPROC_AUTHKEY=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
export MULTIPROC_AUTHKEY  # the nodes and the pool read it from the environment, never argv

processes_in_hosts() { for ns in "$a" "$b" "$c"; do ip netns pids "$ns" 2>/dev/null; done; }

remove_hosts() {
  local pids
  pids=$(processes_in_hosts)
  [ -n "$pids" ] && kill -9 $pids 2>/dev/null
  for ns in "$a" "$b" "$c"; do ip netns del "$ns" 2>/dev/null; done
}
trap remove_hosts EXIT
trap 'exit 1' INT TERM HUP

fail() {
  echo "harness: $*" >&2
  exit 1
}

# A veth pair between namespace $1 (address $3) and $2 (address $4), named after $5.
join_hosts() {
  ip link add "v${5}a$tag" type veth peer name "v${5}b$tag" &&
    ip link set "v${5}a$tag" netns "$1" && ip link set "v${5}b$tag" netns "$2" &&
    ip -n "$1" addr add "$3/24" dev "v${5}a$tag" && ip -n "$2" addr add "$4/24" dev "v${5}b$tag" &&
    ip -n "$1" link set "v${5}a$tag" up && ip -n "$2" link set "v${5}b$tag" up
}

make_hosts() {
  for ns in "$a" "$b" "$c"; do ip netns add "$ns" && ip -n "$ns" link set lo up || return 1; done
  join_hosts "$a" "$b" 10.214.1.1 10.214.1.2 ab && join_hosts "$a" "$c" 10.214.2.1 10.214.2.2 ac
}

# Runs the rest of the command line in namespace $1 under hostname $2, in place of the calling
# (sub)shell and exec all the way down, so a background job's $! is the program's pid.
on_host() {
  local ns=$1 name=$2
  shift 2
  exec ip netns exec "$ns" unshare --uts sh -c 'hostname "$0" && exec "$@"' "$name" "$@"
}

# Waits (at most 30 s) until something listens on port $2 in namespace $1.
wait_listening() {
  timeout 30 sh -c 'until ip netns exec "$0" ss -Hltn "sport = :$1" | grep -q .; do sleep 0.05; done' "$1" "$2"
}

make_hosts || fail "cannot create the network namespaces"
on_host "$b" host-b "$program" --multiproc-node 10.214.1.2:7000 &
node_b=$!
on_host "$c" host-c "$program" --multiproc-node 10.214.2.2:7000 &
node_c=$!
wait_listening "$b" 7000 && wait_listening "$c" 7000 || fail "the nodes did not start listening within 30 s"
echo "harness: nodes serving on host-b (10.214.1.2:7000, pid $node_b) and host-c (10.214.2.2:7000, pid $node_c)"

on_host "$a" host-a timeout 120 "$program" --nodes 10.214.1.2:7000,10.214.2.2:7000 "${@:2}" |
  while IFS= read -r line; do
    echo "$line"
    case $line in
      *"half way"*)
        kill -9 "$node_b" && echo "harness: kill -9 the node on host-b (pid $node_b)" ;;
    esac
  done || fail "the pool program failed (exit $?)"

kill -TERM "$node_c"
wait "$node_b" "$node_c" 2>/dev/null
timeout 10 sh -c 'until [ -z "$(for ns; do ip netns pids "$ns"; done)" ]; do sleep 0.05; done' - "$a" "$b" "$c" ||
  fail "processes left on the hosts: $(processes_in_hosts | tr '\n' ' ')"
echo "harness: no process left on the three hosts"
