"""One websocket to one of Alpaca's stream endpoints, opened with alpaca-py's own connect:
authenticate, subscribe, then hand each frame's messages on, until the connection ends.
reconnect.py opens it again after every fault. alpaca-py's private parts are used here, and
nowhere else: its _connect() (the websocket, with Alpaca's headers, and the greeting) and the
websocket it opens, _ws; everything after the greeting is done here, not by alpaca-py."""

from __future__ import annotations

import asyncio
import importlib.metadata
import inspect
import logging
import socket
import ssl
import sys
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import msgpack
import websockets

from alpaca_stream.calendar import market_open
from alpaca_stream.errors import PERMANENT_HTTP, CannotConnect, ConfigError, NoData
from alpaca_stream.handlers import Route, deliver
from alpaca_stream.keys import Keys
from alpaca_stream.session import Session
from alpaca_stream.subscriptions import Subscriptions

if TYPE_CHECKING:
    from alpaca.data.live import CryptoDataStream, NewsDataStream, OptionDataStream, StockDataStream

log = logging.getLogger("alpaca_stream")

# alpaca-py waits 180 s for a pong; a dead connection should be noticed in 20 s at most.
PING_INTERVAL = 10.0
PING_TIMEOUT = 10.0
# Bounds closing the websocket. With the websockets default (10 s), alpaca-py's own run() took
# 10.2 s to exit after Ctrl+C; with 0.15 s, 0.3 s (both measured against the local server).
CLOSE_TIMEOUT = 0.15
CONNECT_TIMEOUT = 15.0  # connect, greeting, auth and subscribe; Alpaca itself allows 10 s for auth
QUIET_AFTER = 60.0  # seconds connected without a message before saying the market may be closed


def data_stream(market: str) -> type[StockDataStream | CryptoDataStream | OptionDataStream | NewsDataStream]:
    """alpaca-py's stream class for a market, "stocks", "crypto", "options" or "news" (each is its
    DataStream, with the same _connect), imported when a connection needs it, not with this
    module: alpaca-py imports pandas, 1.2 s of CPU (measured), which --help, --replay, --source
    and a bad option need not wait for."""
    from alpaca.data.live import CryptoDataStream, NewsDataStream, OptionDataStream, StockDataStream

    return {"stocks": StockDataStream, "crypto": CryptoDataStream, "options": OptionDataStream,
            "news": NewsDataStream}[market]


def check_alpaca_py() -> None:
    """Exit status 2, not a traceback, when the installed alpaca-py lacks what this uses."""
    try:
        version = importlib.metadata.version("alpaca-py")
    except importlib.metadata.PackageNotFoundError:
        version = "none"
    problem = None
    try:
        stream_class = data_stream("stocks")
    except ImportError as error:
        # Its name if a module is missing; else its message (pandas names what it lacks in it).
        missing = error.name or " ".join(str(error).split())
        problem = f"it fails to import:\n{missing}"
        if "pytz" in missing:  # 0.33.1 to 0.43.2 import pytz, and only pandas 2 (Python 3.10) brings it
            problem += "\n(alpaca-py 0.33.1 to 0.43.2 need it: pip install pytz)"
    else:
        parameters = inspect.signature(stream_class).parameters
        needed = [name for name in ("_connect", "close") if not hasattr(stream_class, name)]
        needed += [name for name in ("url_override", "websocket_params") if name not in parameters]
        if needed:
            problem = f"its StockDataStream has no {', '.join(needed)}"
    if problem:
        raise ConfigError(f"this script needs alpaca-py 0.33.1 to 0.44, you have {version}:\n"
                          f"{problem}.\nInstall the tested one: pip install -r requirements.txt")


class Connection:
    """One websocket to the endpoint at url, with these keys and subscriptions; stream() runs it
    once. market: "stocks", "crypto", "options" or "news", the endpoint's. data_timeout: seconds without data (in
    market hours, unless market_hours is False: at any hour) before the connection is replaced,
    as it may have gone mute; 0: never."""

    def __init__(self, url: str, keys: Keys, subscriptions: Subscriptions, *, market: str = "stocks",
                 data_timeout: float = 0.0, market_hours: bool = True) -> None:
        self.url = url
        self.market = market
        self.subscriptions = subscriptions
        self.data_timeout = data_timeout
        self.market_hours = market_hours
        # max_size None: a frame of any size is read whole. Alpaca documents no limit, and a frame
        # over websockets' default (1 MiB) would close the connection, and come again after each
        # reconnect. Alpaca's Go SDK sets no limit either ("news messages can be huge").
        self.stream = data_stream(market)(keys.key, keys.secret, url_override=url, websocket_params={
            "ping_interval": PING_INTERVAL, "ping_timeout": PING_TIMEOUT,
            "close_timeout": CLOSE_TIMEOUT, "max_queue": 1024, "max_size": None})
        self.last_data = time.monotonic()  # when this endpoint last brought market data
        self.silent_reconnects = 0  # in a row, for want of data (--data-timeout): each waits longer

    async def stream_once(self, routes: dict[str, Route], session: Session) -> None:
        """One connection: deliver its messages until it ends. Returns when the server closes it.

        This replaces alpaca-py's own loop (_consume and _run_forever in its websocket.py), which
        builds a pydantic model for every message, only logs the error frames (so wrong keys are
        retried for ever), and loses the rest of a frame when a handler raises.
        """
        await asyncio.wait_for(self.connect(), CONNECT_TIMEOUT)
        mute: list[NoData] = []  # watch_quiet() puts one here before it closes a mute stream
        quiet_watch = asyncio.create_task(self.watch_quiet(time.monotonic(), mute))
        subscriptions = self.subscriptions
        try:
            async for frame in self.websocket:
                try:
                    messages = msgpack.unpackb(frame, timestamp=3)  # 3: timestamps as UTC datetimes
                except (ValueError, TypeError):  # msgpack's errors are ValueErrors; text frames TypeErrors
                    log.debug("skipped a frame that is not msgpack: %r", frame[:80])
                    continue
                if not isinstance(messages, list):
                    log.debug("skipped a frame that is not a list: %r", messages)
                    continue
                if subscriptions.relay:
                    messages = subscriptions.relayed(frame, messages)
                if await deliver(messages, routes, session, subscriptions.control):
                    self.last_data = session.last_message
                sys.stdout.flush()  # once a frame: piped output stays real time without a flush a line
        finally:
            quiet_watch.cancel()
        if mute:
            raise mute[0]  # the connection was closed for want of data: that ended the loop

    async def connect(self) -> None:
        """Open the websocket with alpaca-py's own step, authenticate, then subscribe."""
        log.debug("opening the websocket")  # to self.url, which the source has logged
        try:
            await self.stream._connect()  # the websocket, with Alpaca's headers; then the greeting
        except OSError as error:
            raise CannotConnect(why_not_connected(error, self.url)) from error
        except websockets.InvalidHandshake as error:
            status = http_status(error)
            if status in PERMANENT_HTTP:
                raise ConfigError(f"{self.url} refused the websocket:\nHTTP {status} "
                                  f"({PERMANENT_HTTP[status]}): check the URL.") from None
            raise
        log.debug("connected, and greeted; sending the keys")
        websocket = self.websocket
        # Our own auth, not alpaca-py's _auth(), which raises the message of an error and drops
        # its code: the code decides between retrying and giving up.
        await websocket.send(msgpack.packb({"action": "auth", "key": self.stream._api_key,
                                            "secret": self.stream._secret_key}))
        for message in msgpack.unpackb(await websocket.recv()):
            self.subscriptions.control(message)  # an error raises AlpacaRefused, with Alpaca's code
        # Our own subscribe message, not alpaca-py's subscribe_trades() & co.: those register a
        # handler for alpaca-py's run loop, which stream_once() replaces.
        request = self.subscriptions.first_request(websocket)  # the options', subscribe()'s, the clients'
        log.debug("subscribing: %s", request)  # "authenticated" was Alpaca's answer, logged
        await websocket.send(msgpack.packb(request))

    @property
    def websocket(self) -> Any:
        """The websocket alpaca-py's _connect() opened (websockets' legacy client; alpaca-py
        types it as None)."""
        return self.stream._ws

    async def close(self) -> None:
        self.subscriptions.disconnected()
        await self.stream.close()

    async def watch_quiet(self, connected_at: float, mute: list[NoData]) -> None:
        """While connected and no data comes: one line per quiet spell, since that is normal when
        the market is closed; and in market hours, after data_timeout seconds (each time in a row
        twice as long), a NoData in `mute` and the connection closed, since the stream went mute."""
        timeout = self.data_timeout * 2 ** min(self.silent_reconnects, 4)
        opened_at = None if self.market_hours else connected_at  # the market, as seen while connected
        warned_for = None  # the last_data of the spell already warned about
        while True:
            now = time.monotonic()
            if self.market_hours:
                opened_at = (opened_at or now) if market_open() else None
            quiet = now - max(self.last_data, connected_at)
            if quiet >= QUIET_AFTER and warned_for != self.last_data and self.market != "news":  # news: when it comes
                if self.market == "crypto":  # it never closes
                    log.warning("connected to the crypto stream, but no data for %.0f s:\nare the pairs "
                                "written as Alpaca writes them (BTC/USD)?", quiet)
                elif self.market == "options":  # a contract can go an hour without a trade
                    log.warning("connected to the options stream, but no data for %.0f s:\nthe market may "
                                "be closed (regular hours 9:30-16:00 New York time),\nor the contracts "
                                "not traded now", quiet)
                else:
                    log.warning("connected, but no data for %.0f s: the market may be closed\n(regular hours "
                                "9:30-16:00 New York time); a crypto pair (BTC/USD)\nor --test-stream has data "
                                "any time", quiet)
                warned_for = self.last_data
            if timeout and opened_at is not None and now - max(self.last_data, opened_at) >= timeout:
                when = " in market hours" if self.market_hours else ""
                mute.append(NoData(f"no market data for {timeout:.0f} s{when}:\nreplacing the "
                                   "connection, as it may have gone mute\n(symbols that trade rarely, or a "
                                   "holiday? --data-timeout sets the wait)"))
                await self.websocket.close()  # ends stream_once's loop
                return
            await asyncio.sleep(1.0)


def http_status(error: Exception) -> int | None:
    """The HTTP status of a refused websocket handshake: on the error itself in websockets'
    legacy client (alpaca-py's), on its response in the new one (alpaca-py issue 743)."""
    return getattr(error, "status_code", None) or getattr(getattr(error, "response", None), "status_code", None)


def why_not_connected(error: OSError, url: str) -> str:
    """What went wrong, in words that fit a terminal (each line within 80 with the log's prefix)."""
    host = urlsplit(url).hostname
    if isinstance(error, socket.gaierror):
        return f"cannot find {host}:\ncheck the internet connection and DNS"
    if isinstance(error, ssl.SSLCertVerificationError):
        return (f"TLS: certificate of {host}\nnot verified: {error.verify_message}. A proxy or antivirus\n"
                "that intercepts TLS, a wrong clock or missing CA certificates do this.")
    if isinstance(error, ssl.SSLError):
        return f"TLS failed with {host}:\n{getattr(error, 'reason', None) or error}"
    if isinstance(error, ConnectionRefusedError):
        return f"connection refused by {host}"
    if isinstance(error, ConnectionResetError) and url.startswith("wss:"):
        return (f"TLS handshake cut by {host}:\nis it a TLS (wss://) server? "
                "A firewall or proxy can do this too.")
    return f"cannot connect to {host}:\n{error.strerror or type(error).__name__}"
