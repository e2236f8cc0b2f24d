"""--replay FILE is a backtest (#32): trading_client() gives alpaca-py's TradingClient, pointed at
a broker whose orders fill against the recording's own prices, on the recording's clock, and the
fills come to on_trade_update as they would live. Each rule of the fill model (docs/backtest.md)
on a small recording written here, with known prices, sizes and times; the script runs in this
process with the tests' own handlers (Bot), so these pass whatever a student writes in theirs."""

from __future__ import annotations

import asyncio
import json
import re
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
from alpaca_stream import in_background, orders
from alpaca_stream.records import KIND, Record, TradeUpdate
from alpaca_stream.server.fills import fills

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


def market(qty: float, side: str = "buy", symbol: str = "SPY") -> Any:
    from alpaca.trading.requests import MarketOrderRequest

    return MarketOrderRequest(symbol=symbol, qty=qty, side=side, time_in_force="day")


def limit(qty: float, price: float, side: str = "buy", symbol: str = "SPY") -> Any:
    from alpaca.trading.requests import LimitOrderRequest

    return LimitOrderRequest(symbol=symbol, qty=qty, side=side, time_in_force="day", limit_price=price)


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


def backtest(tmp_path: Path, lines: list[dict], plan: Plan, background: bool = False) -> Bot:
    """The script, in this process, replaying these lines through a Bot with this plan."""
    recording = tmp_path / "recording.jsonl"
    recording.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    bot = Bot(plan, background)
    assert ws.main(["--replay", str(recording), "--quiet"], handlers=bot.handlers) == 0
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


def test_an_order_for_a_symbol_with_no_price_yet_is_refused_and_the_run_goes_on(tmp_path, caplog):
    bot = backtest(tmp_path, [trade(0, 10.0, 100), trade(1, 10.1, 100), trade(2, 20.0, 100, "TSLA")],
                   {1: lambda client: client.submit_order(market(1, symbol="TSLA"))})
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


QUOTES = [quote(second, 600 + second / 100, 100, 600.1 + second / 100, 25 + second) for second in range(12)]
PLAN: Plan = {2: lambda client: client.submit_order(market(80)),
              5: lambda client: client.submit_order(limit(30, 600.14)),
              7: lambda client: client.submit_order(market(50, "sell"))}


def test_two_runs_and_an_order_placed_in_the_background_give_the_same_updates_at_the_same_places(tmp_path):
    first, again = backtest(tmp_path, QUOTES, PLAN), backtest(tmp_path, QUOTES, PLAN)
    background = backtest(tmp_path, QUOTES, PLAN, background=True)
    assert len(filled(first)) >= 4
    assert first.seen == again.seen == background.seen


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
    assert fills(orders_, message, quoted=True, traded=False) == [("a", 1.1, 30), ("b", 1.1, 10)]
    before = {**message, "t": datetime(2025, 10, 31, 15, tzinfo=timezone.utc), "as": 1}  # one round lot then
    assert fills(orders_, before, quoted=True, traded=False) == [("a", 1.1, 30), ("b", 1.1, 30)]


# -- the script ---------------------------------------------------------------------------------


def test_the_order_example_of_docs_handlers_pasted_runs_on_the_shipped_recording_and_its_fill_prints(copy_script):
    number = next(number for number, (*_, code) in enumerate(EXAMPLES) if "submit_order" in code)
    folder = copy_script()
    for handlers, code in pasted_with_what_it_needs(number + 1):  # the order, and its fills printed
        paste(folder / "websocket_stream.py", handlers, code)
    done = subprocess.run([sys.executable, "websocket_stream.py", "--replay", str(SESSION)], cwd=folder,
                          capture_output=True, text=True, env=NO_KEYS, timeout=30)
    assert done.returncode == 0, done.stderr
    assert "buying 1 TSLA after a block of 48800" in done.stdout
    assert "filled: bought 1 TSLA at 350.28" in done.stdout and "position in TSLA: 1" in done.stdout
    assert re.search(r"backtest: orders 1, fills 1, open at the end 0\n  TSLA: realized \+0.00, unrealized -0.18, "
                     r"holding 1\n  equity 99,999.82 \(-0.18\); largest drawdown 0.18 \(0.00%\)\n"
                     r"  buy and hold TSLA: equity 100,031.43 \(\+31.43\)$", done.stderr.rstrip()), done.stderr
    assert "warning" not in done.stderr and max(map(len, done.stderr.splitlines())) <= 80


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
