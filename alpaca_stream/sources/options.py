"""Alpaca's options stream: wss://stream.data.alpaca.markets/v1beta1/indicative (or opra, for a
plan that has it), option contracts by their OCC symbols (AAPL250117C00200000), trades and quotes
only, msgpack only; its own connection and reconnect wrapper, beside the others in one loop."""

from __future__ import annotations

from collections.abc import Iterable

from alpaca_stream.channels import OPTION, OPTIONS_PATH
from alpaca_stream.keys import Keys
from alpaca_stream.records import OPTION_TYPES
from alpaca_stream.sources.stocks import StockStream

ALPACA_OPTIONS_STREAM = "wss://stream.data.alpaca.markets" + OPTIONS_PATH.format(feed="indicative")


class OptionStream(StockStream):
    """The options stream at url, for these contracts on trades and quotes, logged in with
    keys: the stock stream's session (alpaca-py asks for msgpack, which options require), with
    options' records. A contract can go an hour without a trade, so it is never replaced for
    want of data."""

    types = OPTION_TYPES
    market = "options"
    symbol = OPTION

    def __init__(self, contracts: Iterable[str], channels: Iterable[str] = ("trades",), *, keys: Keys,
                 url: str = ALPACA_OPTIONS_STREAM) -> None:
        super().__init__(contracts, channels, keys=keys, url=url, data_timeout=0.0, market_hours=True)
