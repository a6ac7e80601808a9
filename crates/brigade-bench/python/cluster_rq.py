"""RQ with SimpleWorker (no fork per job): the cluster bench's anchor (see cluster_anchor.py)."""
import os
import sys

import redis
from rq import Queue

import cluster_anchor as anchor

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    a = anchor.args()
    import cluster_rq_app

    q = Queue("bench", connection=redis.Redis.from_url(a.url))

    def start_workers(n):
        return [
            anchor.spawn(
                [sys.executable, "-m", "rq.cli", "worker", "--url", a.url,
                 "--worker-class", "rq.worker.SimpleWorker", "--quiet", "bench"],
                HERE,
            )
            for _ in range(n)
        ]

    def enqueue_all(n):
        jobs = [Queue.prepare_data(cluster_rq_app.noop, (i,), result_ttl=0) for i in range(n)]
        for start in range(0, n, 1000):
            q.enqueue_many(jobs[start:start + 1000])

    if a.mode == "throughput":
        anchor.emit(anchor.throughput(a, enqueue_all, start_workers))
    else:
        anchor.emit(anchor.latency(
            a, lambda: q.enqueue(cluster_rq_app.stamp, result_ttl=0), start_workers))


if __name__ == "__main__":
    main()
