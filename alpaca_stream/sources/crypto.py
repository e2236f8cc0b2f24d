"""Alpaca's crypto stream: wss://stream.data.alpaca.markets/v1beta3/crypto/us, pairs such as
BTC/USD, trades, quotes and bars around the clock; its own connection and reconnect wrapper,
beside the stock stream's in the same event loop."""

from __future__ import annotations

from collections.abc import Iterable

from alpaca_stream.channels import CRYPTO_PATH, PAIR
from alpaca_stream.keys import Keys
from alpaca_stream.records import crypto_types
from alpaca_stream.sources.stocks import StockStream

ALPACA_CRYPTO_STREAM = f"wss://stream.data.alpaca.markets{CRYPTO_PATH}"


class CryptoStream(StockStream):
    """The crypto stream at url, for these pairs on these channels (Alpaca's names), logged in
    with keys: the stock stream's session, with crypto's records. The market never closes, so
    data_timeout (seconds without data before the connection is replaced; 0: never) holds at
    any hour."""

    market = "crypto"
    symbol = PAIR

    def __init__(self, pairs: Iterable[str], channels: Iterable[str] = ("trades",), *, keys: Keys,
                 url: str = ALPACA_CRYPTO_STREAM, data_timeout: float = 0.0) -> None:
        super().__init__(pairs, channels, keys=keys, url=url, data_timeout=data_timeout, market_hours=False)
        self.types = crypto_types()  # with each pair's order book, from the messages of this stream
