"""Celery with the Redis broker: the cluster bench's anchor (see cluster_anchor.py)."""
import os
import sys

import cluster_anchor as anchor

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    a = anchor.args()
    from cluster_celery_app import noop, stamp

    def start_workers(n):
        return [
            anchor.spawn(
                [sys.executable, "-m", "celery", "-A", "cluster_celery_app", "worker",
                 "--pool", a.pool, "-Q", "bench", "-n", f"w{i}@%h", "-l", "warning",
                 "--without-gossip", "--without-mingle", "--without-heartbeat"],
                HERE,
            )
            for i in range(n)
        ]

    def enqueue_all(n):
        for i in range(n):
            noop.apply_async((i,))

    if a.mode == "throughput":
        anchor.emit(anchor.throughput(a, enqueue_all, start_workers))
    else:
        anchor.emit(anchor.latency(a, lambda: stamp.apply_async(), start_workers))


if __name__ == "__main__":
    main()
