"""Python's ProcessPoolExecutor on brigade-bench's process workloads.

Run by `brigade-bench processes` when python3 is on PATH:

    python3 process_pool.py WORKLOAD TASKS CHUNKSIZE WORKERS

Starts the pool and warms every worker up first (process start-up is not what is measured),
then times the workload once and prints one JSON object: {"ms": ..., "checksum": ...}.
"""

import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor


def square(x):
    return x * x


def main():
    workload, tasks, chunksize, workers = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    if workload != "roundtrip":
        raise SystemExit(f"unknown workload {workload}")
    with ProcessPoolExecutor(max_workers=workers) as pool:
        list(pool.map(square, range(workers * 4)))
        start = time.perf_counter()
        results = list(pool.map(square, range(tasks), chunksize=chunksize))
        ms = (time.perf_counter() - start) * 1e3
    print(json.dumps({"ms": ms, "checksum": sum(results) % (1 << 64)}))


if __name__ == "__main__":
    main()
