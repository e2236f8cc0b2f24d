"""A crypto pair's order book as it stands, built from Alpaca's order book messages: what the
records give a handler (orderbook.book), and what --serve's relay gives a client that asks for a
book the script already streams (Alpaca sends the whole book only after a subscription)."""

from __future__ import annotations

from typing import Any


class Book:
    """A pair's order book as it stands, built from its Orderbook messages: bids and asks, each
    price -> size, and the best of each at hand."""

    def __init__(self) -> None:
        self.bids: dict[float, float] = {}
        self.asks: dict[float, float] = {}

    def apply(self, message: dict[str, Any]) -> None:
        """The whole book when reset ("r"), else the levels that changed; size 0 removes one."""
        if message.get("r"):
            self.bids.clear()
            self.asks.clear()
        for side, levels in ((self.bids, message.get("b") or []), (self.asks, message.get("a") or [])):
            for level in levels:
                if level["s"]:
                    side[level["p"]] = level["s"]
                else:
                    side.pop(level["p"], None)

    @property
    def best_bid(self) -> tuple[float, float] | None:
        """(price, size) of the highest bid; None if there is none."""
        return max(self.bids.items()) if self.bids else None

    @property
    def best_ask(self) -> tuple[float, float] | None:
        """(price, size) of the lowest ask; None if there is none."""
        return min(self.asks.items()) if self.asks else None

    def __repr__(self) -> str:
        return f"Book(best_bid={self.best_bid}, best_ask={self.best_ask}, levels={len(self.bids)}+{len(self.asks)})"

    def whole(self, symbol: str, timestamp: object) -> dict[str, Any]:
        """The book as Alpaca sends it whole ("r": true): the bids from the best down, the asks
        from the best up, at the time of the last message that changed it."""
        return {"T": "o", "S": symbol, "t": timestamp, "r": True,
                "b": [{"p": price, "s": size} for price, size in sorted(self.bids.items(), reverse=True)],
                "a": [{"p": price, "s": size} for price, size in sorted(self.asks.items())]}

