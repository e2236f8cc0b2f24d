"""Made-up crypto data for the local server's /v1beta3/crypto/us (CryptoMarket): pairs such as
BTC/USD at plausible prices, fractional sizes, each pair's order book, and a market that never
closes: no blocks, halts, LULD bands, imbalances, corrections or cancels."""

from __future__ import annotations

import itertools
import math
import random

from alpaca_stream.server.market import BarBuilder, Market, subscribed, timestamp

# What "*" (every pair) streams here.
WILDCARD_PAIRS = ("BTC/USD", "ETH/USD", "SOL/USD", "DOGE/USD")
START_PRICES = {"BTC/USD": 90_000.0, "ETH/USD": 3_000.0, "SOL/USD": 180.0, "DOGE/USD": 0.2,
                "BTC/USDT": 90_000.0, "ETH/USDT": 3_000.0, "ETH/BTC": 0.033}
BOOK_LEVELS = 10  # price levels on each side of a book
LEVEL_GAP = 0.0002  # levels are about 2 basis points apart, rounded down to a power of ten
CHURN = 0.15  # the share of a book's levels whose size changes at each tick of the pair
CUES = ("bar", "updated_bar", "daily_bar", "big_frame")  # the local server's cues that crypto has

Book = dict[str, dict[float, float]]  # "b" (bids) and "a" (asks): price -> size


def start_price(pair: str) -> float:
    """A plausible price for any pair, the same every run."""
    return START_PRICES.get(pair) or random.Random(pair).uniform(0.5, 500)


def decimals(price: float) -> int:
    """How many decimals a price has: cents for BTC/USD, more for a coin worth cents."""
    return max(2, 4 - math.floor(math.log10(price)))


def level_gap(price: float) -> float:
    """The price step between a book's levels: 10 for BTC/USD at 90,000, 0.1 for ETH/USD."""
    return 10.0 ** math.floor(math.log10(price * LEVEL_GAP))


def changes(held: dict[float, float], now: dict[float, float]) -> list[dict]:
    """The levels of one side of a book that changed, as Alpaca sends them: size 0 removes one."""
    return ([{"p": price, "s": 0} for price in held if price not in now]
            + [{"p": price, "s": size} for price, size in now.items() if held.get(price) != size])


class CryptoMarket(Market):
    """The crypto market one connection watches: Market's random walk, with pairs for symbols.

    Trades with fractional sizes and the taker's side (tks), quotes with the bid below the
    ask, bars as Market's, and order books: a pair's whole book (r: true) first once it is
    subscribed, then at each of its ticks only the levels that changed.
    """

    wildcard = WILDCARD_PAIRS
    booked = ("orderbooks",)

    def __init__(self, rng: random.Random, prices: dict[str, float], ids: itertools.count,
                 subscriptions: dict[str, list[str]]) -> None:
        super().__init__(rng, prices, ids, subscriptions)
        self.books: dict[str, Book] = {}  # each pair's book as the client holds it: whole, then changed

    def last_price(self, symbol: str) -> float:
        return self.prices.get(symbol) or start_price(symbol)

    def small_size(self) -> float:
        # Four decimals: Alpaca's can have up to nine, and a quote line of BTC/USD with sizes
        # of six went past 80 columns, onto a second line.
        return round(self.rng.uniform(0.0001, 0.5), 4)

    def ticks(self, count: int) -> list[dict]:
        """The whole book of each pair newly subscribed to orderbooks, then `count` ticks."""
        return self.whole_books() + super().ticks(count)

    def tick(self, symbol: str, *, traded: bool, quoted: bool) -> list[dict]:
        if not (traded or quoted):  # a pair watched for its book alone moves too
            self.step(symbol)
        return super().tick(symbol, traded=traded, quoted=quoted) + self.book_changes(symbol)

    def trade(self, symbol: str, *, size: float | None = None, at: float | None = None,
              bar: BarBuilder | None = None) -> list[dict]:
        """A trade, counted in the bars (of this minute unless `bar` is given); [] if the client
        does not watch this pair's trades."""
        price = self.step(symbol)
        price = round(price, decimals(price))
        size = self.small_size() if size is None else size
        self.count(symbol, price, size, bar)
        if not subscribed(symbol, self.subscriptions.get("trades", [])):
            return []
        return [{"T": "t", "S": symbol, "p": price, "s": size, "t": timestamp(at), "i": next(self.ids),
                 "tks": self.rng.choice("BS")}]

    def quote(self, symbol: str, *, step: bool = True, at: float | None = None) -> dict:
        """The best bid and ask around the price: the top of the pair's book."""
        price = self.step(symbol) if step else self.last_price(symbol)
        gap, places = level_gap(price), decimals(price)
        best_bid = math.floor(price / gap)
        return {"T": "q", "S": symbol, "bp": round(best_bid * gap, places), "bs": self.small_size(),
                "ap": round((best_bid + 1) * gap, places), "as": self.small_size(), "t": timestamp(at)}

    def events_due(self, now: float, elapsed: float) -> list[dict]:
        """None: a crypto market has no blocks, halts, LULD bands or imbalances."""
        return []

    def cue(self, event: str) -> list[dict]:
        """One event now, if crypto has it (CUES); a stock market's event brings nothing."""
        return super().cue(event) if event in CUES else []

    # -- order books -----------------------------------------------------------------------------

    def levels(self, symbol: str, held: Book) -> Book:
        """The pair's book at its price now: BOOK_LEVELS levels each side, the best bid at or
        below the price and the best ask above it. A level already held keeps its size, but
        for a CHURN share of them."""
        price = self.last_price(symbol)
        gap, places = level_gap(price), decimals(price)
        best_bid = math.floor(price / gap)
        sides = {"b": range(best_bid, best_bid - BOOK_LEVELS, -1), "a": range(best_bid + 1, best_bid + 1 + BOOK_LEVELS)}
        book: Book = {}
        for side, steps in sides.items():
            book[side] = {}
            for step in steps:
                level = round(step * gap, places)
                size = held.get(side, {}).get(level)
                book[side][level] = self.small_size() if size is None or self.rng.random() < CHURN else size
        return book

    def subscriptions_changed(self) -> None:
        """Forget the book of a pair no longer subscribed to orderbooks: subscribed again, even
        before the next tick, it gets its whole book again."""
        watched = self.symbols("orderbooks")
        for symbol in [symbol for symbol in self.books if symbol not in watched]:
            del self.books[symbol]

    def whole_books(self) -> list[dict]:
        """The whole book (r: true) of each pair newly subscribed to orderbooks."""
        messages = []
        for symbol in self.symbols("orderbooks"):
            if symbol not in self.books:
                book = self.books[symbol] = self.levels(symbol, {})
                messages.append({"T": "o", "S": symbol, "t": timestamp(), "b": changes({}, book["b"]),
                                 "a": changes({}, book["a"]), "r": True})
        return messages

    def book_changes(self, symbol: str) -> list[dict]:
        """The levels of the pair's book that changed since the client's copy; none until its
        whole book was sent."""
        held = self.books.get(symbol)
        if held is None:
            return []
        book = self.books[symbol] = self.levels(symbol, held)
        bids, asks = changes(held["b"], book["b"]), changes(held["a"], book["a"])
        return [{"T": "o", "S": symbol, "t": timestamp(), "b": bids, "a": asks}] if bids or asks else []
