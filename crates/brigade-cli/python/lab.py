"""brigade lab's `python` experiment: the cpu-bound and I/O work in Python, under each model.

Standard library only (Python 3.8+), Linux (multiprocessing forks). `brigade lab python`
embeds this file and runs it as `python3 -c SOURCE MODE ARGS...`; it runs on its own too:

    python3 lab.py sum START END [START END ...]
        prints a JSON list: the kernel's sum over each range (to check it against Rust's)
    python3 lab.py cpu N WORKERS CHUNKS
        sums the kernel over range(N), cut into CHUNKS ranges: sequentially, on a thread pool
        and a process pool of WORKERS each, and as coroutines on one asyncio loop
    python3 lab.py io HOST PORT DELAY_MS ROUNDS CONNECTIONS WORKERS
        sends GET /delay/DELAY_MS to the lab's HTTP server, ROUNDS requests per connection:
        one blocking connection; CONNECTIONS blocking connections on as many threads; WORKERS
        blocking connections, one per process; CONNECTIONS asyncio streams on one loop

cpu and io print a "ready" line first, then one "run" line per model, each one JSON object:

    {"type": "ready", "ready_ns": ..., "version": "3.11.7", "gil": true}
    {"type": "run", "model": "threads", "unit": "thread", "start_ns": ..., "end_ns": ...,
     "setup_ns": ..., "cpu_ns": ..., "checksum": ..., "spans": [[worker, kind, start_ns, end_ns]]}

Times are time.monotonic_ns(), the CLOCK_MONOTONIC that the Rust side reads, so the spans
land on its time axis. start_ns..end_ns is the measured run; setup_ns is what starting the
pool (or loop) took before it, kept out of the run. `unit` says what a span's worker is: a
thread (numbered 1.. in order of first span) or a process (its pid). cpu_ns (cpu mode only)
is the CPU time the chunks consumed, summed over workers. checksum is the kernel sum (cpu) or
the body bytes received (io).

An error is a traceback on stderr and a non-zero exit; pools are shut down on the way out,
so no worker process outlives the script.
"""

import asyncio
import json
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

# The kernel: brigade-cli's cpu_bound::kernel, with Python's unbounded integers masked to the
# 64 bits Rust's wrapping arithmetic keeps.
MASK = (1 << 64) - 1
MUL = 6364136223846793005
INC = 1442695040888963407
ROUNDS = range(16)

# A chunk is computed in slices this long (about 0.7 ms of CPython), with the clocks read
# between slices, so a thread that lost the GIL (or its core) shows as a gap in its bars.
SLICE = 256
# Off the CPU for longer than this within one slice counts as waiting. The GIL changes hands
# every 5 ms (sys.getswitchinterval()), well above it; clock jitter is well below.
WAITED_NS = 1_000_000

# No socket operation or start-up wait may take longer than this: a stuck run fails instead
# of hanging (the Rust side also kills the whole process group past its own deadline).
TIMEOUT_S = 30

now = time.monotonic_ns


def chunk_sum(start, end):
    total = 0
    for x in range(start, end):
        for _ in ROUNDS:
            x = (x * MUL + INC) & MASK
            x ^= x >> 29
        total += x & 0xFFFF
    return total


def run_chunk(start, end, worker):
    """Sums one chunk; returns (sum, CPU ns, spans). A span is CPU time until the slice in
    which the thread was off the CPU for over WAITED_NS; the time it was off is a "block"
    span (placed at the end of that slice: the slice is too short for it to matter where)."""
    total = 0
    spans = []
    cpu = 0
    wall0, cpu0 = now(), time.thread_time_ns()
    span_start = wall0
    for i in range(start, end, SLICE):
        total += chunk_sum(i, min(i + SLICE, end))
        wall1, cpu1 = now(), time.thread_time_ns()
        ran = cpu1 - cpu0
        if (wall1 - wall0) - ran > WAITED_NS:
            spans.append([worker, "cpu", span_start, wall0 + ran])
            spans.append([worker, "block", wall0 + ran, wall1])
            span_start = wall1
        cpu += ran
        wall0, cpu0 = wall1, cpu1
    if span_start < wall0:
        spans.append([worker, "cpu", span_start, wall0])
    return total, cpu, spans


def emit(line):
    sys.stdout.write(json.dumps(line, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def emit_run(model, unit, setup_ns, start_ns, end_ns, results, cpu_mode):
    """Prints one model's run line. results: (checksum part, CPU ns or None, spans) per
    chunk or connection."""
    spans = [span for _, _, part in results for span in part]
    if unit == "thread":
        # Thread idents are large and reused; the report wants small numbers per model.
        ordinals = {}
        for span in sorted(spans, key=lambda s: s[2]):
            ordinals.setdefault(span[0], len(ordinals) + 1)
        for span in spans:
            span[0] = ordinals[span[0]]
    line = {
        "type": "run",
        "model": model,
        "unit": unit,
        "start_ns": start_ns,
        "end_ns": end_ns,
        "setup_ns": setup_ns,
        "checksum": sum(r[0] for r in results),
        "spans": spans,
    }
    if cpu_mode:
        line["cpu_ns"] = sum(r[1] for r in results)
    emit(line)


def warm_threads(pool, n):
    """Blocks until the pool has n threads: each must be up to pass the barrier."""
    barrier = threading.Barrier(n)
    for f in [pool.submit(barrier.wait, TIMEOUT_S) for _ in range(n)]:
        f.result()


def die_with_parent():
    """Has Linux kill this process when its parent dies. brigade runs the script in a process
    group of its own (so that it can kill the pool's workers with it), which a Ctrl-C on
    brigade does not reach: without this, a run would go on computing after brigade is gone.
    Best effort: a Python without ctypes just lacks it."""
    try:
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None).prctl(pr_set_pdeathsig, signal.SIGKILL)
    except (ImportError, OSError, AttributeError):
        pass


def _process_ready(barrier):
    die_with_parent()
    barrier.wait(TIMEOUT_S)


def start_processes(n):
    """A pool of n worker processes, each started and ready. Fork, because the workers run
    functions of this script, which `python3 -c` leaves no file to re-import from."""
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(n + 1)
    pool = context.Pool(n, initializer=_process_ready, initargs=(barrier,))
    try:
        barrier.wait(TIMEOUT_S)
    except BaseException:
        pool.terminate()
        pool.join()
        raise
    return pool


def run_in_processes(n, work, inputs):
    """(setup_ns, start_ns, end_ns, results) of work over inputs on a fresh pool of n."""
    t0 = now()
    pool = start_processes(n)
    try:
        start = now()
        results = pool.map(work, inputs, chunksize=1)
        end = now()
    finally:
        pool.terminate()
        pool.join()
    return start - t0, start, end, results


def run_in_threads(n, work, inputs):
    """(setup_ns, start_ns, end_ns, results) of work over inputs on a fresh pool of n."""
    t0 = now()
    with ThreadPoolExecutor(n) as pool:
        warm_threads(pool, n)
        start = now()
        results = list(pool.map(work, inputs))
        end = now()
    return start - t0, start, end, results


def run_on_loop(main):
    """(setup_ns, start_ns, end_ns, results) of coroutine function main on a new loop."""
    t0 = now()

    async def timed():
        start = now()
        results = await asyncio.wait_for(main(), TIMEOUT_S)
        return start, now(), results

    start, end, results = asyncio.run(timed())
    return start - t0, start, end, results


def _thread_chunk(bounds):
    return run_chunk(bounds[0], bounds[1], threading.get_ident())


def _process_chunk(bounds):
    return run_chunk(bounds[0], bounds[1], os.getpid())


def cpu(n, workers, chunks):
    # The same ranges as the Rust side's.
    bounds = [(n * i // chunks, n * (i + 1) // chunks) for i in range(chunks)]

    start = now()
    results = [_thread_chunk(b) for b in bounds]
    emit_run("sequential", "thread", 0, start, now(), results, True)

    # Before the process pool: fork wants a process with no other threads.
    emit_run("threads", "thread", *run_in_threads(workers, _thread_chunk, bounds), True)
    emit_run("processes", "process", *run_in_processes(workers, _process_chunk, bounds), True)

    async def chunk(b):
        # Nothing in it awaits, so each chunk runs to the end before the next starts.
        return _thread_chunk(b)

    async def gathered():
        return await asyncio.gather(*(chunk(b) for b in bounds))

    emit_run("asyncio", "thread", *run_on_loop(gathered), True)


def request_bytes(host, path):
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()


def content_length(line, length):
    name, _, value = line.partition(b":")
    if name.strip().lower() == b"content-length":
        return int(value)
    return length


def blocking_connection(host, port, path, requests, worker):
    """One keep-alive connection sending requests GETs in turn; (bytes, None, spans)."""
    spans = []
    received = 0
    request = request_bytes(host, path)
    with socket.create_connection((host, port), timeout=TIMEOUT_S) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with sock.makefile("rb") as reader:
            for _ in range(requests):
                start = now()
                sock.sendall(request)
                status = reader.readline()
                if not status.startswith(b"HTTP/1.1 200"):
                    raise RuntimeError(f"bad status line {status!r}")
                length = None
                while True:
                    line = reader.readline()
                    if line in (b"\r\n", b""):
                        break
                    length = content_length(line, length)
                if length is None:
                    raise RuntimeError("no content-length")
                body = reader.read(length)
                if len(body) != length:
                    raise RuntimeError("connection closed mid-body")
                received += length
                spans.append([worker, "block", start, now()])
    return received, None, spans


async def async_connection(host, port, path, requests):
    """The asyncio twin of blocking_connection; spans are "wait": the loop thread is free."""
    worker = threading.get_ident()
    spans = []
    received = 0
    request = request_bytes(host, path)
    reader, writer = await asyncio.open_connection(host, port)
    try:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for _ in range(requests):
            start = now()
            writer.write(request)
            status = await reader.readline()
            if not status.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(f"bad status line {status!r}")
            length = None
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b""):
                    break
                length = content_length(line, length)
            if length is None:
                raise RuntimeError("no content-length")
            received += len(await reader.readexactly(length))
            spans.append([worker, "wait", start, now()])
    finally:
        writer.close()
        await writer.wait_closed()
    return received, None, spans


def io(host, port, delay_ms, rounds, connections, workers):
    path = f"/delay/{delay_ms}"

    def thread_connection(_):
        return blocking_connection(host, port, path, rounds, threading.get_ident())

    start = now()
    results = [thread_connection(0)]
    emit_run("sequential", "thread", 0, start, now(), results, False)

    emit_run(
        "threads",
        "thread",
        *run_in_threads(connections, thread_connection, range(connections)),
        False,
    )

    emit_run(
        "processes",
        "process",
        *run_in_processes(workers, _process_connection, [(host, port, path, rounds)] * workers),
        False,
    )

    async def gathered():
        return await asyncio.gather(
            *(async_connection(host, port, path, rounds) for _ in range(connections))
        )

    emit_run("asyncio", "thread", *run_on_loop(gathered), False)


def _process_connection(args):
    host, port, path, rounds = args
    return blocking_connection(host, port, path, rounds, os.getpid())


def ready():
    gil = getattr(sys, "_is_gil_enabled", lambda: True)()
    version = ".".join(str(v) for v in sys.version_info[:3])
    emit({"type": "ready", "ready_ns": now(), "version": version, "gil": gil})


def main(argv):
    usage = "usage: lab.py sum START END ... | cpu N WORKERS CHUNKS | io HOST PORT DELAY_MS ROUNDS CONNECTIONS WORKERS"
    if not argv:
        raise SystemExit(usage)
    mode, args = argv[0], argv[1:]
    if mode == "sum" and args and len(args) % 2 == 0:
        bounds = [int(a) for a in args]
        emit([chunk_sum(s, e) for s, e in zip(bounds[::2], bounds[1::2])])
    elif mode == "cpu" and len(args) == 3:
        n, workers, chunks = (int(a) for a in args)
        die_with_parent()
        ready()
        cpu(n, workers, chunks)
    elif mode == "io" and len(args) == 6:
        host = args[0]
        port, delay_ms, rounds, connections, workers = (int(a) for a in args[1:])
        die_with_parent()
        ready()
        io(host, port, delay_ms, rounds, connections, workers)
    else:
        raise SystemExit(usage)


if __name__ == "__main__":
    main(sys.argv[1:])
