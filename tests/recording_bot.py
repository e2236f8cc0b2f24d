"""websocket_stream.py with the tests' own handlers, which print every message as one JSON line:
its kind, and its fields by their alpaca-py names (and any that Alpaca added, by their wire
keys). The end-to-end tests of the stream's promises run this instead of the script, so that
they pass whatever a student writes in its handlers.

    python recording_bot.py [the script's arguments]
"""

import asyncio
import json
import os
import sys
import time

import websocket_stream
from alpaca_stream.records import KIND, Record, Trade, as_json

# A handler that fails on one trade id, to show that this costs that message only.
FAIL_ON_TRADE = int(os.environ.get("RECORDING_BOT_FAIL_ON_TRADE", "0"))
# A handler that blocks the event loop this many seconds on each message, as time.sleep in a
# student's handler does; its lines then say when it got the message and when it returned
# (time.monotonic(), the machine's clock, the same in the test).
BLOCK = float(os.environ.get("RECORDING_BOT_BLOCK", "0"))
# A handler that starts, on the first message, a blocking call of this many seconds with
# in_background(asyncio.to_thread(...)), as a student's order through a blocking client does.
BACKGROUND_BLOCK = float(os.environ.get("RECORDING_BOT_BACKGROUND_BLOCK", "0"))
started = False


async def record(message: Record) -> None:
    global started
    kind = KIND[type(message)]
    if BACKGROUND_BLOCK and not started:
        started = True
        websocket_stream.in_background(asyncio.to_thread(time.sleep, BACKGROUND_BLOCK))
    if isinstance(message, Trade) and message.id == FAIL_ON_TRADE:
        raise RuntimeError(f"the test handler fails on trade {FAIL_ON_TRADE}")
    # Every field it has, those Alpaca added without a name here too, times as --json has them.
    if BLOCK:
        print(json.dumps({"kind": kind, "got_at": time.monotonic()}), flush=True)
        time.sleep(BLOCK)
        print(json.dumps({"kind": "returned", "at": time.monotonic()}), flush=True)
        return
    print(json.dumps({"kind": kind, **message.named()}, default=as_json))


if __name__ == "__main__":
    sys.exit(websocket_stream.main(handlers=dict.fromkeys(KIND.values(), record)))  # every market's kinds
