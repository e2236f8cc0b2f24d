"""The script a learner would write from alpaca-py's documentation: the benchmark's baseline.

    python bare_lesson.py URL [--quotes]       print every trade (or quote), as the lesson does
    python bare_lesson.py URL --fstring [--quotes]
                                               the same, one f-string a line, as a learner
                                               often writes it instead
    python bare_lesson.py URL --noop N         a handler that only counts trades: alpaca-py's own
                                               ceiling; prints the trades per second over the
                                               first N, then exits
"""

import os
import sys
import time

from alpaca.data.live import StockDataStream

url, noop, quotes = sys.argv[1], "--noop" in sys.argv, "--quotes" in sys.argv
fstring = "--fstring" in sys.argv
stream = StockDataStream("FAKE-BENCH-KEY-ID-01", "FAKE-BENCH-SECRET-0001", url_override=url)


async def on_trade(trade):
    print(trade.symbol, trade.size, trade.price, trade.timestamp, flush=True)


async def on_quote(quote):
    print(quote.symbol, quote.bid_price, quote.ask_price, quote.timestamp, flush=True)


count, first = 0, 0.0


async def on_trade_fstring(trade):
    print(f"{trade.symbol} {trade.size} {trade.price} {trade.timestamp}", flush=True)


async def on_quote_fstring(quote):
    print(f"{quote.symbol} {quote.bid_price} {quote.ask_price} {quote.timestamp}", flush=True)


async def count_trades(trade):
    global count, first
    count += 1
    if count == 1:
        first = time.perf_counter()
    elif count == int(sys.argv[-1]):
        print(f"rate {(count - 1) / (time.perf_counter() - first)}", flush=True)
        os._exit(0)


if quotes:
    stream.subscribe_quotes(on_quote_fstring if fstring else on_quote, "SPY", "TSLA")
elif noop:
    stream.subscribe_trades(count_trades, "SPY", "TSLA")
else:
    stream.subscribe_trades(on_trade_fstring if fstring else on_trade, "SPY", "TSLA")
stream.run()
