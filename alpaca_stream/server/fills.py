"""The fill model of a backtest (--replay): what of the open orders of a symbol fills against one
message of the recording, at what price. Pure functions of the orders, as the account keeps
them (trading.py), and of a message as Alpaca sends it ("T", "S", "ap", ...); the backtest's
broker (backtest.py) calls them for each message before it is handed to the handlers, so an
order fills only on what came after it was placed (docs/backtest.md).

- A quote: a buy at its ask, a sell at its bid, at most its size (ask_size, bid_size); a limit
  buy once the ask is at or below the limit, a sell once the bid is at or above.
- A trade, for a symbol with no quote yet in the recording: at its price, at most its size; a
  limit buy once a trade is below the limit, at the limit (a trade at it may not have reached
  the order), a sell the other way.
- A minute bar, for a symbol with neither: whole, at its open; a limit buy once its low is
  below the limit, at the limit, a sell the other way.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timezone
from typing import Any

from alpaca_stream.channels import market_of_symbol

# Alpaca's stock quotes were in round lots of 100 shares before this day, in shares since.
SIZES_IN_SHARES_SINCE = datetime(2025, 11, 3, tzinfo=timezone.utc)
LOT = 100


def price_of(message: dict[str, Any]) -> float:
    """What a message says the symbol's price is: a quote's midpoint (its one side if the other
    is empty), a trade's price, a bar's close."""
    kind = message["T"]
    if kind == "q":
        bid, ask = message["bp"], message["ap"]
        return (bid + ask) / 2 if bid > 0 and ask > 0 else max(bid, ask)
    return float(message["p"] if kind == "t" else message["c"])


def left(order: dict) -> float:
    """What of an order is still to fill (rounded: parts in floats add up to a hair less)."""
    return round(float(order["qty"]) - float(order["filled_qty"]), 9)


Fill = tuple[str, float, float]  # an order's id, the price, the qty


def fills(orders: Iterable[dict], message: dict[str, Any], quoted: bool, traded: bool) -> list[Fill]:
    """(order id, price, qty) of each fill that a message of the orders' symbol makes, the
    orders in the order they were placed: the first takes what it can, the next the rest.
    quoted, traded: whether the recording had a quote, a trade of the symbol before it."""
    kind = message["T"]
    made: list[Fill] = []
    if kind == "q":
        sizes = {"buy": quote_size(message, "as"), "sell": quote_size(message, "bs")}
        prices = {"buy": message["ap"], "sell": message["bp"]}
    elif kind == "t" and not quoted:
        sizes = {"buy": float(message["s"]), "sell": float(message["s"])}
        prices = {"buy": message["p"], "sell": message["p"]}
    elif kind == "b" and not quoted and not traded:
        sizes = {"buy": float("inf"), "sell": float("inf")}
        prices = {"buy": message["o"], "sell": message["o"]}
    else:
        return made
    for order in orders:
        side = order["side"]
        price, size = prices[side], sizes[side]
        if not (price > 0 and size > 0):
            continue
        limit = None if order["limit_price"] is None else float(order["limit_price"])
        if limit is not None:
            price = limit_price(kind, side, price, limit, message)
            if price is None:
                continue
        qty = min(left(order), size)
        sizes[side] -= qty
        made.append((order["id"], float(price), qty))
    return made


def limit_price(kind: str, side: str, price: float, limit: float, message: dict[str, Any]) -> float | None:
    """The price a limit order fills at on this message, None if it does not: a quote's if it is
    at the limit or better; the limit itself once a trade, or a bar's low (high), is through it."""
    buy = side == "buy"
    if kind == "q":
        return price if (price <= limit if buy else price >= limit) else None
    through = message["l"] if kind == "b" and buy else message["h"] if kind == "b" else price
    return limit if (through < limit if buy else through > limit) else None


def quote_size(message: dict[str, Any], key: str) -> float:
    """A quote's size in shares (coins, contracts): a stock's was in round lots before
    SIZES_IN_SHARES_SINCE."""
    size = float(message[key])
    when = message.get("t")
    if market_of_symbol(message["S"]) == "stocks" and isinstance(when, datetime) and when.tzinfo \
            and when < SIZES_IN_SHARES_SINCE:
        return size * LOT
    return size
