"""The python-asyncio impl of the event-loop suite: standard-library asyncio streams only.

Usage: python3 -c "$(cat asyncio_client.py)" HOST PORT PATH REQUESTS CONNECTIONS
Prints one JSON object: the seconds the requests took (interpreter start-up excluded) and the
body bytes received.
"""

import asyncio
import json
import sys
import time


async def connection(host, port, path, requests):
    reader, writer = await asyncio.open_connection(host, port)
    request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    received = 0
    for _ in range(requests):
        writer.write(request)
        status = await reader.readline()
        if not status.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"bad status line {status!r}")
        length = None
        while True:
            line = await reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        received += len(await reader.readexactly(length))
    writer.close()
    await writer.wait_closed()
    return received


async def main(host, port, path, requests, connections):
    shares = [requests // connections + (i < requests % connections) for i in range(connections)]
    start = time.perf_counter()
    received = await asyncio.gather(*(connection(host, port, path, n) for n in shares))
    return time.perf_counter() - start, sum(received)


if __name__ == "__main__":
    host, port, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    requests, connections = int(sys.argv[4]), int(sys.argv[5])
    elapsed, received = asyncio.run(main(host, port, path, requests, connections))
    print(json.dumps({"elapsed_s": elapsed, "bytes": received}))
