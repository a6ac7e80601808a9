"""The Celery app the cluster bench's workers run (broker from $BENCH_BROKER)."""
import os
import time

import redis
from celery import Celery

app = Celery("bench", broker=os.environ["BENCH_BROKER"])
app.conf.update(
    task_ignore_result=True,
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
    task_default_queue="bench",
)

_redis = None


def _r():
    global _redis
    if _redis is None:
        _redis = redis.Redis.from_url(os.environ["BENCH_BROKER"])
    return _redis


@app.task(name="noop")
def noop(i):
    # Counts completions (the driver waits for the count); the first also says when.
    if _r().incr("bench:done") == 1:
        _r().set("bench:first", time.monotonic_ns())


@app.task(name="stamp")
def stamp():
    _r().rpush("bench:starts", time.monotonic_ns())
