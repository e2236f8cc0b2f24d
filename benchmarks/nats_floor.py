"""nats-py's own floor for a feeder: N payloads of the shape the feeder publishes (a trade as
--json prints it, each with its own id), built before the clock starts, published with
nats-py's publish() and their Nats-Msg-Id header, 20 to a frame as the benchmark's server
sends them. What is left of a message's time is nats-py's and the NATS server's.

    python nats_floor.py NATS_URL N    publishes N, then exits
"""

import asyncio
import hashlib
import sys

import nats

FRAME = 20  # messages the benchmark's server sends a frame


async def publish(url: str, count: int) -> None:
    messages = []
    for number in range(count):
        symbol = ("SPY", "TSLA")[number % 2]
        payload = (f'{{"type": "trade", "symbol": "{symbol}", "price": {600 + number % 100 / 100}, '
                   f'"size": 100, "timestamp": "2026-11-24T17:53:16.{number % 1_000_000:06d}+00:00", '
                   f'"exchange": "V", "conditions": ["@"], "id": {number}, "tape": "B"}}').encode()
        messages.append((f"alpaca.trades.{symbol}", payload,
                         {"Nats-Msg-Id": hashlib.blake2b(payload, digest_size=12).hexdigest()}))
    client = await nats.connect(url, pending_size=64 * 1024 * 1024)
    for start in range(0, count, FRAME):
        for subject, payload, headers in messages[start:start + FRAME]:
            await client.publish(subject, payload, headers=headers)
        await asyncio.sleep(0)  # as the feeder waits for its next frame
    await client.flush()
    await client.close()


if __name__ == "__main__":
    asyncio.run(publish(sys.argv[1], int(sys.argv[2])))
