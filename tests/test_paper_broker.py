"""The local server's paper broker (#27): alpaca-py's TradingClient and TradingStream,
unmodified, place, read and cancel orders and get their fills; trading_client() points a
handler's orders where the run trades; a handler that calls the blocking submit_order without
in_background() still gets its order placed and filled."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, cast

import pytest
from conftest import FAKE_KEY, FAKE_SECRET, KEYS, POSIX_ONLY, ROOT, Script, script_env, supervised, until, within

from alpaca_stream import orders
from alpaca_stream.cli import CommandLine
from alpaca_stream.keys import Keys
from alpaca_stream.options import settings_from
from alpaca_stream.orders import PAPER_CASH
from alpaca_stream.records import Trade, TradeUpdate
from alpaca_stream.server import AlpacaStreamServer
from alpaca_stream.server.broker import PART
from alpaca_stream.session import Session
from alpaca_stream.sources.demo import Demo, DemoStream, DemoTradingUpdates
from alpaca_stream.testing import run_handlers


def market_order(symbol: str, qty: float, side: str = "buy") -> Any:
    from alpaca.trading.requests import MarketOrderRequest

    return MarketOrderRequest(symbol=symbol, qty=qty, side=side, time_in_force="day")


def limit_order(symbol: str, qty: float, limit_price: float, side: str = "buy") -> Any:
    from alpaca.trading.requests import LimitOrderRequest

    return LimitOrderRequest(symbol=symbol, qty=qty, side=side, time_in_force="day", limit_price=limit_price)


@asynccontextmanager
async def paper_broker(**prices: float) -> AsyncIterator[tuple[AlpacaStreamServer, Any]]:
    """A local server whose prices stay as given (it streams no market data), and alpaca-py's
    TradingClient pointed at its paper broker (its answers are alpaca-py's models)."""
    from alpaca.trading.client import TradingClient

    async with AlpacaStreamServer(rate=None, keys=(FAKE_KEY, FAKE_SECRET)) as server:
        server.prices.update(prices)
        yield server, TradingClient(FAKE_KEY, FAKE_SECRET, url_override=server.trading_url)


def test_alpaca_pys_client_places_a_market_order_that_fills_at_the_price_in_parts_and_its_stream_gets_each():
    from alpaca.trading.stream import TradingStream

    got: list[Any] = []

    async def keep(update: Any) -> None:
        got.append(update)

    async def scenario() -> None:
        async with paper_broker(SPY=200.25) as (server, client):
            # The stream through the broker's URL, as a trading API's: its /stream.
            stream = TradingStream(FAKE_KEY, FAKE_SECRET,
                                   url_override=server.trading_url.replace("http", "ws") + "/stream")
            stream.subscribe_trade_updates(keep)
            running = asyncio.create_task(stream._run_forever())
            try:
                await until(lambda: server.account.listening, "alpaca-py listening")
                order = await asyncio.to_thread(client.submit_order, market_order("SPY", 2 * PART + 50))
                assert order.status == "new" and order.symbol == "SPY" and order.qty == str(2 * PART + 50)
                await until(lambda: got and got[-1].event == "fill", "the fill")
                filled = await asyncio.to_thread(client.get_order_by_id, order.id)
                positions = await asyncio.to_thread(client.get_all_positions)
                spy = await asyncio.to_thread(client.get_open_position, "SPY")
                account = await asyncio.to_thread(client.get_account)
            finally:
                await stream.stop_ws()
                for listener in list(server.account.listening):  # else alpaca-py waits 5 s for a frame
                    listener.transport.abort()
                await asyncio.wait_for(running, 10)
            assert [update.event for update in got] == ["new", "partial_fill", "partial_fill", "fill"]
            assert [update.qty for update in got[1:]] == [PART, PART, 50]
            assert [update.position_qty for update in got[1:]] == [PART, 2 * PART, 2 * PART + 50]
            assert {update.price for update in got[1:]} == {200.25}
            assert all(update.order.id == order.id for update in got)
            assert (filled.status, filled.filled_qty, filled.filled_avg_price) == ("filled", "250", "200.25")
            assert [(position.symbol, position.qty) for position in positions] == [("SPY", "250")]
            assert (spy.avg_entry_price, spy.side, spy.cost_basis) == ("200.25", "long", "50062.5")
            assert float(account.cash) == pytest.approx(PAPER_CASH - 250 * 200.25)

    within(scenario(), 30)


TS_SDK_TRADE_UPDATES = ROOT / "tests" / "js" / "ts_sdk_trade_updates.js"


@pytest.mark.skipif(shutil.which("node") is None or not (TS_SDK_TRADE_UPDATES.parent / "node_modules").is_dir(),
                    reason="Alpaca's TypeScript SDK is not installed: npm install --prefix tests/js")
def test_alpacas_typescript_sdk_gets_the_updates_of_an_order_placed_with_alpaca_py_through_the_brokers_url():
    updates: list[dict] = []

    async def scenario() -> None:
        async with paper_broker(SPY=200.0) as (server, client):
            stream_url = server.trading_url.replace("http", "ws") + "/stream"
            node = await asyncio.create_subprocess_exec(
                "node", str(TS_SDK_TRADE_UPDATES), stream_url, "3", env=script_env(),
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            try:
                assert node.stdout is not None
                assert await asyncio.wait_for(node.stdout.readline(), 15) == b"listening\n"
                order = await asyncio.to_thread(client.submit_order, market_order("SPY", PART + 50))
                out, err = await asyncio.wait_for(node.communicate(), 15)
            finally:
                if node.returncode is None:
                    node.kill()
                    await node.wait()
            assert node.returncode == 0, err
            updates.extend(json.loads(line) for line in out.decode().splitlines())
            assert all(update["order"]["id"] == str(order.id) for update in updates)

    within(scenario(), 30)
    assert [(u["event"], u.get("qty"), u.get("positionQty")) for u in updates] == [
        ("new", None, None), ("partial_fill", "100", "100"), ("fill", "50", "150")]


def test_a_limit_order_fills_once_the_price_crosses_it_and_an_open_one_is_cancelled():
    from alpaca.common.exceptions import APIError

    async def scenario() -> None:
        async with paper_broker(TSLA=350.0) as (server, client):
            waiting = await asyncio.to_thread(client.submit_order, limit_order("TSLA", 10, 349.5))
            never = await asyncio.to_thread(client.submit_order, limit_order("TSLA", 5, 300.0))
            await asyncio.sleep(0.5)  # the broker looks at the orders every 0.2 s: above the limit, no fill
            assert server.account.orders[str(waiting.id)]["status"] == "new"
            server.prices["TSLA"] = 349.4  # crosses the first limit, not the second
            await until(lambda: len(server.account.updates) == 3, "the fill")
            assert [update["event"] for update in server.account.updates] == ["new", "new", "fill"]
            assert server.account.orders[str(waiting.id)]["status"] == "filled"
            assert server.account.updates[-1]["price"] == "349.4"
            await asyncio.to_thread(client.cancel_order_by_id, never.id)
            cancelled = await asyncio.to_thread(client.get_order_by_id, never.id)
            assert cancelled.status == "canceled" and cancelled.canceled_at is not None
            assert server.account.updates[-1]["event"] == "canceled"
            with pytest.raises(APIError) as again:  # cancelled already
                await asyncio.to_thread(client.cancel_order_by_id, never.id)
            assert again.value.status_code == 422

    within(scenario(), 30)


def test_a_pairs_position_closed_is_sold_whole_at_the_price_and_the_clock_says_the_made_up_market_is_open():
    async def scenario() -> None:
        async with paper_broker(**{"BTC/USD": 90_000.0}) as (server, client):
            await asyncio.to_thread(client.submit_order, market_order("BTC/USD", 0.5))
            await until(lambda: len(server.account.updates) == 2, "the fill")
            server.prices["BTC/USD"] = 91_000.0
            closing = await asyncio.to_thread(client.close_position, "BTCUSD")  # as Alpaca names its position
            assert (closing.side, closing.qty, closing.symbol) == ("sell", "0.5", "BTC/USD")
            await until(lambda: len(server.account.updates) == 4, "its fill")
            assert await asyncio.to_thread(client.get_all_positions) == []
            account = await asyncio.to_thread(client.get_account)
            assert float(account.cash) == pytest.approx(PAPER_CASH + 0.5 * 1_000)  # bought at 90,000, sold at 91,000
            assert (await asyncio.to_thread(client.get_clock)).is_open

    within(scenario(), 30)


def test_the_broker_refuses_what_alpaca_refuses_with_its_status_and_message():
    from alpaca.common.exceptions import APIError
    from alpaca.trading.client import TradingClient
    from alpaca.trading.requests import LimitOrderRequest, StopOrderRequest

    async def scenario() -> None:
        async with paper_broker(SPY=600.0) as (server, client):

            async def refusal(call: Any, *args: Any) -> tuple[int, str]:
                with pytest.raises(APIError) as refused:
                    await asyncio.to_thread(call, *args)
                return refused.value.status_code, str(refused.value)

            assert await refusal(client.submit_order, market_order("SPY", 1000)) == (
                403, '{"code": 40310000, "message": "insufficient buying power"}')
            assert await refusal(client.submit_order, market_order("SPY", 1, side="sell")) == (
                403, '{"code": 40310000, "message": "insufficient qty available for order '
                     '(requested: 1, available: 0)"}')
            stop = StopOrderRequest(symbol="SPY", qty=1, side="buy", time_in_force="day", stop_price=610)
            status, message = await refusal(client.submit_order, stop)
            assert status == 422 and "market and limit orders, not stop" in message
            fraction = LimitOrderRequest(symbol="SPY", qty=0.5, side="buy", time_in_force="day", limit_price=600)
            assert await refusal(client.submit_order, fraction) == (
                422, '{"code": 42210000, "message": "fractional orders must be market orders"}')
            wrong: Any = TradingClient("FAKE-OTHER-KEY-0001", FAKE_SECRET, url_override=server.trading_url)
            assert (await refusal(wrong.get_account))[0] == 401
            assert (await refusal(client.get_order_by_id, "00000000-0000-0000-0000-000000000000"))[0] == 404
            assert (await refusal(client.get_open_position, "AAPL"))[0] == 404
            assert await refusal(client.get_asset, "SPY") == (
                404, '{"code": 40410000, "message": "the local broker does not serve GET /v2/assets/SPY"}')
            assert server.account.orders == {}  # nothing placed by any of them
            # Every open order cancelled at once: 207, a status for each.
            first = await asyncio.to_thread(client.submit_order, limit_order("SPY", 1, 500.0))
            second = await asyncio.to_thread(client.submit_order, limit_order("SPY", 2, 501.0))
            cancelled = await asyncio.to_thread(client.cancel_orders)
            assert sorted((str(answer.id), answer.status) for answer in cancelled) == sorted(
                [(str(first.id), 200), (str(second.id), 200)])
            assert await asyncio.to_thread(client.get_orders) == []  # none open

    within(scenario(), 30)


def test_the_demos_broker_fills_a_notional_buy_for_as_many_shares_as_its_dollars_buy_at_the_price():
    from alpaca.trading.requests import MarketOrderRequest

    async def scenario() -> None:
        async with paper_broker(SPY=400.0) as (server, client):
            notional = MarketOrderRequest(symbol="SPY", notional=1000, side="buy", time_in_force="day")
            order = await asyncio.to_thread(client.submit_order, notional)
            assert (order.notional, order.qty) == ("1000", None)  # its qty known as it fills, as Alpaca's
            await until(lambda: len(server.account.updates) == 2, "the fill")
            filled = await asyncio.to_thread(client.get_order_by_id, order.id)
            assert (filled.status, filled.filled_qty, filled.filled_avg_price) == ("filled", "2.5", "400")
            assert float((await asyncio.to_thread(client.get_account)).cash) == PAPER_CASH - 1000

    within(scenario(), 30)


def test_trading_client_points_at_the_runs_account_paper_live_or_another_and_outside_a_run_says_why(caplog):
    from alpaca.trading.client import TradingClient

    caplog.set_level(logging.INFO, logger="alpaca_stream")

    for argv, url in ((["--trade-updates"], "https://paper-api.alpaca.markets"),
                      (["--trade-updates", "--live"], "https://api.alpaca.markets"),
                      (["--trade-updates", "--trading-url", "http://127.0.0.1:9"], "http://127.0.0.1:9"),
                      (["SPY"], "https://paper-api.alpaca.markets")):
        run = CommandLine(argv)
        run.settings = settings_from(run.options)
        run.streams(KEYS)
        client = orders.trading_client()
        assert isinstance(client, TradingClient) and client._base_url == url, argv
        assert (client._api_key, client._secret_key) == (FAKE_KEY, FAKE_SECRET)
        assert orders.trading_client() is client  # one client for the run
    said = [record.getMessage() for record in caplog.records if "orders go to" in record.getMessage()]
    assert said == ["trading_client()'s orders go to\nhttps://paper-api.alpaca.markets (--trading-url for another)",
                    "trading_client()'s orders go to\nhttps://api.alpaca.markets: the LIVE account, real money",
                    "trading_client()'s orders go to\nhttp://127.0.0.1:9",
                    "trading_client()'s orders go to\nhttps://paper-api.alpaca.markets (--trading-url for another)"]
    assert [record.levelname for record in caplog.records if "LIVE" in record.getMessage()] == ["WARNING"]
    orders.account.url = orders.account.keys = orders.account.client = None  # no run
    with pytest.raises(RuntimeError, match="this run has no account to trade in"):
        orders.trading_client()


def test_run_handlers_gives_trading_client_the_tests_own_client_and_waits_for_the_order():
    placed: list[Any] = []

    class NotedOrders:  # stands in for TradingClient in a test: notes the orders
        def submit_order(self, order: Any) -> None:
            placed.append(order)

    async def on_trade(trade: Trade) -> None:
        if trade.size >= 10_000:
            client: Any = orders.trading_client()  # the test's own, here
            await asyncio.to_thread(client.submit_order, ("buy", trade.symbol))

    block = {"type": "trade", "symbol": "SPY", "price": 600.5, "size": 10_000,
             "timestamp": "2026-12-05T15:00:00+00:00", "exchange": "V", "id": 1}
    run_handlers([{**block, "size": 100}, block], {"trade": on_trade}, trading=NotedOrders())
    assert placed == [("buy", "SPY")]


def test_a_stopped_run_gives_an_order_on_its_way_its_answer_before_the_broker_closes(monkeypatch):
    # Stopped just after a handler sent an order (the README's example, stopped at its line):
    # its request had no answer, the demo's broker having closed first (a CI dry run saw it).
    from alpaca_stream import handlers

    monkeypatch.setattr(handlers, "BACKGROUND_GRACE", 0.5)
    done: list[str] = []

    async def answered(after: float) -> None:
        await asyncio.sleep(after)
        done.append(f"{after}")

    async def scenario() -> None:
        handlers.in_background(answered(0.1))
        handlers.in_background(answered(30))  # still waiting after the grace: cancelled at exit
        started = asyncio.get_running_loop().time()
        await handlers.background_settled()
        assert asyncio.get_running_loop().time() - started < 5
        for task in list(handlers.background_tasks):
            task.cancel()

    within(scenario())
    assert done == ["0.1"]


# The script with a handler of its own, whatever the student's are: on the first trade it
# sends a request that takes 1 s to leave, and says so; then that the request was answered.
SLOW_ORDER_BOT = """import asyncio, sys, time
import websocket_stream
from alpaca_stream import in_background, trading_client

sent = []


def slow_order():
    time.sleep(1)  # still on its way when the run is stopped
    trading_client().get_account()
    print("answered", flush=True)


async def on_trade(trade):
    if not sent:
        sent.append(trade.symbol)
        print("sent", flush=True)
        in_background(asyncio.to_thread(slow_order))


async def nothing(message):
    pass


sys.exit(websocket_stream.main(handlers={**dict.fromkeys(websocket_stream.HANDLERS, nothing), "trade": on_trade}))
"""


@POSIX_ONLY
def test_a_run_stopped_while_an_order_is_on_its_way_keeps_the_demos_broker_until_it_is_answered(copy_script):
    bot = copy_script() / "slow_order_bot.py"
    bot.write_text(SLOW_ORDER_BOT, encoding="utf-8")
    script = Script(subprocess.Popen([sys.executable, str(bot), "--demo"], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True,
                                     env=script_env(APCA_API_KEY_ID=None, APCA_API_SECRET_KEY=None)))
    try:
        script.wait_for(lambda: "sent" in script.out_lines, what="the order sent")
        assert script.stop(signal.SIGINT)[0] == 0
    finally:
        script.kill()
    assert "answered" in script.out_lines, script.stderr  # before, the broker had closed: ConnectionError
    assert "warning" not in script.stderr


def test_a_failing_order_update_handler_is_told_with_its_orders_symbol_and_nothing_false(caplog):
    async def on_trade_update(update: TradeUpdate) -> None:
        _ = update.order.symbl  # type: ignore[attr-defined]  # a typo

    fill = {"type": "trade_update", "event": "fill", "timestamp": "2026-12-05T15:00:00.123456789Z", "price": 600.5,
            "qty": 1, "position_qty": 1, "order": {"id": "61e69015-8549-4bfd-b9c3-01e75843f47d", "symbol": "SPY"}}
    session = run_handlers([fill], {"trade_update": on_trade_update}, keep_going=True)
    assert session.failures == {"on_trade_update": 1}
    told = [record.getMessage() for record in caplog.records if "raised" in record.getMessage()]
    assert told == ["on_trade_update raised AttributeError on a trade_update of SPY:\n'Order' object has no "
                    "attribute 'symbl'\n(-v shows where)"]  # before, "of ?" and "(its timestamp is not a time)"


def test_a_handler_that_calls_the_blocking_submit_order_directly_gets_its_fill_and_the_stream_goes_on():
    # The mistake the README warns of: alpaca-py's blocking call in the handler, not in
    # in_background(). The broker is on threads of its own, so it answers while the loop waits.
    trades: list[Trade] = []
    updates: list[TradeUpdate] = []
    took: list[float] = []
    placed: list[Any] = []

    demo = Demo()

    async def on_trade(trade: Trade) -> None:
        trades.append(trade)
        # Once the order updates stream too: an update sent before that is not sent again.
        if len(trades) >= 5 and not placed and demo.server.account.listening:
            started = asyncio.get_running_loop().time()
            placed.append(orders.trading_client().submit_order(market_order(trade.symbol, 3)))  # blocks the loop
            took.append(asyncio.get_running_loop().time() - started)

    async def on_trade_update(update: TradeUpdate) -> None:
        updates.append(update)

    async def scenario() -> None:
        async with DemoStream(["SPY"], ["trades"], demo=demo) as stocks, DemoTradingUpdates(demo=demo) as updating, \
                supervised([stocks, updating], {"trade": on_trade, "trade_update": on_trade_update}, Session()):
            await until(lambda: placed and any(
                update.event == "fill" and update.order.id == placed[0].id for update in updates), "the fill")
            after_fill = len(trades)
            await until(lambda: len(trades) >= after_fill + 5, "trades after the fill")

    orders.trade_at("http://127.0.0.1:9", Keys("FAKE-UNUSED", "FAKE-UNUSED", "the tests"))  # the demo's own wins
    within(scenario(), 30)
    assert took and took[0] < 5, took  # answered while the loop was held
    # Its updates, and no other order's but the demo's made-up ones, which stop once a bot trades.
    mine = [update for update in updates if update.order.id == placed[0].id]
    symbol = placed[0].symbol
    assert [(update.event, update.order.symbol, update.qty) for update in mine] == [
        ("new", symbol, None), ("fill", symbol, 3.0)]
    assert cast(Any, mine[-1]).order.status == "filled"
