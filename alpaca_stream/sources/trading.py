"""The account's order updates, from the trading API's stream (wss://paper-api.alpaca.markets/
stream, or the live API's): its own connection and reconnect wrapper, beside the market data's
in the same event loop. Its protocol is not the market data's (no greeting; JSON messages as
{"stream": ..., "data": ...}; a refusal is an answer, not a code), so the websocket is ours, not
alpaca-py's TradingStream, which owns its loop and drops an update its model cannot read.

The stream sends nothing again: an order that filled while the connection was down is found
with the REST API (GET /v2/orders) when it is back, and handed over marked recovered, once."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import urllib.request
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from urllib.parse import urlencode

import websockets
from websockets.asyncio.client import ClientConnection, connect

from alpaca_stream.channels import STATUS_OF_EVENT, TRADING_PATH
from alpaca_stream.connection import (
    CLOSE_TIMEOUT,
    CONNECT_TIMEOUT,
    PING_INTERVAL,
    PING_TIMEOUT,
    http_status,
    why_not_connected,
)
from alpaca_stream.errors import TRADING_UNAUTHORIZED, AlpacaRefused, CannotConnect, ConfigError
from alpaca_stream.handlers import Route, deliver
from alpaca_stream.keys import Keys
from alpaca_stream.orders import PAPER_API, is_live
from alpaca_stream.reconnect import keep_connected
from alpaca_stream.records import TRADING_TYPES, RecordType
from alpaca_stream.session import Session
from alpaca_stream.subscriptions import Subscriptions
from alpaca_stream.times import rfc3339

log = logging.getLogger("alpaca_stream")

RECOVER_LIMIT = 500  # the most orders one REST read gives: the newest, to find those that changed
EVENT_OF_STATUS = {status: event for event, status in STATUS_OF_EVENT.items()}  # for a recovered order
RECOVER_MARGIN = 60.0  # seconds before the loss too: an update in flight as it went was lost with it


def decoded(frame: str | bytes) -> object:
    """A frame of the trading stream: JSON in a binary (or text) frame; None if it is not."""
    try:
        return json.loads(frame)
    except ValueError:
        log.debug("skipped a trading frame that is not JSON: %r", frame[:80])
        return None


def is_listening(message: object) -> bool:
    """Whether this is the answer to listen."""
    return isinstance(message, dict) and message.get("stream") == "listening"


def stream_url(base: str) -> str:
    """The trading API's stream at its base URL: https://HOST -> wss://HOST/stream."""
    return "ws" + base.rstrip("/").removeprefix("http") + TRADING_PATH


class Orders:
    """What this run has handed over of each order: its last state (status, filled quantity),
    and what the recovery after a reconnect handed over of an order (its event and state), until
    the stream catches up with it. Every update of the stream is handed over, one that leaves its
    order as it was too (order_cancel_rejected, order_replace_rejected, an event Alpaca adds),
    but the stream's late news of an order recovered: the same event and state, or an older
    state (less filled), which would leave the handler with the order as it was before."""

    def __init__(self) -> None:
        self.states: dict[str, tuple[str, str]] = {}  # order id -> (status, filled_qty) handed over
        self.recovered: dict[str, tuple[str, tuple[str, str]]] = {}  # order id -> (event, state)

    def new(self, update: dict) -> bool:
        """Whether this update is still to be handed over; noted if so."""
        order = update.get("order")
        if not isinstance(order, dict) or "id" not in order:
            return True  # a thin update: handed over as it is
        order_id, state = str(order["id"]), (str(order.get("status")), str(order.get("filled_qty")))
        event = str(update.get("event"))
        if update.get("recovered"):
            if self.states.get(order_id) == state:  # the REST API says nothing newer than what was handed over
                return False
            self.recovered[order_id] = event, state
        elif order_id in self.recovered:
            handed_event, handed_state = self.recovered[order_id]
            if float(state[1] or 0) < float(handed_state[1] or 0):  # older than what was recovered
                return False
            del self.recovered[order_id]  # the stream has caught up with the order
            if (event, state) == (handed_event, handed_state):  # the recovered update itself, late
                return False
        self.states[order_id] = state
        return True


class TradingConnection:
    """One websocket to the trading stream at base's /stream, with these keys: auth, listen to
    trade_updates, each update to its handler. After a reconnect, what changed meanwhile first."""

    market = "trading"

    def __init__(self, base: str, keys: Keys, told: set[str]) -> None:
        self.base, self.url, self.keys = base.rstrip("/"), stream_url(base), keys
        self.told = told  # the run's: "Ctrl+C to stop", once
        self.last_data = time.monotonic()
        self.silent_reconnects = 0
        self.websocket: ClientConnection | None = None
        self.orders = Orders()
        self.lost_at: datetime | None = None  # when the last connection ended; None before the first

    async def stream_once(self, routes: dict[str, Route], session: Session) -> None:
        early = await asyncio.wait_for(self.connect(), CONNECT_TIMEOUT)
        websocket = self.websocket
        assert websocket is not None
        if self.lost_at is not None:  # what changed while it was down, and a while before: once each
            await self.recover(self.lost_at - timedelta(seconds=RECOVER_MARGIN), routes, session)
        for message in early:
            await self.take(message, routes, session)
        async for frame in websocket:
            await self.take(decoded(frame), routes, session)

    async def take(self, message: object, routes: dict[str, Route], session: Session) -> None:
        """One message of the stream: an update handed over; anything else only logged."""
        if isinstance(message, dict) and message.get("stream") == "trade_updates":
            await self.hand_over(message.get("data"), routes, session)
        else:
            log.debug("trading stream: %r", message)

    async def connect(self) -> list[object]:
        """Open, log in and listen; what came before the answer to listen (Alpaca sends none:
        kept, in case) is returned, to be taken first."""
        log.debug("opening the trading stream's websocket")
        try:
            self.websocket = await connect(self.url, ping_interval=PING_INTERVAL, ping_timeout=PING_TIMEOUT,
                                           close_timeout=CLOSE_TIMEOUT, max_size=None)
        except OSError as error:
            raise CannotConnect(why_not_connected(error, self.url)) from error
        except websockets.InvalidHandshake as error:
            if http_status(error) == 404:
                raise ConfigError(f"{self.url} answered HTTP 404:\nno trading stream there; "
                                  "check --trading-url") from None
            raise
        websocket = self.websocket
        await websocket.send(json.dumps({"action": "auth", "key": self.keys.key, "secret": self.keys.secret}))
        answer = json.loads(await websocket.recv())
        if (answer.get("data") or {}).get("status") != "authorized":
            raise AlpacaRefused(0, "unauthorized", advice=TRADING_UNAUTHORIZED)
        await websocket.send(json.dumps({"action": "listen", "data": {"streams": ["trade_updates"]}}))
        early: list[object] = []
        # Listening once the answer has come, not when asked: an order placed after this line
        # is logged is one whose updates this run gets.
        while not is_listening(message := decoded(await websocket.recv())):
            early.append(message)
        log.info("listening to the account's order updates%s", "" if "how to stop" in self.told else
                 "; Ctrl+C to stop")
        self.told.add("how to stop")
        return early

    async def hand_over(self, update: object, routes: dict[str, Route], session: Session) -> None:
        if not isinstance(update, dict):
            log.debug("skipped a trade update that is not an object: %r", update)
            return
        if not self.orders.new(update):
            log.debug("passed over an update handed over already: %s", update.get("event"))
            return
        update["T"] = "trade_update"
        session.order_events[str(update.get("event"))] += 1
        await deliver([update], routes, session)
        self.last_data = session.last_message

    async def recover(self, since: datetime, routes: dict[str, Route], session: Session) -> None:
        """The orders that changed since the connection was lost, each as an update marked
        recovered: the stream does not send again what it sent while we were away."""
        try:
            orders = await asyncio.to_thread(self.changed_orders, since)
        except (OSError, ValueError) as error:  # the REST API away too: the updates of then are lost
            log.warning("could not read the orders that changed while the trading\nstream was down: %s", error)
            return
        for order in orders:
            status = str(order.get("status"))
            update = {"event": EVENT_OF_STATUS.get(status, status), "order": order, "recovered": True,
                      "timestamp": order.get("updated_at")}
            if status in ("filled", "partially_filled"):  # what filled since the last update handed over
                had = self.orders.states.get(str(order.get("id")), ("", "0"))[1]
                with contextlib.suppress(ValueError, TypeError):
                    update["qty"] = float(order.get("filled_qty") or 0) - float(had)
                update["price"] = order.get("filled_avg_price")  # on average: the fills' own are not kept
            await self.hand_over(update, routes, session)

    def changed_orders(self, since: datetime) -> list[dict]:
        """The newest orders (RECOVER_LIMIT), oldest first, of those updated since then."""
        query = urlencode({"status": "all", "limit": RECOVER_LIMIT, "direction": "desc"})
        orders = read(self.base, self.keys, f"/v2/orders?{query}")
        return [order for order in reversed(orders)
                if isinstance(order, dict) and rfc3339(str(order.get("updated_at"))) >= since]

    async def close(self) -> None:
        if self.websocket is not None:
            self.lost_at = datetime.now(timezone.utc)
            await self.websocket.close()
            self.websocket = None


def read(base: str, keys: Keys, path: str) -> list[dict]:
    """What the trading API at base gives for GET path (a list): blocks, so in a thread."""
    request = urllib.request.Request(f"{base.rstrip('/')}{path}", headers={
        "APCA-API-KEY-ID": keys.key, "APCA-API-SECRET-KEY": keys.secret})
    with urllib.request.urlopen(request, timeout=CONNECT_TIMEOUT) as answer:  # noqa: S310  # our URL
        return [item for item in json.loads(answer.read()) if isinstance(item, dict)]


def positions(base: str, keys: Keys) -> list[dict]:
    """The positions the account at base holds (GET /v2/positions), as Alpaca gives them."""
    return read(base, keys, "/v2/positions")


class TradingUpdates:
    """The account's order updates from the trading API at url, its base (Alpaca's paper API
    unless given: https://HOST, its stream at /stream), logged in with keys: a source beside
    the market data's."""

    types: Mapping[str, tuple[str, RecordType]] = TRADING_TYPES
    market = "trading"

    def __init__(self, *, keys: Keys, url: str = PAPER_API) -> None:
        self.keys, self.url = keys, url
        self.subscriptions = Subscriptions(offline=True)  # nothing to subscribe to: the account's own

    async def __aenter__(self) -> TradingUpdates:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        pass

    async def run(self, routes: dict[str, Route], session: Session) -> None:
        live = is_live(self.url)
        log.log(logging.WARNING if live else logging.INFO, "connecting to %s%s", stream_url(self.url),
                ":\nthe LIVE account, real money" if live else "")
        await keep_connected(TradingConnection(self.url, self.keys, self.subscriptions.told), routes, session)
