"""Shared by the Celery and RQ anchors: the throughput and latency drivers.

Throughput: every task is queued first, then the workers start; the clock runs from their
start until every task has run (each no-op counts itself in Redis). Latency: one task at a
time on an idle queue, submit -> start (the task pushes time.monotonic_ns(), the same
machine-wide clock the Rust side reads). Prints one JSON object.
"""
import argparse
import json
import os
import signal
import subprocess
import time

import redis


def args():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["throughput", "latency"])
    p.add_argument("--url", required=True)
    p.add_argument("--tasks", type=int, required=True)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--pool", default="prefork")
    a = p.parse_args()
    os.environ["BENCH_BROKER"] = a.url
    return a


def throughput(a, enqueue_all, start_workers):
    r = redis.Redis.from_url(a.url)
    r.flushdb()
    enqueue_all(a.tasks)
    t0 = time.monotonic_ns()
    workers = start_workers(a.workers)
    try:
        while int(r.get("bench:done") or 0) < a.tasks:
            time.sleep(0.001)
        t1 = time.monotonic_ns()
    finally:
        stop(workers)
    first = int(r.get("bench:first"))
    return {"ms": (t1 - t0) / 1e6, "steady_ms": (t1 - first) / 1e6}


def latency(a, submit_stamp, start_workers):
    r = redis.Redis.from_url(a.url)
    r.flushdb()
    workers = start_workers(1)
    try:
        for _ in range(20):  # warm up: the worker is up and connected
            submit_stamp()
            r.blpop("bench:starts")
        starts = []
        begin = time.monotonic_ns()
        for _ in range(a.tasks):
            t0 = time.monotonic_ns()
            submit_stamp()
            _, at = r.blpop("bench:starts")
            starts.append((int(at) - t0) / 1e6)
        ms = (time.monotonic_ns() - begin) / 1e6
    finally:
        stop(workers)
    return {"ms": ms, "start_ms": starts, "result_ms": []}


def spawn(cmd, cwd):
    return subprocess.Popen(
        cmd,
        cwd=cwd,
        env=dict(os.environ),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def stop(workers):
    for w in workers:
        try:
            os.killpg(w.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        w.wait()


def emit(result):
    print(json.dumps(result))
