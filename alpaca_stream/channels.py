"""Alpaca's stock channels and what each brings, and the channels of its crypto, options and news
streams: the facts both ends of the protocol use, the script's subscriptions and the local
server alike."""

from __future__ import annotations

import functools
import re
from collections.abc import Collection, Mapping
from datetime import date, datetime
from typing import Any, NamedTuple

# The command line's name for each channel (--updated-bars, subscribe(channel="updated_bars"))
# -> Alpaca's. Subscribing to trades brings their corrections and cancels too.
CHANNELS = {"trades": "trades", "quotes": "quotes", "bars": "bars", "updated_bars": "updatedBars",
            "daily_bars": "dailyBars", "statuses": "statuses", "lulds": "lulds", "imbalances": "imbalances",
            "orderbooks": "orderbooks", "news": "news"}
# Each of Alpaca's channels in words, as the options name it (updatedBars: updated bars), for the log.
SAID = {channel: option.replace("_", " ") for option, channel in CHANNELS.items()}
# The stock stream's: every channel but crypto's order books, and the news (a stream of its own).
ALPACA_CHANNELS = tuple(channel for channel in CHANNELS.values() if channel not in ("orderbooks", "news"))
# Alpaca's "T" of each kind of data message -> the channel that brings it.
TYPE_CHANNELS = {"t": "trades", "c": "trades", "x": "trades", "q": "quotes", "b": "bars", "u": "updatedBars",
                 "d": "dailyBars", "s": "statuses", "l": "lulds", "i": "imbalances", "o": "orderbooks",
                 "n": "news"}
SYMBOL = re.compile(r"\*|[A-Z][A-Z0-9.]{0,9}")  # "*" is every symbol; BRK.B has a class suffix
# The crypto stream's channels: no statuses, LULDs or imbalances, and trades bring no corrections
# or cancels; its order books are its own. Its symbols are pairs: BTC/USD, ETH/USD, BTC/USDT.
CRYPTO_CHANNELS = ("trades", "quotes", "bars", "updatedBars", "dailyBars", "orderbooks")
NEWS_PATH = "/v1beta1/news"  # its one channel, "news": articles, of the symbols asked or "*" for all
CRYPTO_PATH = "/v1beta3/crypto/us"  # on Alpaca's host, as /v2/{feed} for stocks; "us" is the location Alpaca documents
PAIR = re.compile(r"\*|[A-Z0-9]{2,10}/[A-Z0-9]{2,10}")
# The options stream's: trades and quotes only, msgpack only. Its symbols are OCC codes: the
# root, the expiry (yymmdd), C or P, the strike times 1000 in 8 digits: AAPL250117C00200000 is
# AAPL's call of 2025-01-17 at 200.00. Its feeds: indicative (free), opra (a paid plan).
OPTION_CHANNELS = ("trades", "quotes")
OPTION = re.compile(r"([A-Z]{1,6}\d?)(\d{6})([CP])(\d{8})")
OPTION_FEEDS = ("indicative", "opra")
OPTIONS_PATH = "/v1beta1/{feed}"
STOCK_PATH_FEEDS = ("iex", "sip", "delayed_sip", "test")  # the stocks' paths, /v2/{feed}: with the test stream's


def market_at(path: str) -> str | None:
    """The market whose stream Alpaca serves at a path: "stocks" at /v2/{feed}, "crypto" at
    /v1beta3/crypto/us, "options" at /v1beta1/indicative and opra, "news" at /v1beta1/news;
    None for any other."""
    if path.startswith("/v2/") and path.count("/") == 2:
        return "stocks"
    return {CRYPTO_PATH: "crypto", NEWS_PATH: "news",
            **{OPTIONS_PATH.format(feed=feed): "options" for feed in OPTION_FEEDS}}.get(path)

Channels = dict[str, set[str]]  # Alpaca's channel name -> symbols


def request(action: str, channels: Channels) -> dict[str, Any]:
    """A subscribe or an unsubscribe message, as Alpaca takes it."""
    return {"action": action, **{channel: sorted(symbols) for channel, symbols in channels.items()}}


def difference(these: Channels, those: Channels) -> Channels:
    """The symbols of these that those lack, by channel."""
    return {channel: symbols - those.get(channel, set()) for channel, symbols in these.items()
            if symbols - those.get(channel, set())}


def wanted(subscriptions: Mapping[str, Collection[str]], messages: list, *, control: bool = False) -> list:
    """The data messages these subscriptions (channel -> symbols, "*" for all) ask for, in order;
    with control, the rest too (what is not market data: a subscription answer, an error)."""
    chosen = []
    for message in messages:
        channel = TYPE_CHANNELS.get(message.get("T", "")) if isinstance(message, dict) else None
        if channel is None:
            if control:
                chosen.append(message)
            continue
        symbols = subscriptions.get(channel)
        if symbols and (message.get("S") in symbols or "*" in symbols or channel == "news" and
                        any(symbol in symbols for symbol in message.get("symbols") or ())):  # an article's
            chosen.append(message)
    return chosen


def market_of_symbol(symbol: str) -> str:
    """The market a symbol is of: a pair has a slash (BTC/USD), an option is an OCC symbol
    (longer than any stock's ten), the rest stocks."""
    if "/" in symbol:
        return "crypto"
    return "options" if len(symbol) > 10 and OPTION.fullmatch(symbol) else "stocks"


class OptionSymbol(NamedTuple):
    """An option's OCC symbol taken apart, in OPTION's four parts."""

    underlying: str  # the stock's symbol: AAPL
    expiry: str  # as written, yymmdd: 250117 (expires() reads it)
    right: str  # C, a call, or P, a put
    strike: float  # in dollars: its 8 digits are the strike times 1000

    def expires(self) -> date:
        """The expiry's date; ValueError if its six digits are none (261318)."""
        return datetime.strptime(self.expiry, "%y%m%d").date()


def option_symbol(contract: str) -> OptionSymbol:
    """An option's symbol taken apart; ValueError if it is not OCC's shape."""
    shape = OPTION.fullmatch(contract)
    if shape is None:
        raise ValueError(f"not an option's symbol: {contract}")
    underlying, expiry, right, strike = shape.groups()
    return OptionSymbol(underlying, expiry, right, int(strike) / 1000)


@functools.cache
def contract_size(symbol: str) -> int:
    """What a unit of the symbol's price is paid for: an option's premium is per share, and a
    contract is for 100 shares; a share (a coin) is one."""
    return 100 if market_of_symbol(symbol) == "options" else 1


# The trading API's stream of the account's order updates, at its base URL (its REST under /v2/);
# its events that say an order's state, and that state: a fill leaves it filled.
TRADING_PATH = "/stream"
STATUS_OF_EVENT = {"new": "new", "fill": "filled", "partial_fill": "partially_filled", "canceled": "canceled",
                   "expired": "expired", "rejected": "rejected", "replaced": "replaced"}
