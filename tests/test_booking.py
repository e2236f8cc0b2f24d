"""A position's fills booked at average cost, once (alpaca_stream/booking.py), for the local
server's account (the paper broker's, a backtest's) and for --chart's page: both hold the same
position at the same average cost after the same fills."""

from __future__ import annotations

import random

import pytest
from conftest import FAKE_KEY, FAKE_SECRET

from alpaca_stream.booking import booked
from alpaca_stream.outputs.chart import Holding
from alpaca_stream.server.trading import Account

pytestmark = pytest.mark.timeout(20)


def account() -> Account:
    return Account(lambda key, secret: (key, secret) == (FAKE_KEY, FAKE_SECRET))


def filled(books: Account, symbol: str, bought: float, price: float) -> None:
    order = books.place(symbol, abs(bought), side="buy" if bought > 0 else "sell")
    books.update("fill", order["id"], price=price, qty=abs(bought))


def test_the_account_and_the_chart_book_the_same_fills_the_same_way():
    rng = random.Random(34)
    for _ in range(50):
        books, holding = account(), Holding()
        for _ in range(20):  # buys and sells of 1 to 10 shares: adds, partial closes, turns over
            bought, price = rng.choice((-1, 1)) * rng.randint(1, 10), round(rng.uniform(90, 110), 2)
            filled(books, "SPY", bought, price)
            holding.fill(bought, price, 1)
            assert books.positions.get("SPY", 0.0) == pytest.approx(holding.qty)
            assert books.entry_prices.get("SPY", 0.0) == pytest.approx(holding.price)


def test_a_position_closed_by_fractions_that_float_sums_miss_is_closed():
    books = account()
    for bought in (0.1, 0.2, -0.3):  # 0.1 + 0.2 - 0.3 is 5.6e-17 in floats
        filled(books, "BTC/USD", bought, 90_000.0)
    assert books.positions == {} and books.entry_prices == {}
    assert booked(0.30000000000000004, 90_000.0, -0.3, 91_000.0) == (0.0, 0.0, pytest.approx(300.0))


def test_what_closes_realizes_what_turns_over_opens_the_rest_at_its_price():
    assert booked(10, 100.0, 5, 110.0) == (15, pytest.approx(103.3333333), 0.0)  # adds: a new average
    assert booked(10, 100.0, -4, 110.0) == (6, 100.0, 40.0)  # closes a part: the average stays
    assert booked(10, 100.0, -15, 90.0) == (-5, 90.0, -100.0)  # turns over: the rest short at 90
    assert booked(-5, 90.0, 5, 80.0) == (0.0, 0.0, 50.0)  # a short covered lower: a gain
