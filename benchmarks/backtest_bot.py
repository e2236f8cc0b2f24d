"""websocket_stream.py --replay with handlers that count the trades and quotes and, every
10,000 messages, place a market order of one share of the message's symbol, buying and selling
in turn: a backtest, its orders filled by the backtest's broker at the recording's prices.

    python backtest_bot.py SCRIPT FILE    replays FILE --quiet through SCRIPT's main()
"""

import sys
from pathlib import Path
from typing import Any

script, recording = Path(sys.argv[1]), sys.argv[2]
sys.path.insert(0, str(script.parent))
from alpaca.trading.requests import MarketOrderRequest  # noqa: E402

import websocket_stream  # noqa: E402  (from the folder given, where no config.py is read)

ORDER_EVERY = 10_000
count = 0


async def on_market(message: Any) -> None:
    global count
    count += 1
    if count % ORDER_EVERY == 0:
        side = "buy" if count // ORDER_EVERY % 2 else "sell"
        websocket_stream.trading_client().submit_order(
            MarketOrderRequest(symbol=message.symbol, qty=1, side=side, time_in_force="day"))


sys.exit(websocket_stream.main(["--replay", recording, "--quiet"],
                               handlers={"trade": on_market, "quote": on_market}))
