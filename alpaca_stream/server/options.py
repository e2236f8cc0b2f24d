"""Made-up option data for the local server's /v1beta1/indicative and /v1beta1/opra
(OptionMarket): contracts by their OCC symbols at plausible premiums, trades in whole contracts
and quotes, each with its exchange and one condition; no bars, halts or other events."""

from __future__ import annotations

import math
import random

from alpaca_stream.server.market import Market, subscribed, timestamp

# What "*" (every contract) streams here: calls and puts of SPY and AAPL.
WILDCARD_CONTRACTS = ("SPY261218C00600000", "SPY261218P00600000", "AAPL261218C00250000", "AAPL261218P00250000")
EXCHANGES = "ABCDEHIJMNPQWXZ"  # single letters, as OPRA's exchange codes are
CUES = ("big_frame",)  # the local server's cues that options have


class OptionMarket(Market):
    """The option contracts one connection watches: Market's random walk of each premium."""

    wildcard = WILDCARD_CONTRACTS

    def last_price(self, symbol: str) -> float:
        return self.prices.get(symbol) or round(random.Random(symbol).uniform(0.5, 25), 2)

    def step(self, symbol: str) -> float:
        """A premium moves ten times as much as a stock, in proportion: an option is leveraged."""
        price = max(0.05, self.last_price(symbol) * math.exp(self.rng.gauss(0, 0.002)))
        self.prices[symbol] = price
        return price

    def small_size(self) -> int:
        return self.rng.choice((1, 1, 1, 2, 3, 5, 10, 20, 50))

    def trade(self, symbol: str, *, size: float | None = None, at: float | None = None,
              bar: object = None) -> list[dict]:
        """A trade of a few contracts; [] if the client does not watch this contract's trades."""
        price = round(self.step(symbol), 2)
        if not subscribed(symbol, self.subscriptions.get("trades", [])):
            return []
        size = self.small_size() if size is None else size
        return [{"T": "t", "S": symbol, "t": timestamp(at), "p": price, "s": size, "x": self.rng.choice(EXCHANGES),
                 "c": self.rng.choice("IIIaSf")}]

    def quote(self, symbol: str, *, step: bool = True, at: float | None = None) -> dict:
        price = self.step(symbol) if step else self.last_price(symbol)
        bid = max(0.01, round(price - 0.05, 2))
        return {"T": "q", "S": symbol, "t": timestamp(at), "bx": self.rng.choice(EXCHANGES), "bp": bid,
                "bs": self.rng.randint(1, 200), "ax": self.rng.choice(EXCHANGES), "ap": round(bid + 0.1, 2),
                "as": self.rng.randint(1, 200), "c": "A"}

    def events_due(self, now: float, elapsed: float) -> list[dict]:
        """None: no blocks, halts, LULD bands or imbalances for options here."""
        return []

    def cue(self, event: str) -> list[dict]:
        """One event now, if options have it (CUES); a stock market's event brings nothing."""
        return super().cue(event) if event in CUES else []
