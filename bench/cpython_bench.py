#!/usr/bin/env python3
"""CPython's multiprocessing doing the same work as bench_ours, measure by measure.

Usage: cpython_bench.py <measure> <n>  -- prints one number, in the measure's unit (see bench/run).
Uses the fork start method, as the C++ library does.
"""
import multiprocessing as mp
import os
import sys
import time

WARMUP_ROUND_TRIPS = 100
MIB = 1 << 20
# Steps of burn() per task in pool_cpu_scaling: about 10 ms of one core here, like the C++ task.
BURN_ITERS_PER_TASK = 50_000


def echo(conn, rounds):
    for _ in range(rounds):
        conn.send(conn.recv())


def round_trips(conn, rounds):
    for i in range(rounds):
        conn.send(i)
        if conn.recv() != i:
            raise RuntimeError("echo returned the wrong value")


def pipe_roundtrip_small(n):
    """µs per send + recv of a small int echoed by another process."""
    parent, child = mp.Pipe()
    p = mp.Process(target=echo, args=(child, WARMUP_ROUND_TRIPS + n))
    p.start()
    child.close()
    round_trips(parent, WARMUP_ROUND_TRIPS)
    start = time.perf_counter()
    round_trips(parent, n)
    elapsed = time.perf_counter() - start
    p.join()
    return elapsed / n * 1e6


def drain_then_ack(conn, messages):
    for _ in range(messages):
        conn.recv_bytes()
    conn.send(True)


def pipe_bulk_1mib(n):
    """GB/s of n 1 MiB send_bytes() until the receiving process has them all."""
    parent, child = mp.Pipe()
    p = mp.Process(target=drain_then_ack, args=(child, n))
    p.start()
    child.close()
    payload = b"x" * MIB
    start = time.perf_counter()
    for _ in range(n):
        parent.send_bytes(payload)
    parent.recv()
    elapsed = time.perf_counter() - start
    p.join()
    return n * MIB / elapsed / 1e9


SENTINEL = -1


def produce(q, count):
    for i in range(count):
        q.put(i)
    q.put(SENTINEL)


def consume(q):
    while q.get() != SENTINEL:
        pass


def queue_1to1(n):
    """Items/s from one producer process to the main process."""
    q = mp.Queue()
    start = time.perf_counter()
    p = mp.Process(target=produce, args=(q, n))
    p.start()
    consume(q)
    elapsed = time.perf_counter() - start
    p.join()
    return n / elapsed


def queue_2to2(n):
    """Items/s from two producer processes to two consumer processes, n items in all."""
    q = mp.Queue()
    start = time.perf_counter()
    procs = [mp.Process(target=produce, args=(q, n // 2)) for _ in range(2)]
    procs += [mp.Process(target=consume, args=(q,)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    return n / (time.perf_counter() - start)


def nothing():
    pass


def process_start_join(n):
    """µs per Process(nothing).start() + join()."""
    start = time.perf_counter()
    for _ in range(n):
        p = mp.Process(target=nothing)
        p.start()
        p.join()
    return (time.perf_counter() - start) / n * 1e6


def start_join_in(context, n):
    """µs per Process(nothing).start() + join() in a context; one untimed start first (it
    starts the fork server)."""
    ctx = mp.get_context(context)
    if context == "forkserver":
        p = ctx.Process(target=nothing)
        p.start()
        p.join()
    start = time.perf_counter()
    for _ in range(n):
        p = ctx.Process(target=nothing)
        p.start()
        p.join()
    return (time.perf_counter() - start) / n * 1e6


def process_start_join_forkserver(n):
    return start_join_in("forkserver", n)


def process_start_join_spawn(n):
    return start_join_in("spawn", n)


def square(x):
    return x * x


# A map of 100k trivial tasks is short: time several, as bench_ours does.
TRIVIAL_MAP_ROUNDS = 5


def timed_map(n, chunksize, rounds):
    with mp.Pool() as pool:
        pool.map(square, range(100))
        start = time.perf_counter()
        for _ in range(rounds):
            if pool.map(square, range(n), chunksize)[-1] != square(n - 1):
                raise RuntimeError("map returned wrong results")
        return n * rounds / (time.perf_counter() - start)


def pool_map_trivial(n):
    """Tasks/s of Pool().map(square, range(n)) at the default chunksize."""
    return timed_map(n, None, TRIVIAL_MAP_ROUNDS)


def pool_map_chunksize1(n):
    """Tasks/s of Pool().map(square, range(n), chunksize=1)."""
    return timed_map(n, 1, 1)


def pool_apply_async_roundtrip(n):
    """µs per apply_async(square, (i,)).get(), one task in flight."""
    with mp.Pool() as pool:
        for i in range(WARMUP_ROUND_TRIPS):
            pool.apply_async(square, (i,)).get()
        start = time.perf_counter()
        for i in range(n):
            pool.apply_async(square, (i,)).get()
        return (time.perf_counter() - start) / n * 1e6


def dict_ops(d, n, conn):
    start = time.perf_counter()
    for i in range(n // 2):
        d[i % 64] = i
        d[i % 64]
    conn.send(time.perf_counter() - start)


def manager_dict_op(n):
    """µs per d[k] = v or d[k] from a child process on a Manager().dict()."""
    with mp.Manager() as manager:
        d = manager.dict()
        parent, child = mp.Pipe()
        p = mp.Process(target=dict_ops, args=(d, n, child))
        p.start()
        elapsed = parent.recv()
        p.join()
        return elapsed / (n // 2 * 2) * 1e6


def lock_uncontended(n):
    """ns per acquire() + release() of an uncontended Lock."""
    lock = mp.Lock()
    acquire, release = lock.acquire, lock.release
    start = time.perf_counter()
    for _ in range(n):
        acquire()
        release()
    return (time.perf_counter() - start) / n * 1e9


def locked_increments(value, n):
    for _ in range(n):
        with value.get_lock():
            value.value += 1


def value_locked_increment_2proc(n):
    """Increments/s when two processes each add n to a Value under its lock."""
    value = mp.Value("l", 0)
    start = time.perf_counter()
    procs = [mp.Process(target=locked_increments, args=(value, n)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    elapsed = time.perf_counter() - start
    if value.value != 2 * n:
        raise RuntimeError("lost increments")
    return 2 * n / elapsed


def burn(iters):
    x = 88172645463325252
    mask = (1 << 64) - 1
    for _ in range(iters):
        x ^= (x << 13) & mask
        x ^= x >> 7
        x ^= (x << 17) & mask
    return x


def pool_cpu_scaling(n):
    """Parallel efficiency of Pool(cpu_count()).map over n CPU-bound tasks against a serial loop."""
    tasks = [BURN_ITERS_PER_TASK] * n
    start = time.perf_counter()
    expected = [burn(t) for t in tasks]
    serial = time.perf_counter() - start
    cores = os.cpu_count()
    with mp.Pool(cores) as pool:
        pool.map(square, range(cores))
        start = time.perf_counter()
        got = pool.map(burn, tasks)
        parallel = time.perf_counter() - start
    if got != expected:
        raise RuntimeError("parallel results differ")
    return serial / (cores * parallel)


def private_kib(pid):
    total = 0
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("Private_Clean", "Private_Dirty"):
                total += int(rest.split()[0])
    return total


def worker_rss_kib(n):
    """KiB of private memory of the largest Pool(2) worker after a map of n trivial tasks."""
    with mp.Pool(2) as pool:
        pool.map(square, range(n))
        return max(private_kib(w.pid) for w in pool._pool)


_busy = None


def _remember_busy(event):
    global _busy
    _busy = event


def _nap_busy():
    _busy.set()
    time.sleep(3600)


def supervisor_restart(n):
    """µs from SIGKILL of a Pool(1) worker to its replacement answering apply(); the pool's
    handler thread looks for dead workers every 0.1 s. The worker is killed while it runs a
    task: an idle one may hold the task queue's read lock, and killing it hangs the pool."""
    import signal
    busy = mp.Event()
    total = 0.0
    with mp.Pool(1, initializer=_remember_busy, initargs=(busy,)) as pool:
        pool.apply(square, (1,))
        for _ in range(n):
            busy.clear()
            pool.apply_async(_nap_busy)
            busy.wait()
            worker = pool._pool[0]
            start = time.perf_counter()
            os.kill(worker.pid, signal.SIGKILL)
            if pool.apply(square, (3,)) != 9:
                raise RuntimeError("apply returned a wrong result")
            total += time.perf_counter() - start
    return total / n * 1e6
def other_hosts(count):
    """The hosts bench/run names in BENCH_HOSTS ("netns:ip,..."), or count times this one."""
    spec = os.environ.get("BENCH_HOSTS")
    if not spec:
        return [("", "127.0.0.1")] * count
    hosts = [tuple(item.split(":", 1)) for item in spec.split(",")]
    if len(hosts) < count:
        raise RuntimeError("BENCH_HOSTS names fewer hosts than the measure needs")
    return hosts[:count]


def enter_netns(netns):
    """Moves this (freshly forked) process into a network namespace; Python 3.11 has no setns."""
    if not netns:
        return
    import ctypes
    clone_newnet = 0x40000000
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/run/netns/{netns}", os.O_RDONLY)
    try:
        if libc.setns(fd, clone_newnet) != 0:
            raise OSError(ctypes.get_errno(), f"cannot enter network namespace {netns}")
    finally:
        os.close(fd)


def job_queue_worker(netns, address, authkey):
    from multiprocessing.managers import BaseManager
    enter_netns(netns)

    class Client(BaseManager):
        pass
    Client.register("jobs")
    Client.register("results")
    manager = Client(address=address, authkey=authkey)
    manager.connect()
    jobs, results = manager.jobs(), manager.results()
    while True:
        x = jobs.get()
        if x is None:
            return
        results.put(square(x))


def node_pool_map(n):
    """Tasks/s of the seed's BaseManager job queue: n squares through a job queue served on this
    host (BENCH_HOST_IP), done by two worker processes on two other hosts (other_hosts) that
    connect over TCP, one job per item as the seed does."""
    import queue
    from multiprocessing.managers import BaseManager
    jobs_q, results_q = queue.Queue(), queue.Queue()

    class Server(BaseManager):
        pass
    Server.register("jobs", callable=lambda: jobs_q)
    Server.register("results", callable=lambda: results_q)
    authkey = b"bench node key"
    manager = Server(address=(os.environ.get("BENCH_HOST_IP", "127.0.0.1"), 0), authkey=authkey)
    manager.start()
    try:
        jobs, results = manager.jobs(), manager.results()
        workers = [mp.Process(target=job_queue_worker, args=(netns, manager.address, authkey))
                   for netns, _ip in other_hosts(2)]
        for w in workers:
            w.start()
        start = time.perf_counter()
        for x in range(n):
            jobs.put(x)
        total = sum(results.get() for _ in range(n))
        elapsed = time.perf_counter() - start
        for _ in workers:
            jobs.put(None)
        for w in workers:
            w.join()
        if total != sum(square(x) for x in range(n)):
            raise RuntimeError("the job queue returned wrong results")
        return n / elapsed
    finally:
        manager.shutdown()


MEASURES = {
    f.__name__: f
    for f in (pipe_roundtrip_small, pipe_bulk_1mib, queue_1to1, queue_2to2, process_start_join,
              process_start_join_forkserver, process_start_join_spawn,
              pool_map_trivial, pool_map_chunksize1, pool_apply_async_roundtrip, manager_dict_op,
              lock_uncontended, value_locked_increment_2proc, pool_cpu_scaling, worker_rss_kib,
              supervisor_restart, node_pool_map)
}


def main(argv):
    if len(argv) != 3 or argv[1] not in MEASURES or not argv[2].isdigit() or int(argv[2]) <= 0:
        print(f"usage: {argv[0]} <{'|'.join(MEASURES)}> <n>", file=sys.stderr)
        return 2
    mp.set_start_method("fork")
    print(f"{MEASURES[argv[1]](int(argv[2])):.6g}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
