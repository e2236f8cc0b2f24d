"""An alpaca-py bot, unmodified StockDataStream, for tests/test_serve.py: what a user's own bot
does when pointed at websocket_stream.py --serve.

    python alpaca_py_bot.py URL SYMBOL [--then SYMBOL] --count N

Streams SYMBOL's trades with the keys in APCA_API_KEY_ID and APCA_API_SECRET_KEY, printing each
as one JSON line; after 20, with --then, subscribes to another symbol's trades while running;
after N, stops and exits 0."""

import argparse
import json
import os
import threading

from alpaca.data.live import StockDataStream

parser = argparse.ArgumentParser()
parser.add_argument("url")
parser.add_argument("symbol")
parser.add_argument("--then")
parser.add_argument("--count", type=int, required=True)
args = parser.parse_args()
stream = StockDataStream(os.environ["APCA_API_KEY_ID"], os.environ["APCA_API_SECRET_KEY"], url_override=args.url)
count = 0


async def on_trade(trade) -> None:
    global count
    count += 1
    print(json.dumps({"symbol": trade.symbol, "id": trade.id, "timestamp": trade.timestamp.isoformat()}), flush=True)
    # alpaca-py's subscribe and stop, called while it runs, wait for its own event loop: so from
    # another thread, as its users do.
    if count == 20 and args.then:
        threading.Thread(target=stream.subscribe_trades, args=(on_trade, args.then)).start()
    if count == args.count:
        threading.Thread(target=stream.stop).start()


stream.subscribe_trades(on_trade, args.symbol)
stream.run()
