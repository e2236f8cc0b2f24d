#!/usr/bin/env python3
"""Stream live market data from Alpaca: push instead of polling (lesson 28, "faster than HTTP").

Every message is printed on stdout the moment it arrives, one line each; the log goes to
stderr. Ctrl+C stops. Your own logic goes in the handlers just below; the machinery they
need (the keys, the stream and its reconnect wrapper) is in the package alpaca_stream.

    python websocket_stream.py                      # trades of SPY and TSLA, free IEX feed
    python websocket_stream.py AAPL --quotes --bars # quotes and minute bars of AAPL
    python websocket_stream.py --demo               # no keys, no network: demo data
    python websocket_stream.py --publish nats://127.0.0.1:4222   # and to a NATS broker, for
    python websocket_stream.py --source nats://127.0.0.1:4222    # more bots on one connection

exit statuses:
  0  stopped by you (Ctrl+C, SIGTERM) or by the reader (| head)
  1  something unexpected (a bug: please report it)
  2  configuration or usage error: keys, arguments, --url, alpaca-py version,
     no NATS server
  3  refused by Alpaca: wrong keys (402), symbol limit (405), feed not in your
     plan (409, 410), a token without the market data scope (411)
  130  forced by a second Ctrl+C
"""

from __future__ import annotations

import asyncio  # asyncio and time: for your handlers, as in the README's examples
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

try:
    import alpaca_stream
    from alpaca_stream import (
        Bar,
        CommandLine,
        DailyBar,
        Handlers,
        Luld,
        OrderImbalance,
        Quote,
        Session,
        Trade,
        TradeCancel,
        TradeCorrection,
        TradingStatus,
        UpdatedBar,
        in_background,  # for your handlers: the README shows how
        show,
        subscribe,
        unsubscribe,
    )
except ModuleNotFoundError as missing:  # the package, or what it needs, is not installed
    print(f"{missing.name} is missing: pip install -r requirements.txt, in the project's folder",
          file=sys.stderr)
    sys.exit(2)


# Your part: the handlers, where your trading logic goes ------------------------------------
#
# Each is called once for every message of its kind, in the order Alpaca sent them. The
# defaults print it: replace show() with your strategy (the README has examples). Keep a
# handler quick, since the next messages wait while it runs: start slow work, an order over
# HTTP say, with in_background() and return. If a handler raises, the error is logged and
# the stream goes on with the next message.
#
# A record holds what Alpaca sent, by alpaca-py's names: trade.symbol, trade.price,
# trade.size, trade.timestamp (a datetime, UTC), quote.bid_price, quote.ask_price, bar.close,
# bar.volume... alpaca_stream/records.py lists every kind's fields; print(trade) shows them.

async def on_trade(trade: Trade) -> None:
    show(trade)


async def on_quote(quote: Quote) -> None:
    show(quote)


async def on_bar(bar: Bar) -> None:
    """A minute bar, just after its minute ends (only minutes with trades have one)."""
    show(bar)


async def on_updated_bar(bar: UpdatedBar) -> None:
    show(bar)


async def on_daily_bar(bar: DailyBar) -> None:
    show(bar)


async def on_status(status: TradingStatus) -> None:
    """A halt or a resumption: trading in the symbol stops or starts again."""
    show(status)


async def on_luld(luld: Luld) -> None:
    show(luld)


async def on_correction(correction: TradeCorrection) -> None:
    """Sent with trades: a trade already received was wrong (see TradeCorrection)."""
    show(correction)


async def on_cancel(cancel: TradeCancel) -> None:
    """Sent with trades: a trade already received is void (see TradeCancel)."""
    show(cancel)


async def on_imbalance(imbalance: OrderImbalance) -> None:
    show(imbalance)


# Which handler gets which kind of message.
HANDLERS: Handlers = {
    "trade": on_trade, "quote": on_quote, "bar": on_bar, "updated_bar": on_updated_bar,
    "daily_bar": on_daily_bar, "status": on_status, "luld": on_luld,
    "correction": on_correction, "cancel": on_cancel, "imbalance": on_imbalance,
}


def run_handlers(messages: Iterable[dict[str, Any]], handlers: Handlers | None = None, *,
                 keep_going: bool = False) -> Session:
    """For your own tests: messages to the handlers above (or, for the kinds given, to these),
    as the stream hands them over, with no network; if a handler raised, HandlersFailed at the
    end lists every error (see alpaca_stream.run_handlers)."""
    return alpaca_stream.run_handlers(messages, {**HANDLERS, **(handlers or {})}, keep_going=keep_going)


# The lesson's steps ------------------------------------------------------------------------

def main(argv: list[str] | None = None, handlers: Handlers = HANDLERS) -> int:
    """Run the steps of the lesson, each a call into alpaca_stream; the exit status."""
    with CommandLine(argv, __doc__) as run:  # the options and the log; what goes wrong ends it
        keys = run.keys(folder=Path(__file__).resolve().parent)  # 1. config.py, env or .env
        streams = run.streams(keys)  # 2. a stream for the symbols asked: Alpaca's, or --demo's
        run.until_stopped(streams, handlers)  # 3. each message to its handler, until Ctrl+C,
        #                                        reconnecting by itself after every fault
    return run.exit_status


if __name__ == "__main__":
    sys.exit(main())
