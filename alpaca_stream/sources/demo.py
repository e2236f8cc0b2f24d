"""--demo: market data made up by the local server (server/market.py), started here on
127.0.0.1, through the same stock stream as Alpaca's: no keys, no network."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from alpaca_stream.keys import Keys
from alpaca_stream.server import AlpacaStreamServer
from alpaca_stream.sources.stocks import StockStream

log = logging.getLogger("alpaca_stream")

DEMO_KEYS = Keys("demo-key-id", "demo-secret-key", "--demo")


class DemoStream(StockStream):
    """The stock stream of a local server that makes the data up, at any hour."""

    def __init__(self, symbols: Iterable[str], channels: Iterable[str], *, data_timeout: float = 0.0) -> None:
        super().__init__(symbols, channels, keys=DEMO_KEYS, url="", data_timeout=data_timeout, market_hours=False)
        self.server = AlpacaStreamServer(rate=8, batch=6, record=False)

    async def __aenter__(self) -> DemoStream:
        self.url = (await self.server.__aenter__()).url
        log.info("demo data from a local server, not the market")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.server.__aexit__(*exc_info)
