"""--source: what a --publish feeder published to a NATS server (nats_common.py says what
goes where), read into the same handlers as Alpaca's messages: from now on, or with --durable from
where the bot of that name stopped."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Iterator, Sequence
from contextlib import aclosing

import nats.errors
import nats.js.errors
import orjson
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from alpaca_stream.channels import ALPACA_CHANNELS, CRYPTO_CHANNELS, OPTION_CHANNELS
from alpaca_stream.handlers import Route, deliver
from alpaca_stream.nats_common import (
    CHANNEL_OF_KIND,
    KINDS_OF_CHANNEL,
    NEWS_SUBJECT,
    PLAIN_NATS,
    RECONNECT_WAIT,
    STOP_FLUSH,
    STREAM,
    WHOLE_BOOK,
    BrokerError,
    NatsAccess,
    close,
    connect,
    keep_stream,
    subject,
)
from alpaca_stream.records import either_market_types, from_json
from alpaca_stream.session import Session
from alpaca_stream.sources.news import news_symbols
from alpaca_stream.subscriptions import Subscriptions

log = logging.getLogger("alpaca_stream")

FETCH = 256  # most messages handed on at a time: a batch


HEARTBEAT = 1.0  # seconds between the heartbeats of a plain bot's consumer, when idle
WHOLE_BOOK_WAIT = 2.0  # seconds for a feeder to answer a request for a pair's order book


class NatsSource:
    """What a feeder publishes to the NATS server at url, for these stocks, crypto pairs and
    option contracts on these channels (Alpaca's names; "news" for the articles about the
    stocks and pairs); with durable, from where the bot of that name stopped (JetStream).
    nats-py reconnects by itself when the broker comes back."""

    def __init__(self, url: str, symbols: list[str], channels: list[str], durable: str = "", *,
                 pairs: Sequence[str] = (), options: Sequence[str] = (), access: NatsAccess = PLAIN_NATS) -> None:
        self.url, self.durable, self.access = url, durable, access
        self.subscriptions = Subscriptions(channels, symbols, offline=True)  # the feeder's decide
        self.types = either_market_types()  # a record of a pair's message for a pair, ...
        self.wanted = [
            *(subjects_for([c for c in channels if c in ALPACA_CHANNELS], symbols) if symbols else []),
            *subjects_for([c for c in channels if c in CRYPTO_CHANNELS], list(pairs), "crypto"),
            *subjects_for([c for c in channels if c in OPTION_CHANNELS], list(options), "options"),
            *([NEWS_SUBJECT] if "news" in channels else [])]
        # The news subject has every article: those of other symbols are passed over here.
        about = news_symbols([*symbols, *pairs])
        self.news_about = set(about) if "news" in channels and "*" not in about else None
        self.books = list(pairs) if "orderbooks" in channels and "*" not in pairs else []  # asked for whole

    async def __aenter__(self) -> NatsSource:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        pass

    async def run(self, routes: dict[str, Route], session: Session) -> None:
        batches = messages(self.url, self.wanted, session, self.durable, self.news_about, self.books, self.access)
        async with aclosing(batches):  # on Ctrl+C too: a --durable bot says what it has had
            async for batch in batches:
                relay = self.subscriptions.relay
                if relay:  # --serve: the broker's messages to the clients
                    batch = list(batch)  # read twice: for the clients, and for the handlers
                    relay.seen(batch)  # order books, for a client that asks for one later
                    if relay.clients:
                        relay.send(batch)
                await deliver(batch, routes, session)
                sys.stdout.flush()


def subjects_for(channels: list[str], symbols: list[str], market: str = "stocks") -> list[str]:
    """The subjects of a market's channels (Alpaca's names) and these symbols; "*" alone if it
    is among them, since overlapping subjects would bring a message twice. Crypto's and
    options' trades bring no corrections or cancels."""
    symbols = ["*"] if "*" in symbols else symbols
    kinds = [kind for channel in channels for kind in KINDS_OF_CHANNEL[channel]
             if market == "stocks" or kind not in ("correction", "cancel")]
    return [subject(CHANNEL_OF_KIND[kind], symbol, market) for kind in kinds for symbol in symbols]


def decode(payload: bytes) -> dict | None:
    """A payload back as the message Alpaca sent (wire keys, "T"), as --replay reads its lines;
    None for something else (orjson parses a payload in 0.5 us, json.loads in 2.2, measured)."""
    try:
        return from_json(orjson.loads(payload))
    except (ValueError, KeyError, TypeError):  # orjson's JSONDecodeError is a ValueError
        log.debug("skipped a NATS message that is not one of ours: %r", payload[:80])
        return None


async def messages(url: str, wanted: list[str], session: Session, durable: str = "",
                   news_about: set[str] | None = None, books: Sequence[str] = (), access: NatsAccess = PLAIN_NATS
                   ) -> AsyncGenerator[Iterable[dict], None]:
    """The messages a feeder publishes on these subjects, in batches, as Alpaca sent them, for
    ever; of the news, only the articles about news_about's symbols (None: every one); first,
    the whole order book of each pair of books, as a feeder has it. With durable, from where
    the bot of that name stopped. A batch is an iterable, to be read once: a --durable bot
    counts as had what is taken from it."""

    async def back() -> None:
        session.reconnects += 1

    client = await connect(url, "bot", lambda: None, back, access, waiting="waiting for it to come back")
    gaps = Gaps()
    try:
        keeping = await keep_stream(client, access.replicas)
        if durable and not keeping:
            raise BrokerError("--durable needs JetStream: start the NATS server with -js")
        batches = await (from_durable(client, wanted, durable) if durable else
                         from_stream(client, wanted) if keeping else from_now(client, wanted, gaps))
        named = ",\n".join(wanted) if len(wanted) <= 3 else f"{len(wanted)} subjects ({wanted[0]}, ...)"
        log.info("reading %s;\nCtrl+C to stop", named)  # a line each: within 80 columns
        whole = await whole_books(client, books)  # after subscribing: no change is missed between
        if whole:
            yield list(whole.values())
        async with aclosing(batches):  # its clean-up (a --durable bot's last ack) before close()
            async for batch in batches:
                decoded: Iterable[dict] = filter(None, (decode(message.data) for message in batch))  # None: not ours
                if news_about is not None:
                    decoded = (m for m in decoded if m["T"] != "n" or news_about & set(m["symbols"]))
                if whole:  # a change the whole book has already: passed over
                    decoded = (m for m in decoded if m["T"] != "o" or m["S"] not in whole
                               or m["t"] > whole[m["S"]]["t"])
                yield decoded
                gaps.tell()
    finally:
        if gaps.missed:
            log.info("missed %d messages in all: the NATS server\nkeeps none without JetStream", gaps.missed)
        await close(client)


async def whole_books(client: Client, pairs: Sequence[str]) -> dict[str, dict]:
    """Each pair's order book as a feeder has it (nats_common.WHOLE_BOOK), by pair: Alpaca sends
    the whole book only after a subscription, and the feeder's was before this bot started.
    None for a pair no feeder has a book of yet: its whole book comes when the feeder gets it."""
    books = {}
    for pair in pairs:
        try:
            answer = await client.request(WHOLE_BOOK.format(pair=pair), b"", timeout=WHOLE_BOOK_WAIT)
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError):
            continue
        book = decode(answer.data) if answer.data else None
        if book:
            books[pair] = book
    return books


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
                if unacknowledged is not None:  # the last handed on: a stop may leave the rest untaken
                    await unacknowledged.ack()
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
