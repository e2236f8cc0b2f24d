"""--demo: market data and news made up by the local server (server/market.py, crypto.py,
options.py and news.py), started here on 127.0.0.1, through the same streams as Alpaca's: no
keys, no network."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TypeVar

from alpaca_stream.channels import option_symbol
from alpaca_stream.keys import Keys
from alpaca_stream.orders import trade_at
from alpaca_stream.sources.crypto import CryptoStream
from alpaca_stream.sources.news import NewsStream
from alpaca_stream.sources.options import OptionStream
from alpaca_stream.sources.stocks import StockStream
from alpaca_stream.sources.trading import TradingUpdates

log = logging.getLogger("alpaca_stream")

DEMO_KEYS = Keys("demo-key-id", "demo-secret-key", "--demo")
DEMO_ORDERS_EVERY = 10.0  # seconds between two orders the demo's account places and fills by itself


def warn_of_unknown(symbols: Iterable[str], pairs: Iterable[str], contracts: Iterable[str]) -> None:
    """Say once which symbols the demo does not know: it makes their data up all the same, so a
    typo (APPL) looks fine until, live, it gets nothing. An option's is its underlying stock's."""
    from alpaca_stream.server.crypto import START_PRICES as KNOWN_PAIRS
    from alpaca_stream.server.market import START_PRICES as KNOWN_STOCKS

    stocks = [symbol for symbol in symbols if symbol not in {*KNOWN_STOCKS, "*"}]
    stocks += [contract for contract in contracts if option_symbol(contract).underlying not in KNOWN_STOCKS]
    for unknown, market, known in ((stocks, "stocks", KNOWN_STOCKS),
                                   ([pair for pair in pairs if pair not in KNOWN_PAIRS], "pairs", KNOWN_PAIRS)):
        if unknown:
            log.warning("the demo does not know %s: it makes the data up all the same, but live, a "
                        "symbol Alpaca does not have gets nothing. The demo's %s: %s",
                        ", ".join(unknown), market, ", ".join(known))


class Demo:
    """The local server that makes the demo's data up, one for the demo's streams: started by
    the first of them to be entered, stopped by that one."""

    def __init__(self) -> None:
        # Imported here, not with the module: the server's code is for --demo and --serve, and
        # a run without them starts in less CPU (--help: 0.30 s, not 0.38; measured).
        from alpaca_stream.server import AlpacaStreamServer

        self.server = AlpacaStreamServer(rate=8, batch=6, record=False, orders_every=DEMO_ORDERS_EVERY)
        self.started_by: object = None

    async def enter(self, stream: object, market: str) -> str:
        """The URL of the market's stream ("stocks", "crypto", "options" or "news") on the server."""
        if self.started_by is None:
            await self.server.start()
            self.started_by = stream
            log.info("demo data from a local server, not the market")
            trade_at(self.server.trading_url, DEMO_KEYS)  # its paper broker: trading_client()'s
        server = self.server
        if market == "trading":
            log.info("the demo's account: a made-up bot's order every %.0f s,\nuntil yours places one",
                     DEMO_ORDERS_EVERY)
        return {"stocks": server.url, "crypto": server.crypto_url, "options": server.options_url,
                "news": server.news_url, "trading": server.trading_url}[market]

    async def leave(self, stream: object) -> None:
        if self.started_by is stream:
            await self.server.stop()
            self.started_by = None


Entered = TypeVar("Entered", bound="OnDemo")


class OnDemo:
    """A demo stream's entering and leaving: its URL is its market's on the Demo's server."""

    demo: Demo
    market: str
    url: str

    async def __aenter__(self: Entered) -> Entered:
        self.url = await self.demo.enter(self, self.market)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.demo.leave(self)


class DemoStream(OnDemo, StockStream):
    """The stock stream of a local server that makes the data up, at any hour."""

    def __init__(self, symbols: Iterable[str], channels: Iterable[str], *, demo: Demo | None = None,
                 data_timeout: float = 0.0) -> None:
        super().__init__(symbols, channels, keys=DEMO_KEYS, url="", data_timeout=data_timeout, market_hours=False)
        self.demo = demo or Demo()


class DemoCryptoStream(OnDemo, CryptoStream):
    """The crypto stream of the same local server: pairs such as BTC/USD, made up too."""

    def __init__(self, pairs: Iterable[str], channels: Iterable[str], *, demo: Demo, data_timeout: float = 0.0) -> None:
        super().__init__(pairs, channels, keys=DEMO_KEYS, url="", data_timeout=data_timeout)
        self.demo = demo


class DemoOptionStream(OnDemo, OptionStream):
    """The options stream of the same local server: contracts (AAPL261218C00250000), made up."""

    def __init__(self, contracts: Iterable[str], channels: Iterable[str], *, demo: Demo) -> None:
        super().__init__(contracts, channels, keys=DEMO_KEYS, url="")
        self.market_hours = False  # made up at any hour
        self.demo = demo


class DemoNewsStream(OnDemo, NewsStream):
    """The news stream of the same local server: made-up articles, one every few seconds."""

    def __init__(self, symbols: Iterable[str], *, demo: Demo) -> None:
        super().__init__(symbols, keys=DEMO_KEYS, url="")
        self.demo = demo


class DemoTradingUpdates(OnDemo, TradingUpdates):
    """The order updates of the same local server's account (its trading API's side)."""

    def __init__(self, *, demo: Demo) -> None:
        super().__init__(keys=DEMO_KEYS, url="")
        self.demo = demo
