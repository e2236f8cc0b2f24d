"""The account's order updates (#26): the local server plays the trading API's side, its stream of
trade updates at /stream and the REST reads of orders, for alpaca-py's own TradingStream and
TradingClient, unmodified, and for a raw client."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timezone
from typing import Any, cast
from uuid import UUID

import pytest
from conftest import FAKE_KEY, FAKE_SECRET, KEYS, run, script_env, supervised, until, within
from websockets.asyncio.client import connect

from alpaca_stream.outputs.terminal import format_json, format_text
from alpaca_stream.records import TradeUpdate
from alpaca_stream.server import AlpacaStreamServer
from alpaca_stream.server.trading import Account
from alpaca_stream.session import Session
from alpaca_stream.sources.trading import Orders, TradingUpdates
from alpaca_stream.testing import run_handlers


def test_alpaca_pys_own_trading_stream_gets_an_orders_updates_with_its_numbers_and_the_order():
    from alpaca.trading.stream import TradingStream

    got: list[Any] = []

    async def keep(update: Any) -> None:
        got.append(update)

    async def scenario() -> None:
        async with AlpacaStreamServer(rate=None, keys=(FAKE_KEY, FAKE_SECRET)) as server:
            stream = TradingStream(FAKE_KEY, FAKE_SECRET, url_override=server.trading_stream_url)
            stream.subscribe_trade_updates(keep)
            running = asyncio.create_task(stream._run_forever())
            try:
                await until(lambda: server.account.listening, "alpaca-py listening")
                order = server.account.place("SPY", 100, limit_price=600.5, order_type="limit")
                server.account.update("partial_fill", order["id"], price=600.5, qty=40)
                server.account.update("fill", order["id"], price=600.25, qty=60, position_qty=100)
                await until(lambda: len(got) == 3, "the three updates")
            finally:
                await stream.stop_ws()
                for client in list(server.account.listening):  # else alpaca-py waits 5 s for a frame to stop
                    client.transport.abort()
                await asyncio.wait_for(running, 10)

    within(scenario(), 30)
    assert [update.event for update in got] == ["new", "partial_fill", "fill"]
    new, partial, fill = got
    assert new.price is None and new.order.symbol == "SPY" and new.order.qty == "100"
    assert new.order.limit_price == "600.5" and new.order.status == "new"
    assert (partial.price, partial.qty, partial.order.filled_qty) == (600.5, 40, "40")
    assert partial.order.status == "partially_filled"
    assert (fill.price, fill.qty, fill.position_qty, fill.order.filled_qty) == (600.25, 60, 100, "100")
    assert fill.order.status == "filled" and float(fill.order.filled_avg_price) == pytest.approx(600.35)
    assert fill.execution_id and fill.order.id == new.order.id


def test_alpaca_pys_own_trading_client_reads_the_orders_and_one_order_and_is_refused_other_keys():
    from alpaca.common.exceptions import APIError
    from alpaca.trading.client import TradingClient
    from alpaca.trading.enums import QueryOrderStatus
    from alpaca.trading.models import Order
    from alpaca.trading.requests import GetOrdersRequest

    async def scenario() -> None:
        async with AlpacaStreamServer(rate=None, keys=(FAKE_KEY, FAKE_SECRET)) as server:
            account = server.account
            filled, open_one = account.place("SPY", 10), account.place("BTC/USD", 0.5, side="sell")
            account.update("fill", filled["id"], price=600.0, qty=10)
            client = TradingClient(FAKE_KEY, FAKE_SECRET, url_override=server.trading_url)
            # alpaca-py's REST client blocks: in a thread, so the server's loop answers it.
            # alpaca-py types a read as a model or raw data (raw_data=True): the model, here.
            every = cast("list[Order]", await asyncio.to_thread(client.get_orders,
                                                                GetOrdersRequest(status=QueryOrderStatus.ALL)))
            assert [str(order.id) for order in every] == [open_one["id"], filled["id"]]  # newest first
            still_open = cast("list[Order]", await asyncio.to_thread(client.get_orders))  # open, by default
            assert [order.symbol for order in still_open] == ["BTC/USD"]
            one = cast("Order", await asyncio.to_thread(client.get_order_by_id, filled["id"]))
            assert (one.status, one.filled_qty, one.filled_avg_price) == ("filled", "10", "600")
            other = TradingClient("FAKE-OTHER-KEY-0001", FAKE_SECRET, url_override=server.trading_url)
            with pytest.raises(APIError) as refused:
                await asyncio.to_thread(other.get_orders)
            assert refused.value.status_code == 401

    within(scenario(), 30)


@pytest.mark.parametrize("auth", [
    {"action": "auth", "key": FAKE_KEY, "secret": FAKE_SECRET},  # as Alpaca documents it now
    {"action": "authenticate", "data": {"key_id": FAKE_KEY, "secret_key": FAKE_SECRET}},  # as SDKs send it
])
def test_the_trading_stream_authorizes_either_form_and_answers_listen_and_refuses_wrong_keys(auth: dict):
    async def scenario() -> None:
        async with AlpacaStreamServer(rate=None, keys=(FAKE_KEY, FAKE_SECRET)) as server:
            async with connect(server.trading_stream_url) as early:  # listening before its keys
                await early.send(json.dumps({"action": "listen", "data": {"streams": ["trade_updates"]}}))
                assert json.loads(await early.recv()) == {"stream": "authorization", "data": {
                    "status": "unauthorized", "action": "listen"}}
            async with connect(server.trading_stream_url) as client:
                await client.send(json.dumps(auth))
                answer = await client.recv()
                assert isinstance(answer, bytes)  # JSON in a binary frame, as the paper API sends it
                assert json.loads(answer) == {"stream": "authorization", "data": {
                    "status": "authorized", "action": "authenticate"}}
                await client.send(json.dumps({"action": "listen", "data": {"streams": ["trade_updates"]}}))
                assert json.loads(await client.recv()) == {"stream": "listening", "data": {
                    "streams": ["trade_updates"]}}
                server.account.place("TSLA", 5)
                update = json.loads(await client.recv())
                assert update["stream"] == "trade_updates" and update["data"]["event"] == "new"
                assert update["data"]["order"]["qty"] == "5" and update["data"]["order"]["status"] == "new"
            async with connect(server.trading_stream_url) as wrong:
                await wrong.send(json.dumps({**auth, "key": "FAKE-WRONG-KEY", "data": {"key_id": "FAKE-WRONG-KEY"}}))
                assert json.loads(await wrong.recv())["data"]["status"] == "unauthorized"
                await asyncio.wait_for(wrong.wait_closed(), 5)

    within(scenario())


# -- the script's own order updates ----------------------------------------------------------------


@asynccontextmanager
async def updates_streaming(server: AlpacaStreamServer, got: list[TradeUpdate],
                            session: Session) -> AsyncIterator[asyncio.Task]:
    """The script's order updates from the server's trading API, into got, while in the block."""
    async def keep(update: TradeUpdate) -> None:
        got.append(update)

    source = TradingUpdates(keys=KEYS, url=server.trading_url)
    async with supervised([source], {"trade_update": keep}, session) as streaming:
        await until(lambda: server.account.listening, "the script listening")
        yield streaming


def test_listening_is_logged_once_the_trading_api_answered_so_an_order_placed_then_is_seen(caplog):
    got: list[TradeUpdate] = []
    placed: list[dict] = []

    class PlaceAnOrderAtTheLine(logging.Handler):  # as a test, or a user, does on reading it
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage().startswith("listening to the account's order updates"):
                placed.append(server.account.place("SPY", 1))

    async def keep(update: TradeUpdate) -> None:
        got.append(update)

    server = AlpacaStreamServer(rate=None)

    async def scenario() -> None:
        async with server, supervised([TradingUpdates(keys=KEYS, url=server.trading_url)],
                                      {"trade_update": keep}, Session()):
            await until(lambda: got, "the update of the order placed at the line")

    caplog.set_level(logging.INFO, logger="alpaca_stream")
    watch = PlaceAnOrderAtTheLine()
    logging.getLogger("alpaca_stream").addHandler(watch)
    try:
        within(scenario())
    finally:
        logging.getLogger("alpaca_stream").removeHandler(watch)
    assert [str(update.order.id) for update in got] == [order["id"] for order in placed]


def test_order_updates_reach_the_handler_with_alpaca_pys_names_and_types_an_unknown_and_a_thin_one_too():
    got: list[TradeUpdate] = []
    session = Session()

    async def scenario() -> None:
        async with AlpacaStreamServer(rate=None, keys=(FAKE_KEY, FAKE_SECRET)) as server, \
                updates_streaming(server, got, session):
            order = server.account.place("SPY", 100, order_type="limit", limit_price=600.5)
            server.account.update("fill", order["id"], price=600.25, qty=100, position_qty=100)
            for client in server.account.listening:  # what no SDK knows, and an update with little in it
                client.protocol.send_binary(json.dumps({"stream": "trade_updates", "data": {
                    "event": "margin_call_of_the_future", "order": {**order, "status": "held"},
                    "timestamp": "2026-12-05T08:00:00.123456789Z"}}).encode())
                client.protocol.send_binary(json.dumps({"stream": "trade_updates",
                                                        "data": {"event": "fill"}}).encode())
                client.send_data()
            await until(lambda: len(got) == 4, "the four updates")

    within(scenario())
    new, fill, unknown, thin = got
    assert (new.event, new.order.symbol, new.order.qty, new.order.limit_price) == ("new", "SPY", "100", "600.5")
    assert isinstance(new.order.id, UUID) and isinstance(new.order.created_at, datetime)
    assert new.price is None and new.timestamp.tzinfo is not None
    assert (fill.event, fill.price, fill.qty, fill.position_qty) == ("fill", 600.25, 100.0, 100.0)
    assert (fill.order.status, fill.order.filled_qty, fill.order.filled_avg_price) == ("filled", "100", "600.25")
    assert isinstance(fill.execution_id, UUID)
    assert unknown.event == "margin_call_of_the_future" and unknown.order.status == "held"
    assert unknown.timestamp == datetime(2026, 12, 5, 8, 0, 0, 123456, tzinfo=timezone.utc)
    assert thin.event == "fill" and thin.get("order") is None and thin.symbol == ""
    for update in got:  # each printable, within 80 columns, and as JSON
        assert all(len(line) <= 80 for line in format_text(update).split("\n")), format_text(update)
        assert json.loads(format_json(update))["type"] == "trade_update"
    assert format_text(fill).endswith("Z order       SPY   fill 100 @ 600.25; buy 100/100 at 600.50")
    assert dict(session.order_events) == {"new": 1, "fill": 2, "margin_call_of_the_future": 1}
    replayed: list[TradeUpdate] = []  # --json's line back, as --replay and run_handlers() take it

    async def keep(update: TradeUpdate) -> None:
        replayed.append(update)

    run_handlers([json.loads(format_json(update)) for update in got], {"trade_update": keep})
    assert replayed == got and isinstance(replayed[1].order.id, UUID) and replayed[1].price == 600.25


def test_an_update_that_leaves_its_order_as_it_was_reaches_the_handler_a_rejected_cancel_say():
    # A cancel or a replace that came too late leaves the order as the update before it left it:
    # only its update tells the student that the order is still there, or filled anyway.
    got: list[TradeUpdate] = []

    async def scenario() -> None:
        async with AlpacaStreamServer(rate=None, keys=(FAKE_KEY, FAKE_SECRET)) as server, \
                updates_streaming(server, got, Session()):
            account = server.account
            filled = account.place("SPY", 10)
            account.update("fill", filled["id"], price=600.0, qty=10)
            account.update("order_cancel_rejected", filled["id"])  # it filled first
            resting = account.place("TSLA", 5, order_type="limit", limit_price=300.0)
            account.update("order_replace_rejected", resting["id"])
            account.update("order_cancel_rejected", resting["id"])
            account.update("a_review_of_the_future", resting["id"])  # an event Alpaca adds, the order as it was
            await until(lambda: len(got) >= 7, "the seven updates")

    within(scenario())
    assert [(update.event, update.order.symbol, update.order.status, update.order.filled_qty) for update in got] == [
        ("new", "SPY", "new", "0"), ("fill", "SPY", "filled", "10"), ("order_cancel_rejected", "SPY", "filled", "10"),
        ("new", "TSLA", "new", "0"), ("order_replace_rejected", "TSLA", "new", "0"),
        ("order_cancel_rejected", "TSLA", "new", "0"), ("a_review_of_the_future", "TSLA", "new", "0")]
    assert not any(update.recovered for update in got)


def drop_the_stream(account: Account) -> None:
    """The network fails: every listener's connection cut, with no close."""
    for client in list(account.listening):
        client.transport.abort()


def test_an_order_filled_while_the_stream_was_down_is_recovered_once_and_its_late_update_passed_over():
    got: list[TradeUpdate] = []

    async def scenario() -> None:
        async with AlpacaStreamServer(rate=None, keys=(FAKE_KEY, FAKE_SECRET)) as server:
            account = server.account
            async with updates_streaming(server, got, Session()):
                order = account.place("SPY", 10)
                await until(lambda: len(got) == 1, "the new order's update")
                drop_the_stream(account)
                await until(lambda: not account.listening, "the stream down")
                filled = account.update("fill", order["id"], price=600.0, qty=10)  # nobody listening
                await until(lambda: account.listening and len(got) == 2, "the stream back, the fill recovered", 15)
                for client in account.listening:  # the fill's own update, late: handed over already
                    client.protocol.send_binary(json.dumps({"stream": "trade_updates", "data": filled}).encode())
                    client.send_data()
                account.update("order_cancel_rejected", order["id"])  # the same state, but news
                await until(lambda: len(got) >= 3, "the rejected cancel's update")
                drop_the_stream(account)  # and again, with nothing changed meanwhile: nothing recovered
                await until(lambda: not account.listening, "the stream down again")
                await until(lambda: account.listening, "the stream back again", 15)
                # The stream goes on. An order placed as it comes back may be recovered as well as
                # sent (the REST read follows listen): its update is handed over once, either way.
                account.place("TSLA", 5)
                await until(lambda: len(got) >= 4, "the next order's update")
                account.place("AAPL", 1)  # in the stream's order, after anything sent before it
                await until(lambda: got[-1].order.symbol == "AAPL", "the order after it")

    within(scenario(), 40)
    assert [(update.event, update.order.symbol) for update in got] == [
        ("new", "SPY"), ("fill", "SPY"), ("order_cancel_rejected", "SPY"), ("new", "TSLA"), ("new", "AAPL")]
    new, recovered, rejected = got[:3]
    assert (new.recovered, recovered.recovered, rejected.recovered) == (None, True, None)
    assert (recovered.order.status, recovered.order.filled_qty) == ("filled", "10")
    assert (recovered.qty, recovered.price, recovered.position_qty) == (10.0, 600.0, None)  # on average
    assert recovered.order.id == new.order.id == rejected.order.id


def test_the_script_streams_order_updates_beside_trades_and_wrong_keys_exit_3_and_no_trading_api_exit_2(
        make_server, start_script):
    server = make_server(rate=50, keys=(FAKE_KEY, FAKE_SECRET))
    host = server.url.rsplit("/v2/", 1)[0]
    trading = server.server.trading_url  # the paper broker's: its /stream, and the REST reads
    script = start_script("--url", host, "--trading-url", trading, "SPY", "--trades", "--trade-updates", bot=True)
    script.wait_for_stderr("listening to the account's order updates")
    script.wait_for_stderr("subscribed to trades of SPY")

    async def place() -> dict:  # in the server's own loop, which sends the update
        return server.server.account.place("SPY", 3)

    order = cast(dict, server.call(place()))
    script.wait_for(lambda: any('"trade_update"' in line for line in script.out_lines), what="the order's update")
    assert script.stop(2)[0] == 0
    update = json.loads(next(line for line in script.out_lines if '"trade_update"' in line))
    assert update["event"] == "new" and update["order"]["id"] == order["id"] and update["order"]["qty"] == "3"
    assert any('"kind": "trade"' in line for line in script.out_lines)  # the market data beside them
    assert "order updates: new 1" in script.stderr

    wrong = start_script("--url", host, "--trading-url", trading, "--trade-updates",
                         env=script_env(APCA_API_KEY_ID="FAKE-OTHER-KEY-0001"))
    assert wrong.finish() == 3
    assert wrong.err_lines[-3].endswith("Z error: The trading API refused the keys (unauthorized).")
    assert wrong.err_lines[-2:] == ["  They came from the environment. Paper and live accounts have different",
                                    "  keys: --live takes the live account's."]
    nowhere = make_server(rate=50)
    nowhere.server.endpoints.pop("/stream")  # a server with no trading stream
    missing = start_script("--trading-url", nowhere.url.rsplit("/v2/", 1)[0].replace("ws://", "http://"),
                           "--trade-updates")
    assert missing.finish() == 2 and "answered HTTP 404:" in missing.stderr and "check --trading-url" in missing.stderr
    assert "Traceback" not in wrong.stderr + missing.stderr


def test_the_demo_account_places_an_order_now_and_then_and_fills_it_with_the_position_it_makes():
    updates: list[dict] = []

    async def scenario() -> None:
        async with AlpacaStreamServer(rate=None, seed=5, orders_every=0.1) as server:
            await until(lambda: len(server.account.updates) >= 4, "two orders and their fills", 10)
            updates.extend(server.account.updates[:4])

    within(scenario())
    assert [update["event"] for update in updates] == ["new", "fill", "new", "fill"]
    held: dict[str, float] = {}  # by symbol: what the fills add up to
    for fill in updates[1::2]:
        symbol = fill["order"]["symbol"]
        held[symbol] = held.get(symbol, 0.0) + float(fill["qty"]) * (1 if fill["order"]["side"] == "buy" else -1)
        assert float(fill["position_qty"]) == held[symbol] and fill["order"]["status"] == "filled"


def test_the_demo_accounts_orders_are_of_the_stocks_it_streams_so_a_chart_has_their_prices():
    async def scenario() -> list[dict]:
        async with AlpacaStreamServer(rate=None, seed=5, orders_every=0.1) as server:
            server.prices.update({"TSLA": 350.0, "BTC/USD": 90_000.0})  # as a run of TSLA and BTC/USD makes them
            await until(lambda: len(server.account.updates) >= 6, "three orders and their fills", 10)
            return server.account.updates[:6]

    fills = run(scenario())[1::2]
    assert [(fill["order"]["symbol"], fill["price"]) for fill in fills] == [("TSLA", "350")] * 3


def test_the_streams_late_news_of_an_order_recovered_never_leaves_it_as_it_was_before():
    def update(event: str, status: str, filled: str, recovered: bool = False) -> dict:
        return {"event": event, "order": {"id": "o1", "status": status, "filled_qty": filled},
                **({"recovered": True} if recovered else {})}

    orders = Orders()
    assert orders.new(update("new", "new", "0"))
    # Filled in part, then whole, while the stream was down: the recovery says filled.
    assert orders.new(update("fill", "filled", "10", recovered=True))
    assert not orders.new(update("partial_fill", "partially_filled", "5"))  # older: it would undo the fill
    assert not orders.new(update("fill", "filled", "10"))  # the recovered one, late
    # Once the stream has caught up, an update that leaves the order as it was is handed over.
    other = Orders()
    assert other.new(update("partial_fill", "partially_filled", "5", recovered=True))
    assert other.new(update("order_cancel_rejected", "partially_filled", "5"))
    assert other.new(update("order_cancel_rejected", "partially_filled", "5"))
