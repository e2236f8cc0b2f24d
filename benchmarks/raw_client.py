"""The floor of the protocol: websockets and msgpack, counting trades, no records, no handler.

    python raw_client.py URL N      prints the trades per second over the first N, then exits
    python raw_client.py URL lines  prints each trade's timestamp, a line each, until stopped
                                    (a client of --serve, timed by the benchmark)

Timestamps are decoded to datetimes, as websocket_stream.py decodes them: msgpack's default
(Timestamp objects) takes about 40% longer to decode, and would lower the floor.
"""

import asyncio
import sys
import time

import msgpack
from websockets.asyncio.client import connect


async def main(url: str, wanted: str) -> None:
    async with connect(url, additional_headers={"Content-Type": "application/msgpack"}) as ws:
        await ws.recv()  # connected
        keys = {"key": "FAKE-BENCH-KEY-ID-01", "secret": "FAKE-BENCH-SECRET-0001"}
        await ws.send(msgpack.packb({"action": "auth", **keys}))
        await ws.recv()  # authenticated
        await ws.send(msgpack.packb({"action": "subscribe", "trades": ["SPY", "TSLA"]}))
        if wanted == "lines":
            async for frame in ws:
                sys.stdout.write("".join(f"{m['t'].isoformat()}\n" for m in msgpack.unpackb(frame, timestamp=3)
                                         if m["T"] == "t"))
                sys.stdout.flush()
        count, first = 0, 0.0
        async for frame in ws:
            for message in msgpack.unpackb(frame, timestamp=3):
                if message["T"] == "t":
                    count += 1
                    if count == 1:
                        first = time.perf_counter()
                    elif count == int(wanted):
                        print(f"rate {(count - 1) / (time.perf_counter() - first)}", flush=True)
                        return


asyncio.run(main(sys.argv[1], sys.argv[2]))
