"""The functions the cluster bench's RQ workers run (broker from $BENCH_BROKER)."""
import os
import time

import redis

_redis = None


def _r():
    global _redis
    if _redis is None:
        _redis = redis.Redis.from_url(os.environ["BENCH_BROKER"])
    return _redis


def noop(i):
    if _r().incr("bench:done") == 1:
        _r().set("bench:first", time.monotonic_ns())


def stamp():
    _r().rpush("bench:starts", time.monotonic_ns())
