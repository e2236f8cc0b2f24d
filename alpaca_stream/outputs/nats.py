"""--publish: every message to a NATS server (nats_common.py says what goes where), before its
handler gets it, for more bots on one Alpaca connection. A lost broker costs no message while
UNSENT_LIMIT holds them; the rest are counted, and reported at exit."""

from __future__ import annotations

import asyncio
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

# What a feeder sent just before the broker went may never have been stored: the sockets'
# buffers hold a few MB, the broker may stop before storing what it read. So with JetStream
# each message sent is kept for a while, and the feeder sends it again when the broker is back
# (stored once, by its id). Kept: what was sent in the last RESEND_EVERY seconds at least, or
# in the last RESEND_LIMIT / 2 bytes, and none older than twice RESEND_EVERY, well within
# DUPLICATE_WINDOW (nats_common.py); PING_EVERY there notices a silent broker in time.
RESEND_LIMIT = 8 * 1024 * 1024
RESEND_EVERY = 40.0  # seconds


class Publisher:
    """--publish: publishes each message before its handler gets it. A lost broker costs no
    message while UNSENT_LIMIT holds them; the rest are counted, and reported at exit."""

    def __init__(self, url: str, session: Session, access: NatsAccess = PLAIN_NATS) -> None:
        self.url, self.session, self.access = url, session, access
        self.session.publishing, self.session.published, self.session.unpublished = True, 0, 0
        self.keeping = False  # in JetStream: then each message carries its id
        self.held = 0  # published while the broker is away: sent when it is back
        self.commands: dict[tuple[str, str | None], bytes] = {}  # (kind, symbol): "HPUB subject ", checked once
        self.sequences: dict[bytes, int] = {}  # without JetStream: each subject's latest Feeder-Seq
        self.sent: list[bytes] = []  # with JetStream: the latest commands, to send again after a loss
        self.sent_before: list[bytes] = []  # the ones before those, up to RESEND_EVERY seconds earlier
        self.sent_size = 0
        self.again = 0  # bytes sent again, held with the rest: not counted against UNSENT_LIMIT
        self.timer: asyncio.TimerHandle | None = None  # the next forget_older()
        self.books: dict[str, tuple[Book, object]] = {}  # each pair's order book, and its time

    async def __aenter__(self) -> Publisher:
        self.client = await connect(self.url, "feeder", self.lost, self.back, self.access,
                                    waiting="the stream goes on,\nand publishing resumes when the server is back")
        await self.client.subscribe(WHOLE_BOOK.format(pair="*"), cb=self.whole_book)
        self.keeping = await keep_stream(self.client, self.access.replicas)
        if not self.keeping:
            log.info("the NATS server has no JetStream (nats-server -js): messages are not kept\n"
                     "for bots that restart (--durable)")
        self.forget_older()
        return self

    def forget_older(self) -> None:
        """Every RESEND_EVERY seconds (and once RESEND_LIMIT / 2 bytes are kept): the older
        half of what is kept for sending again is dropped."""
        self.sent_before, self.sent, self.sent_size = self.sent, [], 0
        if self.timer:
            self.timer.cancel()
        self.timer = asyncio.get_running_loop().call_later(RESEND_EVERY, self.forget_older)

    async def __aexit__(self, *exc_info: object) -> None:
        if self.timer:
            self.timer.cancel()
        if not self.client.is_connected:
            self.session.published -= self.held
            self.session.unpublished += self.held
        await close(self.client)

    async def whole_book(self, request: Msg) -> None:
        """A bot's request for a pair's order book: as it stands, or nothing (an empty payload)."""
        pair = request.subject.split(".", 1)[1]
        book, timestamp = self.books.get(pair, (None, None))
        whole = Orderbook(book.whole(pair, timestamp)) if book else None
        await request.respond(orjson.dumps({"type": "orderbook", **whole.named()}, default=as_json,
                                           option=orjson.OPT_PASSTHROUGH_DATETIME) if whole else b"")

    def lost(self) -> None:
        # nats-py calls this with the socket closed, before it reconnects and sends what it
        # holds (its _pending, which has what it had not written yet): what it had written goes
        # first, in the order it was published.
        unwritten = set(map(id, self.client._pending))
        again = [command for command in self.sent_before + self.sent if id(command) not in unwritten]
        self.client._pending[:0] = again
        self.again = sum(map(len, again))
        self.client._pending_data_size += self.again
        log.debug("to send again, in case the NATS server did not store them: %d messages", len(again))

    def back(self) -> None:
        log.debug("NATS: %d messages held while the server was away", self.held)
        self.held = self.again = 0

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
        """One message, as --json prints it, with its header. The protocol's HPUB is built here
        and handed to nats-py's buffer (nats-py 2.16's own _send_command and _flush_pending, as
        its publish() does): its publish() with a header took 4.4 us a message, this 1.7 us
        with the digest, measured; orjson builds the payload in 3.0 us, json.dumps in 6.4."""
        payload = orjson.dumps({"type": kind, **record.named()}, default=as_json,
                               option=orjson.OPT_PASSTHROUGH_DATETIME)  # times as --json has them
        client = self.client
        try:
            start = self.commands.get((kind, record.get("S"))) or self.command(kind, record)
            if self.keeping:
                digest = hashlib.blake2b(payload, digest_size=12).hexdigest().encode()
                header = b"NATS/1.0\r\nNats-Msg-Id: %b\r\n\r\n" % digest
            else:
                sequence = self.sequences[start] = self.sequences.get(start, 0) + 1
                header = b"NATS/1.0\r\nFeeder-Seq: %d\r\n\r\n" % sequence
            command = b"%b%d %d\r\n%b%b\r\n" % (start, len(header), len(header) + len(payload), header, payload)
            if client.is_closed or client.is_draining_pubs or not client.is_connected and \
                    client.pending_data_size - self.again + len(command) > UNSENT_LIMIT:
                raise nats.errors.OutboundBufferLimitError  # as nats-py's publish(): the broker away too long
            await client._send_command(command)
            if self.keeping:
                self.sent.append(command)
                self.sent_size += len(command)
                if self.sent_size > RESEND_LIMIT // 2:
                    self.forget_older()
            if client._flush_queue is not None and client._flush_queue.empty():
                await client._flush_pending()  # wakes nats-py's writer, once for what it will find
        except nats.errors.Error as error:  # and BadSubjectError, for a symbol NATS cannot carry
            self.session.unpublished += 1
            log.debug("not published: %r", error)
            return
        self.session.published += 1
        if not client.is_connected:
            self.held += 1

    def command(self, kind: str, record: Record) -> bytes:
        """ "HPUB subject ", the subject checked as nats-py's publish() does, once a subject: a
        character the protocol forbids (a space in a symbol) would break the connection. A
        kind's subject is its market's (a crypto trade's, a stock trade's): their symbols differ."""
        name = subject(CHANNEL_OF_KIND[kind], record.get("S") or "", record.market)
        nats.aio.client._validate_subject(name)  # BadSubjectError
        command = self.commands[kind, record.get("S")] = f"HPUB {name} ".encode()
        return command
