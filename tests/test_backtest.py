"""--replay FILE is a backtest (#32): trading_client() gives alpaca-py's TradingClient, pointed at
a broker whose orders fill against the recording's own prices, on the recording's clock, and the
fills come to on_trade_update as they would live. Each rule of the fill model (docs/backtest.md)
on a small recording written here, with known prices, sizes and times; the script runs in this
process with the tests' own handlers (Bot), so these pass whatever a student writes in theirs."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, script_env, unwrapped
from test_readme import EXAMPLES, paste, pasted_with_what_it_needs

import websocket_stream as ws
from alpaca_stream import calendar, in_background, orders
from alpaca_stream.calendar import NEW_YORK
from alpaca_stream.outputs.terminal import format_text
from alpaca_stream.records import KIND, Quote, Record, TradeUpdate
from alpaca_stream.server.fills import Book, book, fills
from alpaca_stream.testing import run_handlers

pytestmark = pytest.mark.timeout(30)

WHEN = datetime(2026, 12, 2, 15, 0, tzinfo=timezone.utc)  # a Wednesday, 10:00 in New York: open
SESSION = ROOT / "tests" / "data" / "session.jsonl"
NO_KEYS = script_env(APCA_API_KEY_ID=None, APCA_API_SECRET_KEY=None)


def at(seconds: float) -> str:
    return (WHEN + timedelta(seconds=seconds)).isoformat()


def quote(seconds: float, bid: float, bid_size: float, ask: float, ask_size: float, symbol: str = "SPY") -> dict:
    return {"type": "quote", "symbol": symbol, "timestamp": at(seconds), "bid_price": bid, "bid_size": bid_size,
            "ask_price": ask, "ask_size": ask_size}


def trade(seconds: float, price: float, size: float, symbol: str = "SPY") -> dict:
    return {"type": "trade", "symbol": symbol, "price": price, "size": size, "timestamp": at(seconds),
            "exchange": "V", "id": int(seconds * 1000)}


def bar(minute: int, open: float, high: float, low: float, close: float) -> dict:  # noqa: A002  # a bar's name
    return {"type": "bar", "symbol": "SPY", "timestamp": at(60 * minute), "open": open, "high": high, "low": low,
            "close": close, "volume": 1000}


def market(qty: float, side: str = "buy", symbol: str = "SPY", **terms: Any) -> Any:
    from alpaca.trading.requests import MarketOrderRequest

    return MarketOrderRequest(symbol=symbol, qty=qty, side=side, **{"time_in_force": "day", **terms})


def limit(qty: float, price: float, side: str = "buy", symbol: str = "SPY", **terms: Any) -> Any:
    from alpaca.trading.requests import LimitOrderRequest

    return LimitOrderRequest(symbol=symbol, qty=qty, side=side, limit_price=price,
                             **{"time_in_force": "day", **terms})


Plan = dict[int, Callable[[Any], object]]  # the market message's number -> what its handler does with the client


class Bot:
    """Handlers that note what comes (each market message's number, each update's event, price,
    qty and time) and, on the messages a plan names, call the client as the plan says."""

    def __init__(self, plan: Plan, background: bool = False) -> None:
        self.plan, self.background = plan, background
        self.seen: list[tuple] = []
        self.updates: list[TradeUpdate] = []
        self.count = 0

    async def market(self, message: Record) -> None:
        self.count += 1
        self.seen.append(("message", self.count))
        act = self.plan.get(self.count)
        if act is None:
            return
        if self.background:
            in_background(asyncio.to_thread(lambda: act(orders.trading_client())))
        else:
            act(orders.trading_client())

    async def trade_update(self, update: TradeUpdate) -> None:
        self.updates.append(update)
        self.seen.append((update.event, update.price, update.qty, update.timestamp))

    @property
    def handlers(self) -> dict[str, Any]:
        return {**dict.fromkeys(KIND.values(), self.market), "trade_update": self.trade_update}


def backtest(tmp_path: Path, lines: list[dict], plan: Plan, background: bool = False,
             options: tuple[str, ...] = ()) -> Bot:
    """The script, in this process, replaying these lines through a Bot with this plan (and
    these options of the command line)."""
    recording = tmp_path / "recording.jsonl"
    recording.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    bot = Bot(plan, background)
    assert ws.main(["--replay", str(recording), "--quiet", *options], handlers=bot.handlers) == 0
    return bot


def filled(bot: Bot) -> list[tuple]:
    """The fills: (event, price, qty, time)."""
    return [seen for seen in bot.seen if seen[0] in ("fill", "partial_fill")]


def test_a_market_buy_fills_at_the_next_quotes_asks_in_parts_up_to_their_sizes_on_the_recordings_clock(tmp_path):
    quotes = [quote(0, 599.9, 100, 600.1, 50), quote(1, 599.95, 100, 600.2, 30), quote(2, 600.0, 100, 600.3, 100)]
    bot = backtest(tmp_path, quotes, {1: lambda client: client.submit_order(market(60))})
    assert bot.seen == [
        ("message", 1),
        ("new", None, None, WHEN),  # placed on the first quote: at its time; not filled at its ask
        ("partial_fill", 600.2, 30, WHEN + timedelta(seconds=1)),  # before the quote it filled on
        ("message", 2),
        ("fill", 600.3, 30, WHEN + timedelta(seconds=2)),
        ("message", 3)]
    order = bot.updates[-1].order
    assert (order.status, order.filled_qty, order.filled_avg_price) == ("filled", "60", "600.25")
    assert order.created_at == order.submitted_at == WHEN and order.filled_at == WHEN + timedelta(seconds=2)


def test_a_sell_fills_at_the_next_quotes_bid(tmp_path):
    quotes = [quote(0, 599.9, 100, 600.1, 50), quote(1, 599.95, 100, 600.2, 30), quote(2, 600.0, 5, 600.3, 100)]
    bot = backtest(tmp_path, quotes, {1: lambda client: client.submit_order(market(10)),
                                      2: lambda client: client.submit_order(market(10, "sell"))})
    assert [(event, price, qty) for event, price, qty, _ in filled(bot)] == [
        ("fill", 600.2, 10), ("partial_fill", 600.0, 5)]  # the rest waits for a bid after the last quote


def test_a_limit_buy_fills_once_a_later_ask_is_at_or_below_it_at_that_ask(tmp_path):
    quotes = [quote(0, 600.0, 100, 600.1, 100), quote(1, 600.0, 100, 600.05, 100), quote(2, 599.8, 100, 599.95, 100)]
    bot = backtest(tmp_path, quotes, {1: lambda client: client.submit_order(limit(10, 600.0))})
    assert filled(bot) == [("fill", 599.95, 10, WHEN + timedelta(seconds=2))]


def test_with_trades_only_a_market_order_takes_each_trades_size_and_a_limit_fills_at_its_limit(tmp_path):
    trades = [trade(0, 10.0, 100), trade(1, 10.1, 100), trade(2, 10.2, 100), trade(3, 10.0, 100),
              trade(4, 9.9, 100)]
    bot = backtest(tmp_path, trades, {1: lambda client: client.submit_order(market(150)),
                                      3: lambda client: client.submit_order(limit(20, 10.0))})
    assert filled(bot) == [("partial_fill", 10.1, 100, WHEN + timedelta(seconds=1)),
                           ("fill", 10.2, 50, WHEN + timedelta(seconds=2)),
                           # A trade at the limit may not have reached the order; one below it has.
                           ("fill", 10.0, 20, WHEN + timedelta(seconds=4))]


def test_a_trade_does_not_fill_an_order_of_a_symbol_with_quotes(tmp_path):
    lines = [quote(0, 599.9, 100, 600.1, 50), trade(1, 600.0, 100), quote(2, 599.95, 100, 600.2, 100)]
    bot = backtest(tmp_path, lines, {1: lambda client: client.submit_order(market(10))})
    assert filled(bot) == [("fill", 600.2, 10, WHEN + timedelta(seconds=2))]


def test_with_bars_only_an_order_fills_whole_at_the_next_bars_open_known_a_minute_after_its_start(tmp_path):
    bars = [bar(0, 100.0, 101.0, 99.5, 100.5), bar(1, 100.6, 101.0, 100.2, 100.8),
            bar(2, 100.8, 101.2, 98.5, 99.0)]
    bot = backtest(tmp_path, bars, {1: lambda client: client.submit_order(market(500)),
                                    2: lambda client: client.submit_order(limit(5, 99.0))})
    assert bot.updates[0].timestamp == WHEN + timedelta(minutes=1)  # the first bar, known at its end
    assert filled(bot) == [("fill", 100.6, 500, WHEN + timedelta(minutes=2)),
                           ("fill", 99.0, 5, WHEN + timedelta(minutes=3))]


def test_no_look_ahead_an_order_placed_on_the_days_best_price_fills_on_what_came_after(tmp_path):
    trades = [trade(0, 10.5, 100), trade(1, 9.0, 100), trade(2, 10.2, 100), trade(3, 10.4, 100)]
    bot = backtest(tmp_path, trades, {2: lambda client: client.submit_order(market(10))})  # on 9.0, the low
    assert filled(bot) == [("fill", 10.2, 10, WHEN + timedelta(seconds=2))]


@pytest.mark.parametrize("order", [market(1, symbol="TSLA"), limit(1, 19.0, symbol="TSLA")], ids=["market", "limit"])
def test_an_order_for_a_symbol_with_no_price_yet_is_refused_and_the_run_goes_on(tmp_path, caplog, order):
    bot = backtest(tmp_path, [trade(0, 10.0, 100), trade(1, 10.1, 100), trade(2, 20.0, 100, "TSLA")],
                   {1: lambda client: client.submit_order(order)})
    assert [seen for seen in bot.seen if seen[0] == "message"] == [("message", 1), ("message", 2), ("message", 3)]
    assert bot.updates == []
    said = unwrapped(caplog.text)
    assert "no price of TSLA yet in the recording: the backtest cannot read ahead" in said


def test_the_recordings_own_order_updates_are_passed_over(tmp_path, caplog):
    recorded = {"type": "trade_update", "event": "fill", "timestamp": at(0.5), "price": 1.0, "qty": 1,
                "order": {"id": "61e69015-8549-4bfd-b9c3-01e75843f47d", "symbol": "SPY"}}
    bot = backtest(tmp_path, [trade(0, 10.0, 100), recorded, trade(1, 10.1, 100)], {})
    assert bot.seen == [("message", 1), ("message", 2)]
    assert "passed over the recording's 1 order updates" in caplog.text



def test_an_order_batches_later_knows_the_prices_and_the_time_of_every_message_before_it(tmp_path, caplog):
    from alpaca_stream.sources.recording import REPLAY_BATCH

    # TSLA's only prices before the order: its first two messages, batches before it is placed.
    spy = [trade(1 + number / 1000, 600.0, 100) for number in range(2 * REPLAY_BATCH + 100)]
    lines = [quote(0, 99.9, 100, 100.1, 100, "TSLA"), trade(0.5, 100.0, 10, "TSLA"), *spy,
             quote(9, 100.9, 100, 101.1, 100, "TSLA")]
    placed = 2 * REPLAY_BATCH + 50
    got: dict[str, Any] = {}

    def order(client: Any) -> None:
        got["clock"] = client.get_clock().timestamp
        client.submit_order(market(1, symbol="TSLA"))

    bot = backtest(tmp_path, lines, {placed: order})
    assert got["clock"] == WHEN + timedelta(seconds=1 + (placed - 3) / 1000)
    assert filled(bot) == [("fill", 101.1, 1, WHEN + timedelta(seconds=9))]
    # Bought and held from TSLA's first price (its first quote's midpoint) to its last.
    assert "buy and hold TSLA: equity 101,000.00 (+1,000.00)" in unwrapped(caplog.text)

def test_with_no_order_open_a_call_knows_the_message_being_handled_and_equity_is_marked_at_each_price(
        tmp_path, caplog):
    from alpaca_stream.sources.recording import REPLAY_BATCH

    # Between orders the messages go straight to the handlers and the broker sees them when
    # asked: a call on message 1,500 (the second batch) knows its time and price, no later one,
    # and the drawdown counts each price of the share held, the peak at message 700 and the
    # trough at 1,200 among them.
    def mid(number: int) -> float:
        return 600 + (number if number <= 700 else 1400 - number if number <= 1200 else number - 1000) / 100

    lines = [quote(number / 100, mid(number) - 0.01, 100, mid(number) + 0.01, 100)
             for number in range(1, 2 * REPLAY_BATCH + 1)]
    got: dict[str, Any] = {}

    def later(client: Any) -> None:
        got["clock"], got["account"] = client.get_clock().timestamp, client.get_account()
        client.submit_order(market(1, "sell"))

    bot = backtest(tmp_path, lines, {2: lambda client: client.submit_order(market(1)), 1500: later})
    bought, sold = 600.03 + 0.01, mid(1501) - 0.01  # the asks and bids of the messages after
    assert filled(bot) == [("fill", round(bought, 2), 1, WHEN + timedelta(seconds=0.03)),
                           ("fill", round(sold, 2), 1, WHEN + timedelta(seconds=15.01))]
    assert got["clock"] == WHEN + timedelta(seconds=15)
    assert float(got["account"].equity) == pytest.approx(100_000 - bought + mid(1500))
    peak, trough = 100_000 - bought + mid(700), 100_000 - bought + mid(1200)
    assert f"largest drawdown {peak - trough:,.2f}" in unwrapped(caplog.text)


def test_a_backtest_stopped_with_ctrl_c_before_the_recordings_end_still_ends_with_its_result(tmp_path, caplog):
    # The summary of a stopped run gives the fills so far and the positions at the last prices:
    # stopped in the first of three batches, the run ends before the recording's end.
    from alpaca_stream.sources.recording import REPLAY_BATCH

    lines = [quote(number / 100, 600.0, 100, 600.1, 100) for number in range(3 * REPLAY_BATCH)]
    backtest(tmp_path, lines, {2: lambda client: client.submit_order(market(1)),
                               5: lambda client: signal.raise_signal(signal.SIGINT)})
    said = unwrapped(caplog.text)
    assert "stopping; a second Ctrl+C forces it" in said
    assert "backtest: orders 1, fills 1, open at the end 0" in said


QUOTES = [quote(second, 600 + second / 100, 100, 600.1 + second / 100, 25 + second) for second in range(12)]
PLAN: Plan = {2: lambda client: client.submit_order(market(80)),
              5: lambda client: client.submit_order(limit(30, 600.14)),
              7: lambda client: client.submit_order(market(50, "sell"))}


def test_two_runs_and_an_order_placed_in_the_background_give_the_same_updates_at_the_same_places(tmp_path):
    first, again = backtest(tmp_path, QUOTES, PLAN), backtest(tmp_path, QUOTES, PLAN)
    background = backtest(tmp_path, QUOTES, PLAN, background=True)
    assert len(filled(first)) >= 4
    assert first.seen == again.seen == background.seen


def test_orders_one_handler_starts_in_the_background_reach_the_broker_in_the_order_started(tmp_path):
    import time

    def slow_market_buy(client: Any) -> None:
        time.sleep(0.3)  # it would lose the race to the limit order below, started after it
        client.submit_order(market(100))

    lines = [quote(second, 600.00 + second / 10, 100, 600.02 + second / 10, 100) for second in range(5)]
    recording = tmp_path / "recording.jsonl"
    recording.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")

    def run() -> list[tuple]:
        updates: list[TradeUpdate] = []

        async def on_quote(quote: Quote) -> None:
            if quote.bid_price == 600.00:  # the first
                client = orders.trading_client()
                in_background(asyncio.to_thread(slow_market_buy, client))
                in_background(asyncio.to_thread(client.submit_order, limit(100, 601.0)))

        async def on_trade_update(update: TradeUpdate) -> None:
            updates.append(update)

        assert ws.main(["--replay", str(recording), "--quiet"],
                       handlers={"quote": on_quote, "trade_update": on_trade_update}) == 0
        return [(update.event, update.order.type, update.price, update.order.id) for update in updates]

    first, again = run(), run()
    # The market order first, at the next quote's ask; the limit at the one after; the same ids.
    assert first == again
    assert [(event, kind, price) for event, kind, price, _ in first] == [
        ("new", "market", None), ("new", "limit", None), ("fill", "market", 600.12), ("fill", "limit", 600.22)]

def test_alpaca_pys_trading_client_against_the_backtest_pair_position_read_and_closed_as_alpaca_py_sends_it(
        tmp_path):
    from alpaca.common.exceptions import APIError

    pair: list[dict] = [quote(second, 90_000 + second, 0.5, 90_010 + second, 0.25, "BTC/USD") for second in range(6)]
    got: dict[str, Any] = {}

    def first(client: Any) -> None:
        got["market"] = client.submit_order(market(0.4, symbol="BTC/USD"))
        got["limit"] = client.submit_order(limit(1, 80_000.0, symbol="BTC/USD"))

    def then(client: Any) -> None:
        got["order"] = client.get_order_by_id(got["market"].id)
        got["open"] = client.get_orders()
        client.cancel_order_by_id(got["limit"].id)
        got["account"], got["positions"] = client.get_account(), client.get_all_positions()
        got["position"] = client.get_open_position("BTC/USD")
        got["clock"] = client.get_clock()
        got["closing"] = client.close_position("BTC/USD")
        with pytest.raises(APIError) as refused:
            client.submit_order(market(1, symbol="ETH/USD"))
        got["refused"] = refused.value.status_code

    bot = backtest(tmp_path, pair, {1: first, 4: then})
    assert (got["order"].status, got["order"].filled_qty) == ("filled", "0.4")  # 0.25, then 0.15
    assert [str(order.id) for order in got["open"]] == [str(got["limit"].id)]
    assert got["position"].qty == "0.4" and [p.symbol for p in got["positions"]] == ["BTCUSD"]
    assert float(got["account"].cash) == pytest.approx(100_000 - 0.25 * 90_011 - 0.15 * 90_012)
    assert got["clock"].timestamp == WHEN + timedelta(seconds=3) and got["clock"].is_open
    assert (got["closing"].side, got["closing"].qty, got["refused"]) == ("sell", "0.4", 422)
    assert [(update.event, update.qty) for update in bot.updates] == [
        ("new", None), ("new", None), ("partial_fill", 0.25), ("fill", 0.15), ("canceled", None), ("new", None),
        ("fill", 0.4)]  # the close, sold at the next bid, for 0.5


def test_get_account_in_on_trade_update_already_counts_the_fill(tmp_path):
    cash: list[float] = []

    class Counting(Bot):
        async def trade_update(self, update: TradeUpdate) -> None:
            await super().trade_update(update)
            client: Any = orders.trading_client()
            cash.append(float(client.get_account().cash))  # blocking, in the handler

    recording = tmp_path / "recording.jsonl"
    recording.write_text("".join(json.dumps(line) + "\n" for line in QUOTES[:3]), encoding="utf-8")
    bot = Counting({1: lambda client: client.submit_order(market(10))})
    assert ws.main(["--replay", str(recording), "--quiet"], handlers=bot.handlers) == 0
    assert cash == [100_000, pytest.approx(100_000 - 10 * 600.11)]


def test_the_fill_model_shares_a_quotes_size_among_the_orders_in_the_order_they_were_placed():
    orders_ = [{"id": id, "side": "buy", "qty": "30", "filled_qty": "0", "limit_price": None} for id in "ab"]
    message = {"T": "q", "S": "SPY", "t": WHEN, "bp": 1.0, "bs": 10, "ap": 1.1, "as": 40}
    assert fills(orders_, message, offered(message)) == [("a", 1.1, 30), ("b", 1.1, 10)]
    before = {**message, "t": datetime(2025, 10, 31, 15, tzinfo=timezone.utc), "as": 1}  # one round lot then
    assert fills(orders_, before, offered(before)) == [("a", 1.1, 30), ("b", 1.1, 30)]


def offered(message: dict[str, Any]) -> Book:
    """What a quote offers (book()), the recording having quoted its symbol."""
    made = book(message, quoted=True, traded=False)
    assert made is not None
    return made


# -- stops, time in force, hours ----------------------------------------------------------------


def stop(qty: float, price: float, side: str = "buy", limit_at: float | None = None) -> Any:
    from alpaca.trading.requests import StopLimitOrderRequest, StopOrderRequest

    if limit_at is None:
        return StopOrderRequest(symbol="SPY", qty=qty, side=side, time_in_force="day", stop_price=price)
    return StopLimitOrderRequest(symbol="SPY", qty=qty, side=side, time_in_force="day", stop_price=price,
                                 limit_price=limit_at)


def test_a_stop_triggered_by_a_trade_at_or_through_it_fills_as_a_market_order_from_the_next_message(tmp_path):
    trades = [trade(0, 10.0, 100), trade(1, 10.3, 100), trade(2, 10.4, 100), trade(3, 10.6, 100)]
    bot = backtest(tmp_path, trades, {1: lambda client: client.submit_order(stop(10, 10.4))})
    # 10.3 is below the stop; 10.4 reaches it, and gives no fill itself: the next trade does.
    assert filled(bot) == [("fill", 10.6, 10, WHEN + timedelta(seconds=3))]


def test_with_quotes_alone_a_sell_stop_limit_triggers_on_the_bid_then_fills_as_a_limit(tmp_path):
    quotes = [quote(0, 100.0, 100, 100.1, 100), quote(1, 99.6, 100, 99.7, 100), quote(2, 99.1, 100, 99.2, 100),
              quote(3, 99.3, 100, 99.4, 100)]
    bot = backtest(tmp_path, quotes, {1: lambda client: client.submit_order(stop(10, 99.6, "sell", 99.25))})
    # 99.6 triggers it; 99.1 is under its limit; 99.3 is over it: a short sale of 10 at that bid.
    assert filled(bot) == [("fill", 99.3, 10, WHEN + timedelta(seconds=3))]


def test_a_trailing_stop_and_a_bracket_are_refused_with_what_the_backtest_takes(tmp_path):
    from alpaca.common.exceptions import APIError
    from alpaca.trading.requests import StopLossRequest, TakeProfitRequest, TrailingStopOrderRequest

    refusals: list[tuple[int, str]] = []

    def place(client: Any) -> None:
        for order in (TrailingStopOrderRequest(symbol="SPY", qty=1, side="buy", time_in_force="day",
                                               trail_percent=1.0),
                      market(1, order_class="bracket", take_profit=TakeProfitRequest(limit_price=700.0),
                             stop_loss=StopLossRequest(stop_price=500.0)),
                      market(1, time_in_force="opg")):
            with pytest.raises(APIError) as refused:
                client.submit_order(order)
            refusals.append((refused.value.status_code, json.loads(str(refused.value))["message"]))

    bot = backtest(tmp_path, QUOTES[:2], {1: place})
    assert refusals == [
        (422, "the backtest takes market, limit, stop and stop_limit orders, not trailing_stop"),
        (422, "the backtest takes simple orders, not bracket"),
        (422, "the backtest takes time in force day, gtc, ioc and fok, not opg")]
    assert bot.updates == []


def test_ioc_fills_what_the_next_quote_offers_and_is_canceled_and_fok_all_or_nothing(tmp_path):
    quotes = [quote(0, 599.9, 100, 600.1, 50), quote(1, 599.95, 100, 600.2, 30), quote(2, 600.0, 100, 600.3, 100)]
    bot = backtest(tmp_path, quotes, {1: lambda client: (client.submit_order(market(20, time_in_force="ioc")),
                                                         client.submit_order(market(20, time_in_force="fok")))})
    one_second = WHEN + timedelta(seconds=1)
    assert [(seen[0], seen[2]) for seen in bot.seen if seen[0] != "message"] == [
        ("new", None), ("new", None), ("fill", 20), ("canceled", None)]  # 10 left of 30: fok takes none
    assert bot.updates[-1].timestamp == one_second
    bot = backtest(tmp_path, quotes, {1: lambda client: client.submit_order(market(40, time_in_force="ioc"))})
    assert [(seen[0], seen[2], seen[3]) for seen in bot.seen if seen[0] != "message"] == [
        ("new", None, WHEN), ("partial_fill", 30, one_second), ("canceled", None, one_second)]


def new_york(hour: int, minute: int = 0, day: int = 2, month: int = 12) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=NEW_YORK)


def quote_at(when: datetime, bid: float, ask: float, symbol: str = "SPY") -> dict:
    return {**quote(0, bid, 100, ask, 100, symbol), "timestamp": when.isoformat()}


def test_a_day_order_expires_at_the_close_when_a_message_after_it_comes_stamped_at_the_close(tmp_path):
    quotes = [quote_at(new_york(10), 599.9, 600.1), quote_at(new_york(15, 30), 599.9, 600.1),
              quote_at(new_york(16, 5), 598.0, 598.1), quote_at(new_york(9, 45, day=3), 589.0, 589.1)]
    bot = backtest(tmp_path, quotes, {1: lambda client: (client.submit_order(limit(5, 590.0)),
                                                         client.submit_order(limit(5, 590.0, time_in_force="gtc")))})
    assert bot.seen[3:] == [("message", 2), ("expired", None, None, new_york(16)), ("message", 3),
                            ("fill", 589.1, 5, new_york(9, 45, day=3)), ("message", 4)]  # the gtc, the next day


def test_a_day_order_expires_at_the_close_on_a_message_of_another_symbol(tmp_path):
    quotes = [quote_at(new_york(10), 599.9, 600.1), quote_at(new_york(10), 299.9, 300.1, "TSLA"),
              quote_at(new_york(16, 5), 598.0, 598.1), quote_at(new_york(9, 45, day=3), 289.0, 289.1, "TSLA")]
    bot = backtest(tmp_path, quotes, {2: lambda client: client.submit_order(limit(5, 290.0, symbol="TSLA"))})
    # SPY's quote after the close ends TSLA's day; TSLA's the next day, under its limit, fills nothing.
    assert bot.seen[2:] == [("new", None, None, new_york(10)), ("expired", None, None, new_york(16)),
                            ("message", 3), ("message", 4)]


def test_outside_regular_hours_a_market_order_waits_for_the_open_an_extended_hours_limit_does_not(tmp_path):
    quotes = [quote_at(new_york(8), 90_000, 90_010, "BTC/USD"), quote_at(new_york(8), 599.0, 599.2),
              quote_at(new_york(8, 30), 599.4, 599.5), quote_at(new_york(8, 30), 90_000, 90_010, "BTC/USD"),
              quote_at(new_york(9, 30), 600.0, 600.1)]

    def place(client: Any) -> None:
        client.submit_order(market(1))
        client.submit_order(limit(2, 599.6))
        client.submit_order(limit(3, 599.6, extended_hours=True))
        client.submit_order(market(0.1, symbol="BTC/USD", time_in_force="gtc"))  # a pair trades at any hour

    bot = backtest(tmp_path, quotes, {2: place})
    # The limit without extended hours waits too: at 8:30 the ask is under its 599.6, at 9:30 over.
    assert [(price, qty, when) for _, price, qty, when in filled(bot)] == [
        (599.5, 3, new_york(8, 30)), (90_010, 0.1, new_york(8, 30)), (600.1, 1, new_york(9, 30))]


def test_the_calendar_is_asked_once_a_message_for_each_kind_of_hours_not_once_an_open_order(monkeypatch):
    from alpaca_stream.server import backtest as broker

    asked: list[bool] = []  # extended, at each call

    def market_open(now: datetime, extended: bool = False) -> bool:
        asked.append(extended)
        return calendar.market_open(now, extended)

    monkeypatch.setattr(broker, "market_open", market_open)

    def place(client: Any) -> None:  # 50 limits under the ask, open to the end: 25 for extended hours
        for n in range(50):
            client.submit_order(limit(1, 500.0 + n, extended_hours=n % 2 == 0))

    quotes = [quote_at(new_york(10, minute), 599.9, 600.1) for minute in range(4)]
    session = run_handlers(quotes, Bot({1: place}).handlers, trading="simulated")
    assert session.backtest is not None and session.backtest.open_orders == 50
    # Once each for each of the 3 quotes after the orders, and at the end, for the result: the
    # orders waiting for the open.
    assert sorted(asked) == [False] * 4 + [True] * 4


# The market's calendar (calendar.py): 2026-11-27 and 12-24 are half days, closed at 13:00;
# 12-25, a Friday, is a holiday; 12-28 is the Monday after it.


def test_a_day_order_expires_at_13_on_a_half_day(tmp_path):
    quotes = [quote_at(new_york(10, day=27, month=11), 599.9, 600.1),
              quote_at(new_york(12, 30, day=27, month=11), 599.9, 600.1),
              quote_at(new_york(13, 5, day=27, month=11), 589.0, 589.1)]
    bot = backtest(tmp_path, quotes, {1: lambda client: client.submit_order(limit(5, 590.0))})
    assert bot.seen[2:] == [("message", 2), ("expired", None, None, new_york(13, day=27, month=11)),
                            ("message", 3)]


def test_a_market_order_placed_after_a_half_days_close_waits_past_the_holiday_for_the_next_open(tmp_path):
    quotes = [quote_at(new_york(13, 30, day=24), 599.9, 600.1), quote_at(new_york(14, day=24), 599.9, 600.1),
              quote_at(new_york(10, day=25), 600.9, 601.1), quote_at(new_york(9, 45, day=28), 601.9, 602.1)]
    bot = backtest(tmp_path, quotes, {1: lambda client: client.submit_order(market(1))})
    assert filled(bot) == [("fill", 602.1, 1, new_york(9, 45, day=28))]


def test_get_clock_on_a_holiday_says_closed_and_the_next_trading_days_open_and_close(tmp_path):
    clocks: list[Any] = []
    quotes = [quote_at(new_york(10, day=27, month=11), 599.9, 600.1), quote_at(new_york(10, day=25), 599.9, 600.1)]
    backtest(tmp_path, quotes, {1: lambda client: clocks.append(client.get_clock()),
                                2: lambda client: clocks.append(client.get_clock())})
    half_day, holiday = clocks
    assert (holiday.is_open, holiday.next_open, holiday.next_close) == (
        False, new_york(9, 30, day=28), new_york(16, day=28))
    assert (half_day.is_open, half_day.next_open, half_day.next_close) == (
        True, new_york(9, 30, day=30, month=11), new_york(13, day=27, month=11))


def test_an_extended_hours_limit_fills_from_4_to_20_and_expires_at_20(tmp_path):
    quotes = [quote_at(new_york(19), 599.9, 600.1), quote_at(new_york(20, 15), 599.4, 599.5),
              quote_at(new_york(20, 30), 599.4, 599.5), quote_at(new_york(3, day=3), 599.4, 599.5),
              quote_at(new_york(5, day=3), 599.4, 599.5)]
    extended = limit(5, 599.6, extended_hours=True)
    bot = backtest(tmp_path, quotes, {1: lambda client: client.submit_order(extended),
                                      2: lambda client: client.submit_order(extended)})
    assert bot.seen == [
        ("message", 1), ("new", None, None, new_york(19)),
        ("expired", None, None, new_york(20)), ("message", 2),  # placed at 19:00, for the day
        ("new", None, None, new_york(20, 15)), ("message", 3), ("message", 4),  # for the next day, from 4:00
        ("fill", 599.5, 5, new_york(5, day=3)), ("message", 5)]


# -- the account: short sales, buying power, options, the costs ----------------------------------


def test_a_stock_is_sold_short_in_a_margin_account_a_pair_is_not_and_buying_power_is_enforced(tmp_path):
    from alpaca.common.exceptions import APIError

    lines = [quote(0, 99.9, 100, 100.1, 100), quote(1, 99.9, 100, 100.1, 100, "BTC/USD"),
             quote(2, 100.0, 1000, 100.2, 1000), quote(3, 99.8, 1000, 100.0, 1000)]
    got: dict[str, Any] = {}

    def place(client: Any) -> None:
        got["before"] = client.get_account()
        client.submit_order(market(10, "sell"))
        for order in (market(1, "sell", "BTC/USD"), market(2001, "buy")):  # 2001 * 100 > 200,000
            with pytest.raises(APIError) as refused:
                client.submit_order(order)
            got.setdefault("refused", []).append((refused.value.status_code, json.loads(str(refused.value))["message"]))

    bot = backtest(tmp_path, lines, {2: place, 4: lambda client: got.update(after=client.get_account())})
    before, after = got["before"], got["after"]
    assert (before.multiplier, before.shorting_enabled, float(before.buying_power)) == ("2", True, 200_000)
    assert got["refused"] == [(403, "insufficient qty available for order (requested: 1, available: 0)"),
                              (403, "insufficient buying power")]
    assert filled(bot) == [("fill", 100.0, 10, WHEN + timedelta(seconds=2))]
    # Reg T: twice the equity, less what is held short (10 at the midpoint of 99.8 and 100.0)
    assert float(after.cash) == 101_000 and float(after.short_market_value) == pytest.approx(-999)
    assert float(after.buying_power) == pytest.approx(2 * (101_000 - 999) - 999)


def test_a_pair_is_bought_with_cash_alone_and_what_closes_a_position_needs_no_buying_power(tmp_path):
    from alpaca.common.exceptions import APIError

    lines = [quote(0, 99.9, 10_000, 100.1, 10_000), quote(1, 89_990, 10, 90_010, 10, "BTC/USD"),
             *(quote(second, 99.9, 10_000, 100.1, 10_000) for second in range(2, 6))]
    got: dict[str, Any] = {}

    def refused(client: Any, order: Any) -> str:
        with pytest.raises(APIError) as refusal:
            client.submit_order(order)
        return str(json.loads(str(refusal.value))["message"])

    def short(client: Any) -> None:
        got["pair"] = refused(client, market(2, symbol="BTC/USD"))  # $180,000: beyond the cash, not the margin
        client.submit_order(market(1900, "sell"))  # $190,000 of the $200,000 of buying power

    def cover(client: Any) -> None:
        got["account"] = client.get_account()
        got["more"] = refused(client, market(2000))  # 100 shares beyond closing the short
        client.submit_order(market(1900))

    bot = backtest(tmp_path, lines, {2: short, 4: cover})
    assert got["pair"] == got["more"] == "insufficient buying power"
    assert float(got["account"].buying_power) == pytest.approx(2 * (100_000 - 1900 * 0.1) - 1900 * 100)  # 9,620
    assert [(price, qty) for _, price, qty, _ in filled(bot)] == [(99.9, 1900), (100.1, 1900)]


def test_an_options_premium_moves_a_hundred_times_its_price_in_cash_and_in_its_positions_value(tmp_path):
    contract = "AAPL261218C00250000"
    lines = [quote(0, 2.4, 10, 2.5, 10, contract), quote(1, 2.4, 10, 2.5, 10, contract)]
    got: dict[str, Any] = {}
    backtest(tmp_path, lines, {1: lambda client: client.submit_order(market(1, symbol=contract)),
                               2: lambda client: got.update(account=client.get_account(),
                                                            position=client.get_open_position(contract))})
    assert float(got["account"].cash) == 100_000 - 250
    assert (got["position"].asset_class, float(got["position"].market_value)) == ("us_option", 245)


def test_cash_latency_slippage_and_fee_options_change_the_fills_and_the_summary_says_so(tmp_path, caplog):
    got: list[Any] = []
    bot = backtest(tmp_path, QUOTES[:5], {1: lambda client: (got.append(client.get_account()),
                                                             client.submit_order(market(10)),
                                                             client.submit_order(limit(10, 600.125))),
                                          5: lambda client: got.append(client.get_account())},
                   options=("--cash", "25000", "--latency", "1500", "--slippage", "10", "--fee-bps", "5"))
    assert float(got[0].cash) == 25_000
    # placed at 0 s, at the market at 1.5 s: the quote of 2 s, its ask 600.12, 10 bps worse; the
    # limit at its limit, never beyond
    assert filled(bot) == [("fill", pytest.approx(600.12 * 1.001), 10, WHEN + timedelta(seconds=2)),
                           ("fill", 600.125, 10, WHEN + timedelta(seconds=2))]
    bought = (600.12 * 1.001 + 600.125) * 10
    assert float(got[1].cash) == pytest.approx(25_000 - bought - bought * 5 / 10_000)  # $6.00 of fees
    said = " ".join(caplog.text.split())
    assert "backtest: orders 2, fills 2, open at the end 0, fee 5 bps, slippage 10 bps" in said
    assert "(-12.66, fees 6.00 in it)" in said


# -- the script ---------------------------------------------------------------------------------


def replayed_with_the_order_example(folder: Path, *options: str) -> subprocess.CompletedProcess:
    """The shipped recording replayed by a copy of the script in folder, with the order example
    of docs/handlers.md pasted, and its fills printed."""
    number = next(number for number, (*_, code) in enumerate(EXAMPLES) if "submit_order" in code)
    for handlers, code in pasted_with_what_it_needs(number + 1):
        paste(folder / "websocket_stream.py", handlers, code)
    return subprocess.run([sys.executable, "websocket_stream.py", "--replay", str(SESSION), *options], cwd=folder,
                          capture_output=True, text=True, env=NO_KEYS, timeout=30)


def test_the_order_example_of_docs_handlers_pasted_runs_on_the_shipped_recording_and_its_fill_prints(copy_script):
    done = replayed_with_the_order_example(copy_script())
    assert done.returncode == 0, done.stderr
    assert "buying 1 TSLA after a block of 48800" in done.stdout
    assert "filled: bought 1 TSLA at 350.28" in done.stdout and "position in TSLA: 1" in done.stdout
    assert re.search(r"backtest: orders 1, fills 1, open at the end 0\n  TSLA: realized \+0.00, unrealized -0.18, "
                     r"holding 1\n  equity 99,999.82 \(-0.18\); largest drawdown 0.18 \(0.00%\)\n"
                     r"  buy and hold TSLA: equity 100,031.43 \(\+31.43\)$", done.stderr.rstrip()), done.stderr
    assert "warning" not in done.stderr and max(map(len, done.stderr.splitlines())) <= 80


# docs/backtest.md's runs of the shipped recording: each command, and the summary's end it shows.
SHOWN = re.findall(r"```\npython websocket_stream\.py --replay session\.jsonl(.*?)\n```\n.*?```\n(backtest: .*?)```",
                   (ROOT / "docs" / "backtest.md").read_text(encoding="utf-8"), re.S)


@pytest.mark.parametrize(("options", "summary"), SHOWN, ids=[options or "no options" for options, _ in SHOWN])
def test_docs_backtest_shows_the_summary_the_script_prints(options, summary, copy_script):
    # Before, its costs line was made up: "fees $6.00 (5 bps)", where the script says "fee 5 bps".
    assert len(SHOWN) == 2
    done = replayed_with_the_order_example(copy_script(), *options.split())
    assert done.returncode == 0, done.stderr
    assert " ".join(done.stderr.split()).endswith(" ".join(summary.split())), done.stderr


def test_a_replay_whose_handlers_place_no_order_starts_no_broker_and_imports_none():
    check = """import sys, websocket_stream as ws
code = ws.main()
assert not [name for name in sys.modules if name.startswith("alpaca_stream.server")], "a server module"
sys.exit(code)"""
    done = subprocess.run([sys.executable, "-c", check, "--replay", str(SESSION), "--quiet"], cwd=ROOT,
                          capture_output=True, text=True, env=NO_KEYS, timeout=30)
    assert done.returncode == 0, done.stderr
    assert "backtest:" not in done.stderr and "orders go to" not in done.stderr


def test_run_handlers_with_a_simulated_account_fills_a_students_orders_and_gives_the_result():
    from alpaca.trading.requests import MarketOrderRequest

    from alpaca_stream import trading_client

    bought: list[float] = []
    fills: list[tuple] = []

    async def on_trade(trade: Any) -> None:  # buy on the first trade, sell once it is up 2%
        if not bought:
            bought.append(trade.price)
            side = "buy"
        elif len(bought) == 1 and trade.price >= bought[0] * 1.02:
            bought.append(trade.price)
            side = "sell"
        else:
            return
        order = MarketOrderRequest(symbol=trade.symbol, qty=5, side=side, time_in_force="day")
        in_background(asyncio.to_thread(trading_client().submit_order, order))

    async def on_trade_update(update: TradeUpdate) -> None:
        if update.event in ("fill", "partial_fill"):
            fills.append((update.order.side, update.qty, update.price))

    trades = [trade(0, 10.00, 100), trade(1, 10.10, 100), trade(2, 10.30, 100), trade(3, 10.25, 100),
              trade(4, 10.40, 100)]
    session = ws.run_handlers(trades, {"trade": on_trade, "trade_update": on_trade_update}, trading="simulated")
    assert fills == [("buy", 5, 10.10), ("sell", 5, 10.25)]  # each at the trade after its order
    result = session.backtest
    assert result is not None and [fill.price for fill in result.fills] == [10.10, 10.25]
    assert result.symbols["SPY"].realized == 0.75  # (10.25 - 10.10) x 5
    assert result.equity == 100_000.75 and result.symbols["SPY"].position == 0


# -- fractional and notional orders --------------------------------------------------------------


def dollars(amount: float, side: str = "buy", symbol: str = "SPY", **terms: Any) -> Any:
    from alpaca.trading.requests import MarketOrderRequest

    return MarketOrderRequest(symbol=symbol, notional=amount, side=side, **{"time_in_force": "day", **terms})


def test_a_fractional_buy_fills_half_a_share_and_a_notional_buy_its_dollars_at_each_ask_in_parts(tmp_path):
    quotes = [quote(second, 399.9, 10, 400.0, 1) for second in range(5)]
    got: list[Any] = []
    bot = backtest(tmp_path, quotes, {1: lambda client: got.append(client.submit_order(market(0.5))),
                                      2: lambda client: got.append(client.submit_order(dollars(1000)))})
    assert (got[1].notional, got[1].qty) == ("1000", None)  # known as it fills, as Alpaca's
    assert filled(bot) == [("fill", 400.0, 0.5, WHEN + timedelta(seconds=1)),
                           ("partial_fill", 400.0, 1, WHEN + timedelta(seconds=2)),  # the ask's size: 1
                           ("partial_fill", 400.0, 1, WHEN + timedelta(seconds=3)),
                           ("fill", 400.0, 0.5, WHEN + timedelta(seconds=4))]
    order = bot.updates[-1].order
    assert (order.status, order.notional, order.qty, order.filled_qty) == ("filled", "1000", None, "2.5")
    assert format_text(bot.updates[-1]).endswith("fill 0.5 @ 400.00; buy 2.5 of $1,000.00")  # no qty to show


def test_a_notional_round_trip_sells_its_dollars_worth_and_realizes_on_fractional_shares():
    bought = [quote(second, 399.9, 100, 400.0, 100) for second in range(2)]
    sold = [quote(second, 420.0, 1, 420.2, 100) for second in range(2, 6)]
    bot = Bot({1: lambda client: client.submit_order(dollars(1000)),  # 2.5 shares at 400.00
               3: lambda client: client.submit_order(dollars(840, "sell"))})  # 2 at 420.00, a share a quote
    session = ws.run_handlers(bought + sold, bot.handlers, trading="simulated")
    assert [(event, price, qty) for event, price, qty, _ in filled(bot)] == [
        ("fill", 400.0, 2.5), ("partial_fill", 420.0, 1), ("fill", 420.0, 1)]
    result = session.backtest
    assert result is not None and result.symbols["SPY"].position == 0.5
    assert result.symbols["SPY"].realized == 40.0  # (420 - 400) x 2
    assert result.symbols["SPY"].unrealized == 10.05  # 0.5 held, marked at the midpoint 420.10


def test_a_notional_sale_fills_for_its_dollars_over_the_fills_price_so_a_fall_sells_short(tmp_path):
    quotes = [quote(0, 99.9, 100, 100.1, 100), quote(1, 99.9, 100, 100.1, 100), quote(2, 50.0, 100, 50.2, 100)]
    bot = backtest(tmp_path, quotes, {1: lambda client: client.submit_order(market(10)),
                                      2: lambda client: client.submit_order(dollars(1000, "sell"))})
    # Taken: $1,000 at 100.00, the price when placed, is the 10 shares held; filled at a bid of
    # 50.00, it sells 20 (docs/backtest.md, "The account": written down, not prevented).
    assert [(price, qty) for _, price, qty, _ in filled(bot)] == [(100.1, 10), (50.0, 20)]
    assert bot.updates[-1].position_qty == -10


def test_fractional_and_notional_orders_are_refused_where_alpaca_refuses_them(tmp_path):
    from alpaca.common.exceptions import APIError

    contract = "AAPL261218C00250000"
    lines = [quote(0, 399.9, 100, 400.0, 100), quote(1, 2.4, 10, 2.5, 10, contract),
             quote(2, 399.9, 100, 400.0, 100)]
    refusals: list[tuple[int, str]] = []

    def place(client: Any) -> None:
        for order in (limit(0.5, 400.0), market(0.5, time_in_force="gtc"), market(0.5, "sell"),
                      market(0.5, symbol=contract), dollars(100, symbol=contract), dollars(250_000),
                      stop(0.5, 410.0)):
            with pytest.raises(APIError) as refused:
                client.submit_order(order)
            refusals.append((refused.value.status_code, json.loads(str(refused.value))["message"]))
        from alpaca.trading.requests import LimitOrderRequest

        with pytest.raises(APIError) as refused:  # alpaca-py sends a notional limit order as it is
            client.submit_order(LimitOrderRequest(symbol="SPY", notional=100, side="buy", time_in_force="day",
                                                  limit_price=400.0))
        refusals.append((refused.value.status_code, json.loads(str(refused.value))["message"]))

    bot = backtest(tmp_path, lines, {2: place})
    assert refusals == [(422, "fractional orders must be market orders"),
                        (422, "fractional orders must be DAY orders"),
                        (422, "fractional orders cannot be sold short"),
                        (422, "qty must be integer"),
                        (422, "options are ordered in whole contracts"),
                        (403, "insufficient buying power"),  # $250,000 beyond the $200,000 of a margin account
                        (422, "fractional orders must be market orders"),
                        (422, "notional orders must be market orders")]
    assert bot.updates == []


def test_a_pairs_fractional_qty_is_taken_in_a_limit_order_and_its_notional_in_a_market_order(tmp_path):
    pair = [quote(second, 90_000, 1, 90_010 - 10 * second, 1, "BTC/USD") for second in range(4)]
    bot = backtest(tmp_path, pair, {1: lambda client: (
        client.submit_order(limit(0.25, 90_000.0, symbol="BTC/USD", time_in_force="gtc")),
        client.submit_order(dollars(900, symbol="BTC/USD", time_in_force="ioc")))})
    assert [(price, qty) for _, price, qty, _ in filled(bot)] == [(90_000, 0.25), (90_000, 0.01)]


def test_with_slippage_a_notional_buy_spends_its_dollars_at_the_worse_price_not_more(tmp_path):
    quotes = [quote(second, 399.9, 100, 400.0, 100) for second in range(3)]
    bot = backtest(tmp_path, quotes, {1: lambda client: client.submit_order(dollars(1000))},
                   options=("--slippage", "100"))
    assert filled(bot) == [("fill", pytest.approx(404.0), pytest.approx(1000 / 404), WHEN + timedelta(seconds=1))]
    assert float(bot.updates[-1].order.filled_qty) * 404.0 == pytest.approx(1000, abs=0.005)
