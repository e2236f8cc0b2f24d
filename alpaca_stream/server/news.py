"""Made-up news for the local server's /v1beta1/news (NewsMarket): an article about a symbol
the client watches (any, for "*") as soon as it subscribes, then one every NEWS_EVERY seconds,
with Alpaca's fields: headline, summary, author, times, HTML content, url, symbols, source."""

from __future__ import annotations

import itertools
import random
import time

from alpaca_stream.server.market import Market, timestamp

NEWS_EVERY = 2.0  # seconds between two articles
# What "*" (every article) brings here: stocks, and crypto as Alpaca's news names it, no slash.
NEWS_SYMBOLS = ("AAPL", "TSLA", "NVDA", "SPY", "BTCUSD", "ETHUSD")
HEADLINES = ("{symbol} Shares Move After Earnings Beat Estimates", "Analyst Raises {symbol} Price Target",
             "{symbol} Announces New Product Line", "Options Traders Eye {symbol} Ahead Of Fed Decision",
             "{symbol} Trading Volume Jumps In Early Session")
AUTHORS = ("Benzinga Newsdesk", "Jane Analyst", "Market Desk")


class NewsMarket(Market):
    """The news one connection watches: articles about its symbols, now and then; no trades,
    quotes or bars."""

    wildcard = NEWS_SYMBOLS

    def __init__(self, rng: random.Random, prices: dict[str, float], ids: itertools.count,
                 subscriptions: dict[str, list[str]]) -> None:
        super().__init__(rng, prices, ids, subscriptions)
        self.next_article = 0.0  # when the next one is due: at once, then every NEWS_EVERY seconds
        self.made = 0  # articles made

    def ticks(self, count: int) -> list[dict]:
        return []

    def clock(self) -> list[dict]:
        watched = self.symbols("news")
        now = time.time()
        if not watched or now < self.next_article:
            return []
        self.next_article = now + NEWS_EVERY
        self.made += 1  # each symbol's turn comes: an article about every symbol asked, in turn
        return [self.article(watched[self.made % len(watched)], now)]

    def article(self, symbol: str, now: float) -> dict:
        """An article about symbol, as Alpaca's news stream sends it ("T": "n")."""
        article_id = next(self.ids)
        headline = self.rng.choice(HEADLINES).format(symbol=symbol)
        paragraphs = "".join(f"<p>{headline}: paragraph {n} of the story, as an article's HTML.</p>"
                             for n in range(1, 41))  # a few kB, as real articles are
        return {"T": "n", "id": article_id, "headline": headline,
                "summary": f"What moved {symbol} today, in a sentence.", "author": self.rng.choice(AUTHORS),
                "created_at": timestamp(now - 1), "updated_at": timestamp(now), "content": paragraphs,
                "url": f"https://news.example.invalid/{article_id}", "symbols": [symbol], "source": "benzinga"}

    async def replay(self, count: int) -> tuple[list[dict], bytes]:
        """No frames to replay: news comes on the clock."""
        return [], b""

    def cue(self, event: str) -> list[dict]:
        """A stock market's events: none here."""
        return []
