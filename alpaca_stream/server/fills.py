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
- A notional order (dollars, not a qty): at each fill, as many shares as its dollars left buy
  (or sell) at that fill's price, within the size; filled once they are spent, to the cent.
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


HALF_CENT = 0.005  # a notional order is filled once less than this is left of its dollars


def left(order: dict, price: float) -> float:
    """What of an order is still to fill, in shares (coins) at this price: its qty less what
    has filled; for a notional order, its dollars not spent yet, over the price (Alpaca's
    quantities have 9 decimals; rounded too as parts in floats add up to a hair less)."""
    if order.get("notional") is None:
        return round(float(order["qty"]) - float(order["filled_qty"]), 9)
    dollars = unspent(order)
    return round(dollars / price, 9) if dollars >= HALF_CENT else 0.0


def unspent(order: dict) -> float:
    """What of a notional order's dollars its fills have not spent yet."""
    return float(order["notional"]) - float(order["filled_qty"]) * float(order["filled_avg_price"] or 0)


def fills_up(order: dict, price: float, qty: float) -> bool:
    """Whether qty at price is what is left of the order (of a notional one, to the cent)."""
    if order.get("notional") is None:
        return qty >= left(order, price)
    return unspent(order) - qty * price < HALF_CENT


Fill = tuple[str, float, float]  # an order's id, the price, the qty


Book = tuple[dict[str, float], dict[str, float]]  # by side: the price, and the size there


def book(message: dict[str, Any], quoted: bool, traded: bool) -> Book | None:
    """What a message offers the orders of its symbol, by side (the price, the size), or None if
    it does not price them: a trade of a symbol quoted, a bar of one quoted or traded.
    quoted, traded: whether the recording had a quote, a trade of the symbol before it."""
    kind = message["T"]
    if kind == "q":
        return {"buy": message["ap"], "sell": message["bp"]}, {"buy": quote_size(message, "as"),
                                                                "sell": quote_size(message, "bs")}
    if kind == "t" and not quoted:
        return {"buy": message["p"], "sell": message["p"]}, {"buy": float(message["s"]), "sell": float(message["s"])}
    if kind == "b" and not quoted and not traded:
        return {"buy": message["o"], "sell": message["o"]}, {"buy": float("inf"), "sell": float("inf")}
    return None


def fills(orders: Iterable[dict], message: dict[str, Any], offered: Book) -> list[Fill]:
    """(order id, price, qty) of each fill that a message of the orders' symbol makes, from what
    it offers (book(); its sizes are taken as they fill), the orders in the order they were
    placed: the first takes what it can, the next the rest. An order fill-or-kill ("fok") takes
    all it needs or nothing."""
    made: list[Fill] = []
    prices, sizes = offered
    for order in orders:
        side = order["side"]
        price, size = prices[side], sizes[side]
        if not (price > 0 and size > 0):
            continue
        if order["limit_price"] is not None:
            at_limit = limit_price(message["T"], side, price, float(order["limit_price"]), message)
            if at_limit is None:
                continue
            price = at_limit
        wanted = left(order, price)
        if order.get("time_in_force") == "fok" and size < wanted:
            continue
        qty = min(wanted, size)
        sizes[side] -= qty
        made.append((order["id"], float(price), qty))
    return made


def triggered(order: dict, message: dict[str, Any], quoted: bool, traded: bool) -> bool:
    """Whether a message of its symbol triggers a stop order: a trade at or through the stop
    (a buy stop's at or above it, a sell stop's at or below); for a symbol never traded, a
    quote's ask (a buy's) or bid (a sell's) there; for one with bars alone, a bar's high or low."""
    kind, buy, stop = message["T"], order["side"] == "buy", float(order["stop_price"])
    if kind == "t":
        price = message["p"]
    elif kind == "q" and not traded:
        price = message["ap" if buy else "bp"]
    elif kind == "b" and not quoted and not traded:
        price = message["h" if buy else "l"]
    else:
        return False
    return bool(price > 0 and (price >= stop if buy else price <= stop))


def slipped(price: float, order: dict, bps: float) -> float:
    """A fill's price made worse by so many basis points (a buy's higher, a sell's lower), never
    beyond a limit order's limit."""
    if not bps:
        return price
    buy, limit = order["side"] == "buy", order["limit_price"]
    worse = price * (1 + bps / 10_000 if buy else 1 - bps / 10_000)
    if limit is None:
        return worse
    return min(worse, float(limit)) if buy else max(worse, float(limit))


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
