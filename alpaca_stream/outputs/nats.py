"""--publish: every message to a NATS server (nats_common.py says what goes where), before its
handler gets it, for more bots on one Alpaca connection. With JetStream, each message is kept
until JetStream acknowledges it, and sent again, in order, if it does not: a lost server, a
lost stream leader or quorum cost no message while UNSENT_LIMIT holds them; the rest are
counted, and reported at exit."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging

import nats.aio.client
import nats.errors
import orjson
from nats.aio.msg import Msg

from alpaca_stream.books import Book
from alpaca_stream.handlers import Handler, Handlers, unhandled
from alpaca_stream.nats_common import (
    CHANNEL_OF_KIND,
    PLAIN_NATS,
    STOP_FLUSH,
    UNSENT_LIMIT,
    WHOLE_BOOK,
    NatsAccess,
    close,
    connect,
    keep_stream,
    subject,
)
from alpaca_stream.records import KIND, Orderbook, Record, as_json
from alpaca_stream.session import Session

log = logging.getLogger("alpaca_stream")

# Seconds without JetStream's acknowledgement of the oldest message kept before JetStream is
# taken for not storing (no quorum, or no leader yet): then the feeder holds what it publishes,
# and sends the oldest again every ACK_WAIT until it is acknowledged, then the rest, in order.
ACK_WAIT = 2.0


class Publisher:
    """--publish: publishes each message before its handler gets it. With JetStream, each is
    kept until acknowledged (the window, at most UNSENT_LIMIT bytes): sent again, in order, if
    it is not, stored once by its id (Nats-Msg-Id). Without, a lost broker costs no message
    while nats-py's buffer (UNSENT_LIMIT) holds them. The rest are counted, and reported at exit."""

    def __init__(self, url: str, session: Session, access: NatsAccess = PLAIN_NATS) -> None:
        self.url, self.session, self.access = url, session, access
        self.session.publishing, self.session.published, self.session.unpublished = True, 0, 0
        self.keeping = False  # in JetStream: then each message carries its id, and asks for an ack
        self.held = 0  # without JetStream, published while the broker is away: sent when it is back
        self.commands: dict[tuple[str, str | None], bytes] = {}  # (kind, symbol): "HPUB subject ", checked once
        self.sequences: dict[bytes, int] = {}  # without JetStream: each subject's latest Feeder-Seq
        self.unacked: dict[int, bytes] = {}  # with JetStream: by number, in order, what it has not acknowledged
        self.unacked_size = 0
        self.numbered = 0  # the latest number: an ack's subject ends with it
        self.paused = False  # JetStream stores nothing now, or the server is away: the unacked are held
        self.stalled = False  # said in the log: JetStream acknowledged nothing for ACK_WAIT
        self.room = asyncio.Event()  # set at each ack (and on a pause): the window may have room
        self.watching: asyncio.Task | None = None
        self.books: dict[str, tuple[Book, object]] = {}  # each pair's order book, and its time

    async def __aenter__(self) -> Publisher:
        self.client = await connect(self.url, "feeder", self.lost, self.back, self.access,
                                    waiting="the stream goes on,\nand publishing resumes when the server is back")
        await self.client.subscribe(WHOLE_BOOK.format(pair="*"), cb=self.whole_book)
        self.keeping = await keep_stream(self.client, self.access.replicas)
        if not self.keeping:
            log.info("the NATS server has no JetStream (nats-server -js): messages are not kept\n"
                     "for bots that restart (--durable)")
            return self
        acks = self.client.new_inbox()
        self.replies = f"{acks}.".encode()  # each message's reply subject: this, and its number
        await self.client.subscribe(f"{acks}.*", cb=self.acked)
        self.watching = asyncio.create_task(self.watch())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self.watching:
            self.watching.cancel()
        if self.keeping and self.unacked and self.client.is_connected and not self.paused:
            with contextlib.suppress(asyncio.TimeoutError):  # the last acks: within STOP_FLUSH
                await asyncio.wait_for(self.all_acknowledged(), STOP_FLUSH)
        self.session.unpublished += len(self.unacked)
        if not self.client.is_connected:
            self.session.published -= self.held
            self.session.unpublished += self.held
        await close(self.client)

    async def all_acknowledged(self) -> None:
        while self.unacked:
            self.room.clear()
            await self.room.wait()

    async def whole_book(self, request: Msg) -> None:
        """A bot's request for a pair's order book: as it stands, or nothing (an empty payload)."""
        pair = request.subject.split(".", 1)[1]
        book, timestamp = self.books.get(pair, (None, None))
        whole = Orderbook(book.whole(pair, timestamp)) if book else None
        await request.respond(orjson.dumps({"type": "orderbook", **whole.named()}, default=as_json,
                                           option=orjson.OPT_PASSTHROUGH_DATETIME) if whole else b"")

    def lost(self) -> None:
        """nats-py calls this with the socket closed, before it reconnects and sends what it holds
        (its _pending): with JetStream, what is unacknowledged is held, sent again in order by
        back(), so taken out of nats-py's buffer (what else is there stays)."""
        if not self.keeping:
            return
        self.pause()
        ours = set(map(id, self.unacked.values()))
        client = self.client
        client._pending_data_size -= sum(len(command) for command in client._pending if id(command) in ours)
        client._pending = [command for command in client._pending if id(command) not in ours]

    async def back(self) -> None:
        if self.keeping:
            await self.resume()
        else:
            log.debug("NATS: %d messages held while the server was away", self.held)
            self.held = 0

    def pause(self) -> None:
        """Hold what is published: JetStream stores nothing now, or the server is away."""
        self.paused = True
        self.room.set()  # a publish waiting for room: counted as not published, the stream goes on

    async def resume(self) -> None:
        """Everything unacknowledged sent again, in order: JetStream stores each once (its id)."""
        self.paused = False
        if self.stalled:
            self.stalled = False
            log.info("JetStream stores again: %d messages held sent", len(self.unacked))
        await self.send(*self.unacked.values())

    async def acked(self, ack: Msg) -> None:
        """JetStream's answer to a message: stored (or stored already), or not (an error, or no
        responders, 503, while the stream has no leader): then held until the watch finds it
        stores again."""
        if not ack.data or b'"error"' in ack.data:
            log.debug("NATS: JetStream did not store a message: %r", ack.data or ack.headers)
            self.pause()
            return
        command = self.unacked.pop(int(ack.subject.rpartition(".")[2]), None)
        if command is None:
            return  # sent again, and acknowledged twice
        self.unacked_size -= len(command)
        self.session.published += 1
        self.room.set()
        if self.paused and self.client.is_connected:  # the oldest, sent again, went through
            await self.resume()

    async def watch(self) -> None:
        """Every ACK_WAIT: if the oldest message kept is still unacknowledged, JetStream stores
        nothing now (no quorum, or no leader yet): what is published is held, and the oldest sent
        again until JetStream acknowledges it, which resumes the rest (acked())."""
        oldest = None
        while True:
            await asyncio.sleep(ACK_WAIT)
            first = next(iter(self.unacked), None)
            if first is not None and first == oldest and self.client.is_connected:
                if not self.stalled:
                    self.stalled = True
                    log.warning("JetStream has stored nothing for %.0f s: no quorum (more than half\n"
                                "of the stream's servers down) or no leader yet; the stream goes on,\n"
                                "what is published is held (up to %d MB), then counted", ACK_WAIT,
                                UNSENT_LIMIT // 2**20)
                self.pause()
                await self.send(self.unacked[first])
            oldest = first

    async def send(self, *commands: bytes) -> None:
        """Commands into nats-py's buffer (nats-py 2.16's own _send_command and _flush_pending,
        as its publish() does), its writer woken once for what it will find."""
        client = self.client
        for command in list(commands):
            await client._send_command(command)
        if client._flush_queue is not None and client._flush_queue.empty():
            await client._flush_pending()

    def wrap(self, handlers: Handlers) -> Handlers:
        """The handlers, each first publishing its message; every kind is published, whether
        this script handles it or not."""
        return {kind: self.publishing(kind, handlers.get(kind, unhandled)) for kind in KIND.values()}

    def publishing(self, kind: str, handler: Handler) -> Handler:
        @functools.wraps(handler)  # its name, for the log when it raises
        async def publish_then_handle(record: Record) -> None:
            await self.publish(kind, record)
            await handler(record)

        @functools.wraps(handler)
        async def keep_book_publish_then_handle(book: Orderbook) -> None:
            self.books[book.symbol] = (book.book, book["t"])  # as it stands, for a bot that asks (whole_book())
            await publish_then_handle(book)

        return keep_book_publish_then_handle if kind == "orderbook" else publish_then_handle

    async def publish(self, kind: str, record: Record) -> None:
        """One message, as --json prints it, with its header (and with JetStream, its reply
        subject, for the ack). The protocol's HPUB is built here: nats-py's publish() with a
        header took 4.4 us a message, this 1.7 us with the digest, measured; orjson builds one
        message's payload again and again in 3.0 us, json.dumps in 6.4 (over the local server's
        mix of messages, each built once, 7.4 us with named(): docs/performance.md)."""
        payload = orjson.dumps({"type": kind, **record.named()}, default=as_json,
                               option=orjson.OPT_PASSTHROUGH_DATETIME)  # times as --json has them
        client = self.client
        try:
            start = self.commands.get((kind, record.get("S"))) or self.command(kind, record)
            if client.is_closed or client.is_draining_pubs:
                raise nats.errors.OutboundBufferLimitError  # as nats-py's publish()
            if self.keeping:
                digest = hashlib.blake2b(payload, digest_size=12).hexdigest().encode()
                header = b"NATS/1.0\r\nNats-Msg-Id: %b\r\n\r\n" % digest
                self.numbered += 1
                await self.keep(self.numbered, b"%b%b%d %d %d\r\n%b%b\r\n" % (
                    start, self.replies, self.numbered, len(header), len(header) + len(payload), header, payload))
                return  # published once acknowledged
            sequence = self.sequences[start] = self.sequences.get(start, 0) + 1
            header = b"NATS/1.0\r\nFeeder-Seq: %d\r\n\r\n" % sequence
            command = b"%b%d %d\r\n%b%b\r\n" % (start, len(header), len(header) + len(payload), header, payload)
            if not client.is_connected and client.pending_data_size + len(command) > UNSENT_LIMIT:
                raise nats.errors.OutboundBufferLimitError  # the broker away too long
            await self.send(command)
        except nats.errors.Error as error:  # and BadSubjectError, for a symbol NATS cannot carry
            self.session.unpublished += 1
            log.debug("not published: %r", error)
            return
        self.session.published += 1
        if not client.is_connected:
            self.held += 1

    async def keep(self, number: int, command: bytes) -> None:
        """With JetStream: kept until acknowledged, sent unless held. The window is UNSENT_LIMIT
        bytes: full, a publish waits for JetStream's acks while it stores, else is not published."""
        while self.unacked_size + len(command) > UNSENT_LIMIT:
            if self.paused:
                raise nats.errors.OutboundBufferLimitError
            self.room.clear()
            await self.room.wait()
        self.unacked[number] = command
        self.unacked_size += len(command)
        if not self.paused:
            await self.send(command)

    def command(self, kind: str, record: Record) -> bytes:
        """ "HPUB subject ", the subject checked as nats-py's publish() does, once a subject: a
        character the protocol forbids (a space in a symbol) would break the connection. A
        kind's subject is its market's (a crypto trade's, a stock trade's): their symbols differ."""
        name = subject(CHANNEL_OF_KIND[kind], record.get("S") or "", record.market)
        nats.aio.client._validate_subject(name)  # BadSubjectError
        command = self.commands[kind, record.get("S")] = f"HPUB {name} ".encode()
        return command
