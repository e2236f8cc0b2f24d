"""A position's fills booked at average cost, as Alpaca's account books them: written once for
the local server's account (server/trading.py: the paper broker's and a backtest's) and for
--chart's page (outputs/chart.py), which must not import the server to start."""

from __future__ import annotations

FLAT = 1e-9  # units: a position this near 0 is closed (what float sums of fractions leave)


def booked(held: float, cost: float, bought: float, price: float) -> tuple[float, float, float]:
    """A position of held units (negative: short) at cost on average, after a fill of bought
    units (negative: sold) at price: the units held then, their cost on average, and the P&L
    the fill realized, per unit of price (times the contract size for dollars). What adds to
    the position moves its average; what closes part of it realizes the difference; what
    turns it over opens the rest at this price."""
    now = held + bought
    if abs(now) < FLAT:
        now = 0.0
    if held * bought >= 0:  # opens or adds
        return now, (held * cost + bought * price) / now if now else 0.0, 0.0
    closed = min(abs(bought), abs(held)) * (1 if held > 0 else -1)
    realized = closed * (price - cost)
    if not now:
        return 0.0, 0.0, realized
    return now, price if held * now < 0 else cost, realized
