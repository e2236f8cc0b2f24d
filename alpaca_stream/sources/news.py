"""Alpaca's news stream: wss://stream.data.alpaca.markets/v1beta1/news, articles about the
symbols asked ("*": every article), at any hour; its own connection and reconnect wrapper,
beside the market data's in the same event loop."""

from __future__ import annotations

from collections.abc import Iterable

from alpaca_stream.channels import NEWS_PATH
from alpaca_stream.keys import Keys
from alpaca_stream.records import NEWS_TYPES
from alpaca_stream.sources.stocks import StockStream

ALPACA_NEWS_STREAM = f"wss://stream.data.alpaca.markets{NEWS_PATH}"


def news_symbols(symbols: Iterable[str]) -> list[str]:
    """The symbols as Alpaca's news names them: a crypto pair without its slash (BTCUSD)."""
    return [symbol.replace("/", "") for symbol in symbols]


class NewsStream(StockStream):
    """The news stream at url, for articles about these symbols (stocks, and crypto pairs
    written BTC/USD or BTCUSD), logged in with keys: the stock stream's session, with news
    records. An hour without an article is normal: it is never replaced for want of data."""

    types = NEWS_TYPES
    market = "news"

    def __init__(self, symbols: Iterable[str], *, keys: Keys, url: str = ALPACA_NEWS_STREAM) -> None:
        super().__init__(news_symbols(symbols), ["news"], keys=keys, url=url, data_timeout=0.0, market_hours=False)
