"""--serve's relay: Alpaca's protocol (protocol.py), with the data of the script's one
connection, to any number of unmodified Alpaca clients."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import math
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from alpaca_stream.channels import wanted
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


class Relay(ProtocolServer):
    """websocket_stream.py --serve: Alpaca's protocol, with the data of the feeder's one
    connection, to any number of clients (alpaca-py, Alpaca's other SDKs, unmodified). Each
    gets exactly its own channels and symbols, every message, in the feeder's order, times as
    Alpaca sent them. The feeder hands over each frame with send(), which never waits for a
    client: one that falls `buffer` bytes behind gets error 407 and is cut, the others go on.

    keys: (key, secret) that clients must log in with, or None for any non-empty ones.
    changed: awaited after a client's subscriptions change (it subscribed, unsubscribed or left),
    with a function to call if the feeder's upstream refuses the change; None when it left.
    """

    def __init__(self, *, host: str, port: int, feeds: tuple[str, ...], keys: tuple[str, str] | None,
                 changed: Callable[[Refused | None], Coroutine[object, object, None]],
                 buffer: int = CLIENT_BUFFER) -> None:
        # No compression: deflating every frame for every client would cost the feeder CPU
        # that a client on the same machine gains nothing from. Pings find clients that vanish.
        super().__init__(host=host, port=port, feeds=feeds, compression=False, ping_interval=20.0,
                         symbol_limit=None)  # the upstream's limit applies, and its 405
        self.keys = keys
        self.changed = changed
        self.buffer = buffer
        self.clients: dict[int, Client] = {}  # by id() of the connection's record
        self.served = 0  # clients that logged in
        self.slow = 0  # clients cut with 407
        self.refused = 0  # logins refused (402)
        self.refused_told = -math.inf  # when that was last logged
        self._cutting: set[asyncio.Task] = set()  # the tasks of _cut_slow(), while they run

    async def stop(self) -> None:
        """As ProtocolServer's, the clients first sent a close (1001, going away): to them, the
        feeder stopped, not the network."""
        if self._server:
            closing = [asyncio.wait_for(connection.close(1001, "the feeder stopped"), STOP_CLOSE)
                       for connection in self._server.connections]
            await asyncio.gather(*closing, return_exceptions=True)
        await super().stop()

    def subscriptions(self) -> dict[str, set[str]]:
        """What the clients want, together: channel -> symbols."""
        together: dict[str, set[str]] = {}
        for client in self.clients.values():
            for channel, symbols in client.wants.items():
                together.setdefault(channel, set()).update(symbols)
        return together

    def send(self, messages: list) -> None:
        """One frame of the feeder's: to each client, the part it wants, in one frame."""
        frames: dict[tuple, bytes | str] = {}  # clients who want the same get the same frame, encoded once
        for client in list(self.clients.values()):
            mine = wanted(client.wants, messages)
            if not mine:
                continue
            key = (client.record.codec, *map(id, mine))
            frame = frames.get(key)
            if frame is None:
                frame = frames[key] = encode(mine, client.record.codec)
            if self._too_slow(client, client.waiting + len(frame)):
                self._cut_slow(client)
                continue
            self._queue(client, frame)

    def _too_slow(self, client: Client, waiting: int) -> bool:
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
        client = self.clients.get(id(record))
        if client is None:
            if record.slow:
                return
            client = self.clients[id(record)] = Client(ws, record)
            client.writer = asyncio.create_task(self._write(client))
        client.wants = {channel: set(symbols) for channel, symbols in record.subscriptions.items() if symbols}

        def refused(code: int, message: str) -> None:
            """Upstream refused what this client asked: as Alpaca, its error, and the
            subscriptions it had before."""
            record.subscriptions.update(before)
            client.wants = {channel: set(symbols) for channel, symbols in before.items() if symbols}
            log.info("upstream refused connection %d's request with %d", self.connections.index(record) + 1, code)
            self._queue(client, encode([{"T": "error", "code": code, "msg": message}], record.codec))

        await self.changed(refused)

    async def ended(self, ws: ServerConnection, record: ConnectionRecord) -> None:
        client = self.clients.pop(id(record), None)
        if client and client.writer:
            client.writer.cancel()
        if client and client.wants:
            await self.changed(None)  # what nobody wants any more goes

    def _queue(self, client: Client, frame: bytes | str) -> None:
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

    def _cut_slow(self, client: Client) -> None:
        client.record.slow = True
        self.slow += 1
        log.warning("--serve cut a bot that read too slowly (407),\nas Alpaca does; the others go on")
        del self.clients[id(client.record)]
        client.frames.clear()
        if client.writer:
            client.writer.cancel()  # between two frames or after one: it waits for the client to read
        for work in (cut_as_slow(client.ws), self.changed(None)):  # what nobody wants any more goes
            task = asyncio.create_task(work)
            self._cutting.add(task)
            task.add_done_callback(self._cutting.discard)


