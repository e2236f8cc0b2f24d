#!/usr/bin/env python3
"""Stream live market data from Alpaca: push instead of polling.

Lesson 28, "faster than HTTP". Every message is printed on stdout the moment
it arrives, one line each; the log goes to stderr. Ctrl+C stops. Your own
logic goes in the handlers just below; the machinery they need (the keys,
the stream and its reconnect wrapper) is in the package alpaca_stream.

    python websocket_stream.py                 # SPY and TSLA's trades (IEX)
    python websocket_stream.py AAPL --quotes   # AAPL's quotes
    python websocket_stream.py BTC/USD         # a crypto pair, at any hour
    python websocket_stream.py AAPL261218C00250000  # an option: AAPL's call
    python websocket_stream.py AAPL --news     # news about AAPL
    python websocket_stream.py --trade-updates # your orders' fills (paper)
    python websocket_stream.py --demo          # no keys, no network: demo data
    python websocket_stream.py --help          # every option

exit statuses:
  0  stopped by you (Ctrl+C, SIGTERM) or by the reader (| head)
  1  something unexpected (a bug: please report it)
  2  configuration or usage error: keys, arguments, --url, alpaca-py version,
     no NATS or history server, a --replay file missing or not a recording
  3  refused by Alpaca: wrong keys (402), symbol limit (405), feed not in your
     plan (409, 410), a token without the market data scope (411), an
     options stream without msgpack (412) or with '*' quotes (413)
  130  forced by a second Ctrl+C, or Ctrl+C while it starts
"""

from __future__ import annotations

import sys

try:
    import asyncio  # for your handlers (the README's examples)
    from collections.abc import Iterable
    from pathlib import Path
    from typing import Any

    import alpaca_stream
    from alpaca_stream import (
        Bar,
        CommandLine,
        CryptoBar,
        CryptoDailyBar,
        CryptoQuote,
        CryptoTrade,
        CryptoUpdatedBar,
        DailyBar,
        Handlers,
        Luld,
        News,
        OptionQuote,
        OptionTrade,
        Orderbook,
        OrderImbalance,
        Quote,
        Session,
        Trade,
        TradeCancel,
        TradeCorrection,
        TradeUpdate,
        TradingStatus,
        UpdatedBar,
        in_background,  # for your handlers: the README shows how
        show,
        subscribe,
        trading_client,  # for your handlers: orders (the README shows how)
        unsubscribe,
    )
    # Your imports go here too: Ctrl+C while they load then exits quietly.
except ModuleNotFoundError as missing:  # the package, or what it needs
    print(f"{missing.name} is missing: activate your venv, or in the project's"
          "\nfolder: pip install -r requirements.txt", file=sys.stderr)
    sys.exit(2)
except KeyboardInterrupt:  # Ctrl+C while it starts: no traceback
    sys.exit(130)


# Your part: the handlers, where your trading logic goes ---------------------
#
# Each is called once for every message of its kind, in the order Alpaca sent
# them. The defaults print it: replace show() with your strategy (the README
# has examples). Keep a handler quick, since the next messages wait while it
# runs: start slow work, an order over HTTP say, with in_background() and
# return. If a handler raises, the error is logged and the stream goes on
# with the next message.
#
# A record holds what Alpaca sent, by alpaca-py's names: trade.symbol,
# trade.price, trade.size, trade.timestamp (a datetime, UTC), quote.bid_price,
# quote.ask_price, bar.close, bar.volume... alpaca_stream/records.py lists
# every kind's fields; print(trade) shows them. A crypto pair's (BTC/USD) come
# to the same handlers, with sizes in coins and no exchange, and an option's
# in contracts: trade.market is "crypto", "options" or "stocks".

async def on_trade(trade: Trade | CryptoTrade | OptionTrade) -> None:
    show(trade)


async def on_quote(quote: Quote | CryptoQuote | OptionQuote) -> None:
    show(quote)


async def on_bar(bar: Bar | CryptoBar) -> None:
    """A minute bar, just after its minute ends (if it had trades)."""
    show(bar)


async def on_updated_bar(bar: UpdatedBar | CryptoUpdatedBar) -> None:
    show(bar)


async def on_daily_bar(bar: DailyBar | CryptoDailyBar) -> None:
    show(bar)


async def on_status(status: TradingStatus) -> None:
    """A halt or a resumption: trading in the symbol stops or starts again."""
    show(status)


async def on_luld(luld: Luld) -> None:
    show(luld)


async def on_correction(correction: TradeCorrection) -> None:
    """Sent with trades: a trade already received was wrong."""
    show(correction)


async def on_cancel(cancel: TradeCancel) -> None:
    """Sent with trades: a trade already received is void (see TradeCancel)."""
    show(cancel)


async def on_imbalance(imbalance: OrderImbalance) -> None:
    show(imbalance)


async def on_orderbook(orderbook: Orderbook) -> None:
    """A crypto pair's book changed (--orderbooks): orderbook.book is the book
    as it stands, orderbook.book.best_bid its highest bid (price, size)."""
    show(orderbook)


async def on_news(news: News) -> None:
    """A news article (--news): news.headline, news.symbols, news.summary; its
    HTML is news.content."""
    show(news)


async def on_trade_update(update: TradeUpdate) -> None:
    """One of your orders changed (--trade-updates): update.event ("fill",
    "canceled", ...), update.price and update.qty of a fill, update.order
    (its status, filled_qty...)."""
    show(update)


# Which handler gets which kind of message.
HANDLERS: Handlers = {
    "trade": on_trade, "quote": on_quote, "bar": on_bar,
    "updated_bar": on_updated_bar, "daily_bar": on_daily_bar,
    "status": on_status, "luld": on_luld, "imbalance": on_imbalance,
    "correction": on_correction, "cancel": on_cancel,
    "orderbook": on_orderbook, "news": on_news,
    "trade_update": on_trade_update,
}


def run_handlers(messages: Iterable[dict[str, Any]],
                 handlers: Handlers | None = None, *,
                 keep_going: bool = False, trading: Any = None) -> Session:
    """For your own tests: messages to the handlers above (or, for the kinds
    given, to these), as the stream hands them over, with no network; if a
    handler raised, HandlersFailed at the end lists every error. trading:
    "simulated", a backtest's account, its orders filled at the messages'
    prices (session.backtest: its fills, P&L...); or what trading_client()
    gives meanwhile (one that notes the orders)."""
    mine = {**HANDLERS, **(handlers or {})}
    return alpaca_stream.run_handlers(messages, mine, keep_going=keep_going,
                                      trading=trading)


# The lesson's steps ---------------------------------------------------------

def main(argv: list[str] | None = None, handlers: Handlers = HANDLERS) -> int:
    """Run the steps of the lesson, each a call into alpaca_stream. The
    `with` reads the options and sets up the log; whatever goes wrong in a
    step ends the block with a message, and run.exit_status says how it
    ended (the exit statuses above)."""
    with CommandLine(argv, __doc__) as run:
        # 1. Your keys: config.py beside this file, the environment, or .env.
        keys = run.keys(folder=Path(__file__).resolve().parent)
        # 2. A stream for the symbols asked: Alpaca's, or --demo's.
        streams = run.streams(keys)
        # 3. Each message to its handler, until Ctrl+C, reconnecting by
        #    itself after every fault.
        run.until_stopped(streams, handlers)
    return run.exit_status


if __name__ == "__main__":
    sys.exit(main())
