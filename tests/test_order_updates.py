"""The account's order updates (#26): the local server plays the trading API's side, its stream of
trade updates at /stream and the REST reads of orders, for alpaca-py's own TradingStream and
TradingClient, unmodified, and for a raw client."""

from __future__ import annotations

import asyncio
import json
from typing import Any, cast

import pytest
from conftest import FAKE_KEY, FAKE_SECRET, until, within
from websockets.asyncio.client import connect

from alpaca_stream.server import AlpacaStreamServer


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
