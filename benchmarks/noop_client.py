"""websocket_stream.py with handlers that only count: the messages per second that reach a
bot's handlers, through the script's own connection, parsing and records.

    python noop_client.py SCRIPT URL N    prints the messages per second over the first N, then exits
"""

import os
import sys
import time
from pathlib import Path

script, url, wanted = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
sys.path.insert(0, str(script.parent))
import websocket_stream  # noqa: E402  (from the folder given, where no config.py is read)
from alpaca_stream.records import KIND, Record  # noqa: E402

count, first = 0, 0.0


async def count_message(message: Record) -> None:
    global count, first
    count += 1
    if count == 1:
        first = time.perf_counter()
    elif count == wanted:
        print(f"rate {(count - 1) / (time.perf_counter() - first)}", flush=True)
        os._exit(0)


sys.exit(websocket_stream.main(["--url", url], handlers=dict.fromkeys(KIND.values(), count_message)))
