"""Alpaca's stock stream: wss://stream.data.alpaca.markets/v2/{feed}, every stock channel, a
record for each kind of message, one connection kept open by the reconnect wrapper."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

from alpaca_stream.channels import SYMBOL
from alpaca_stream.connection import Connection
from alpaca_stream.handlers import Route
from alpaca_stream.keys import Keys
from alpaca_stream.reconnect import keep_connected
from alpaca_stream.records import MESSAGE_TYPES, RecordType
from alpaca_stream.session import Session
from alpaca_stream.subscriptions import Subscriptions

log = logging.getLogger("alpaca_stream")

ALPACA_STREAM = "wss://stream.data.alpaca.markets/v2"
FEEDS = ("iex", "sip", "delayed_sip")
DEFAULT_SYMBOLS = ("SPY", "TSLA")
TEST_STREAM_SYMBOL = "FAKEPACA"  # the only symbol on Alpaca's always-on test stream


class StockStream:
    """The stock stream at url (the free IEX feed unless given), for these symbols on these
    channels (Alpaca's names: "trades", "quotes", "updatedBars", ...), logged in with keys.
    data_timeout: seconds without data, in market hours (at any hour if market_hours is False),
    before the connection is replaced; 0: never."""

    types: Mapping[str, tuple[str, RecordType]] = MESSAGE_TYPES
    market = "stocks"
    symbol = SYMBOL  # what its symbols look like

    def __init__(self, symbols: Iterable[str] = DEFAULT_SYMBOLS, channels: Iterable[str] = ("trades",), *,
                 keys: Keys, url: str = f"{ALPACA_STREAM}/iex", data_timeout: float = 0.0,
                 market_hours: bool = True) -> None:
        self.subscriptions = Subscriptions(channels, symbols, symbol=self.symbol)
        self.keys, self.url = keys, url
        self.data_timeout, self.market_hours = data_timeout, market_hours

    async def __aenter__(self) -> StockStream:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        pass

    async def run(self, routes: dict[str, Route], session: Session) -> None:
        log.info("connecting to %s", self.url)
        connection = Connection(self.url, self.keys, self.subscriptions, market=self.market,
                                data_timeout=self.data_timeout, market_hours=self.market_hours)
        await keep_connected(connection, routes, session)
