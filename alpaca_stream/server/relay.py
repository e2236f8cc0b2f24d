"""--serve's relay: Alpaca's protocol (protocol.py), with the data of the script's connections
(one per market), to any number of unmodified Alpaca clients."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import math
import time
from collections import deque
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from alpaca_stream.books import Book
from alpaca_stream.channels import market_of_symbol, wanted
from alpaca_stream.server.protocol import ConnectionRecord, ProtocolServer, cut_as_slow, encode, log

CLIENT_BUFFER = 4 * 2**20  # bytes of frames waiting for one Relay client before it is cut as slow (407)
REFUSED_EVERY = 60.0  # seconds: a Relay logs clients refused at most this often (one may retry in a loop)
STOP_CLOSE = 0.25  # seconds the Relay's clients have to answer its close when it stops


@dataclass
class Client:
    """One client of a Relay: its connection, what it wants, and the frames waiting for it."""

    ws: ServerConnection
    record: ConnectionRecord
    wants: dict[str, set[str]] = field(default_factory=dict)  # its subscriptions, as sets
    frames: deque[bytes | str] = field(default_factory=deque)
    waiting: int = 0  # bytes in frames
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    writer: asyncio.Task | None = None


Refused = Callable[[int, str], None]  # told Alpaca's error code and message when upstream refuses a change
Changed = Callable[[Refused | None], Coroutine[object, object, None]]


class MarketClients:
    """The Relay's clients of one market's endpoint (stocks, crypto, options or news), as the
    feeder's connection to that market sees them: what they want together, and each frame of
    that connection's, handed over with send()."""

    def __init__(self, relay: Relay, changed: Changed, booked: bool = False) -> None:
        self.relay = relay
        self.changed = changed
        self.clients: dict[int, Client] = {}  # by id() of the connection's record
        # booked (crypto): each pair's order book as the feeder's connection streams it, and the
        # time of its last change, for a client that asks for it later (whole_books()).
        self.books: dict[str, tuple[Book, object]] | None = {} if booked else None

    def seen(self, messages: list) -> None:
        """Every frame of the feeder's connection, clients or none: the order books kept up to
        date, and those the connection no longer streams (its subscription answer says) dropped."""
        if self.books is None:
            return
        for message in messages:
            kind = message.get("T") if isinstance(message, dict) else None
            if kind == "o":
                book = self.books[message["S"]][0] if message["S"] in self.books else Book()
                book.apply(message)
                self.books[message["S"]] = (book, message.get("t"))
            elif kind == "subscription":
                streamed = set(message.get("orderbooks") or ())
                for symbol in [symbol for symbol in self.books if symbol not in streamed and "*" not in streamed]:
                    del self.books[symbol]

    def whole_books(self, symbols: set[str]) -> list[dict]:
        """The whole book (Alpaca's "r": true) of each of these pairs ("*": every one) that the
        feeder's connection streams already: Alpaca sends it only after a new subscription."""
        return [book.whole(symbol, timestamp) for symbol, (book, timestamp) in (self.books or {}).items()
                if symbol in symbols or "*" in symbols]

    def subscriptions(self) -> dict[str, set[str]]:
        """What the clients want, together: channel -> symbols."""
        together: dict[str, set[str]] = {}
        for client in self.clients.values():
            for channel, symbols in client.wants.items():
                together.setdefault(channel, set()).update(symbols)
        return together

    def send(self, messages: list) -> None:
        """One frame of the feeder's: to each client, the part it wants, in one frame."""
        relay = self.relay
        frames: dict[tuple, bytes | str] = {}  # clients who want the same get the same frame, encoded once
        for client in list(self.clients.values()):
            mine = wanted(client.wants, messages)
            if not mine:
                continue
            key = (client.record.codec, *map(id, mine))
            frame = frames.get(key)
            if frame is None:
                frame = frames[key] = encode(mine, client.record.codec)
            if relay.too_slow(client, client.waiting + len(frame)):
                relay.cut_slow(self, client)
                continue
            relay.queue(client, frame)


class AllMarkets:
    """The Relay's clients of every market it serves, for a feeder whose one source carries
    them all (a NATS bot): each message to the clients of its market, told by its symbol."""

    def __init__(self, markets: Mapping[str, MarketClients]) -> None:
        self.markets = markets

    @property
    def clients(self) -> dict[int, Client]:
        return {key: client for market in self.markets.values() for key, client in market.clients.items()}

    def subscriptions(self) -> dict[str, set[str]]:
        together: dict[str, set[str]] = {}
        for market in self.markets.values():
            for channel, symbols in market.subscriptions().items():
                together.setdefault(channel, set()).update(symbols)
        return together

    def send(self, messages: list) -> None:
        by_market: dict[str, list] = {}
        for message in messages:
            by_market.setdefault(market_of(message), []).append(message)
        for market, theirs in by_market.items():
            if market in self.markets:
                self.markets[market].send(theirs)

    def seen(self, messages: list) -> None:
        if "crypto" in self.markets:
            self.markets["crypto"].seen(messages)


def market_of(message: dict) -> str:
    """The market of a message: an article's is news, the others' their symbol's."""
    return "news" if message.get("T") == "n" else market_of_symbol(str(message.get("S", "")))


class Relay(ProtocolServer):
    """websocket_stream.py --serve: Alpaca's protocol, with the data of the feeder's
    connections (one per market), to any number of clients (alpaca-py, Alpaca's other SDKs,
    unmodified), each market at its Alpaca path. Each client gets exactly its own channels and
    symbols, every message, in the feeder's order, times as Alpaca sent them. The feeder hands
    over each frame with its market's send() (at(path)), which never waits for a client: one
    that falls `buffer` bytes behind gets error 407 and is cut, the others go on.

    changed: the paths served (/v2/iex, /v1beta3/crypto/us, ...), each with what to await
    after a client's subscriptions there change (it subscribed, unsubscribed or left), given a
    function to call if the feeder's upstream refuses the change, or None when it left.
    keys: (key, secret) that clients must log in with, or None for any non-empty ones.
    """

    def __init__(self, *, host: str, port: int, changed: Mapping[str, Changed], keys: tuple[str, str] | None,
                 buffer: int = CLIENT_BUFFER) -> None:
        # No compression: deflating every frame for every client would cost the feeder CPU
        # that a client on the same machine gains nothing from. Pings find clients that vanish.
        super().__init__(host=host, port=port, paths=changed, compression=False, ping_interval=20.0,
                         symbol_limit=None)  # the upstream's limit applies, and its 405
        self.keys = keys
        self.buffer = buffer
        self.markets: dict[str, MarketClients] = {}  # by market: one for all its paths (/v2/iex, /v2/sip)
        for path, endpoint in self.endpoints.items():
            booked = "orderbooks" in endpoint.channels
            self.markets.setdefault(endpoint.market, MarketClients(self, changed[path], booked))
        self.served = 0  # clients that logged in
        self.slow = 0  # clients cut with 407
        self.refused = 0  # logins refused (402)
        self.refused_told = -math.inf  # when that was last logged
        self._cutting: set[asyncio.Task] = set()  # the tasks of cut_slow(), while they run
        self.told_404: set[str] = set()  # the paths asked for that are not served, warned of once

    def _handshake(self, connection: ServerConnection, request: Request) -> Response | None:
        refused = super()._handshake(connection, request)
        path = request.path.split("?")[0].rstrip("/")
        if path not in self.endpoints and path not in self.told_404:
            self.told_404.add(path)
            log.warning("--serve: a bot asked for %s, a stream this script does\nnot run (HTTP 404): "
                        "name a pair, an option or --news for it", path)
        return refused

    def at(self, path: str) -> MarketClients:
        """The clients of the market served at this path."""
        return self.markets[self.endpoints[path].market]

    @property
    def clients(self) -> dict[int, Client]:
        """Every market's clients."""
        return AllMarkets(self.markets).clients

    async def stop(self) -> None:
        """As ProtocolServer's, the clients first sent a close (1001, going away): to them, the
        feeder stopped, not the network."""
        if self._server:
            closing = [asyncio.wait_for(connection.close(1001, "the feeder stopped"), STOP_CLOSE)
                       for connection in self._server.connections]
            await asyncio.gather(*closing, return_exceptions=True)
        await super().stop()

    def too_slow(self, client: Client, waiting: int) -> bool:
        """Over its buffer while its socket is full too: the client is not reading. Over it with
        the socket empty, the delay is this loop's (frames of a burst handed over before its
        writer ran: seen on a busy machine), let through up to four buffers."""
        if waiting <= self.buffer:
            return False
        return bool(client.ws.transport.get_write_buffer_size()) or waiting > 4 * self.buffer

    def auth_refusal(self, record: ConnectionRecord, request: dict) -> int | None:
        key, secret = str(request.get("key") or ""), str(request.get("secret") or "")
        if self.keys is None:
            accepted = bool(key and secret)
        else:  # in constant time: a client must not learn a key a character at a time
            accepted = hmac.compare_digest(key, self.keys[0]) & hmac.compare_digest(secret, self.keys[1])
        self.served += accepted
        if accepted:
            return None
        self.refused += 1
        now = time.monotonic()
        if now - self.refused_told >= REFUSED_EVERY:
            self.refused_told = now
            log.warning("--serve refused a bot's keys (402): %s;\n%d refused so far",
                        "it sent none" if self.keys is None else "they must be this script's", self.refused)
        return 402

    async def subscribed(self, ws: ServerConnection, record: ConnectionRecord,
                         before: dict[str, list[str]]) -> None:
        market = self.markets[record.endpoint.market]
        client = market.clients.get(id(record))
        if client is None:
            if record.slow:
                return
            client = market.clients[id(record)] = Client(ws, record)
            client.writer = asyncio.create_task(self._write(client))
        client.wants = {channel: set(symbols) for channel, symbols in record.subscriptions.items() if symbols}
        books = market.whole_books(client.wants.get("orderbooks", set()) - set(before.get("orderbooks", ())))
        if books:  # before any change to them, as from Alpaca after a subscription
            self.queue(client, encode(books, record.codec))

        def refused(code: int, message: str) -> None:
            """Upstream refused what this client asked: as Alpaca, its error, and the
            subscriptions it had before."""
            record.subscriptions.update(before)
            client.wants = {channel: set(symbols) for channel, symbols in before.items() if symbols}
            log.info("upstream refused connection %d's request with %d", self.connections.index(record) + 1, code)
            self.queue(client, encode([{"T": "error", "code": code, "msg": message}], record.codec))

        await market.changed(refused)

    async def ended(self, ws: ServerConnection, record: ConnectionRecord) -> None:
        market = self.markets.get(record.endpoint.market)
        client = market.clients.pop(id(record), None) if market else None
        if client and client.writer:
            client.writer.cancel()
        if market and client and client.wants:
            await market.changed(None)  # what nobody wants any more goes

    def queue(self, client: Client, frame: bytes | str) -> None:
        client.frames.append(frame)
        client.waiting += len(frame)
        client.ready.set()

    async def _write(self, client: Client) -> None:
        """Send a client's frames as fast as it reads them."""
        with contextlib.suppress(ConnectionClosed):  # it left: ended() sees to the rest
            while True:
                await client.ready.wait()
                client.ready.clear()
                while client.frames:
                    frame = client.frames.popleft()
                    client.waiting -= len(frame)
                    await client.ws.send(frame)

    def cut_slow(self, market: MarketClients, client: Client) -> None:
        client.record.slow = True
        self.slow += 1
        log.warning("--serve cut a bot that read too slowly (407),\nas Alpaca does; the others go on")
        del market.clients[id(client.record)]
        client.frames.clear()
        if client.writer:
            client.writer.cancel()  # between two frames or after one: it waits for the client to read
        for work in (cut_as_slow(client.ws), market.changed(None)):  # what nobody wants any more goes
            task = asyncio.create_task(work)
            self._cutting.add(task)
            task.add_done_callback(self._cutting.discard)


