"""Records to their handlers, one message after another in the order they came (deliver); the
slow work a handler starts and leaves running (in_background). run_handlers(), the same
hand-over with no stream, for tests of a strategy, is in testing.py."""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import datetime
from typing import Any, NamedTuple

from alpaca_stream.records import MESSAGE_TYPES, Record, RecordType
from alpaca_stream.session import Session

log = logging.getLogger("alpaca_stream")

Handler = Callable[[Any], Awaitable[None]]
Handlers = Mapping[str, Handler]  # by kind of message: "trade", "quote", ...
FAILURES_EVERY = 10.0  # seconds between two lines about a handler that keeps raising
SLOW_HANDLER = 1.0  # seconds a handler may hold the stream before the log names it
BACKGROUND_GRACE = 3.0  # seconds in_background() work gets to finish when a run is stopped


class Route(NamedTuple):
    """Where one kind of message goes: the record it becomes, and its handler."""

    kind: str
    record: RecordType
    handler: Handler


async def unhandled(record: Record) -> None:
    """The handler of a kind that has none: the message is counted, and goes no further."""


def routes_for(handlers: Handlers, types: Mapping[str, tuple[str, RecordType]] = MESSAGE_TYPES) -> dict[str, Route]:
    """Alpaca's "T" -> Route, for a source's record table (types: "T" -> its kind and record)
    and the handlers given by kind."""
    return {wire_type: Route(kind, record, handlers.get(kind, unhandled))
            for wire_type, (kind, record) in types.items()}


def skip(message: object) -> None:
    """What is not market data, from a source where nothing else is expected."""
    log.debug("skipped a message of unknown type: %r", message)


async def deliver(messages: Iterable[Any], routes: dict[str, Route], session: Session,
                  control: Callable[[object], None] = skip) -> bool:
    """Hand each message of a frame to its handler, in order; what is not market data, to
    control (a source's: Alpaca's answers and errors). A broken message, or a handler that
    raises, costs that message only: the rest of the frame and the stream carry on. Once the
    run is stopping (Ctrl+C), nothing more is handed over. True if any message was market
    data. (One function for the whole frame, not one call a message: it is the hot loop.)"""
    received, markets = session.received, session.markets
    delivered = False
    clock = time.monotonic
    since = clock()  # when the last handler returned
    # Stopping (set by the signal handler, maybe while a handler held the loop) is looked at
    # before a message is taken, never after: a source that notes what it has handed over as it
    # is taken (a --durable bot's acknowledgement) must not count one that goes to no handler.
    if session.stopping:
        return False
    for message in messages:
        try:
            kind, record_type, handler = routes[message["T"]]
        except (KeyError, TypeError):  # not market data
            control(message)
            if session.stopping:
                break
            continue
        # A message read from --json comes as its record already (records.from_json()).
        record = message if isinstance(message, Record) else record_type(message)
        received[kind] += 1
        markets[record.market] += 1
        delivered = True
        try:
            await handler(record)
        except BrokenPipeError:
            raise  # the reader has gone: main() ends quietly
        except Exception as error:
            handler_failed(kind, handler, record, error, session)
        now = clock()
        if now - since > SLOW_HANDLER:
            held_the_stream(handler, now - since, session)
        since = now
        if session.stopping:
            break
    if delivered:
        session.last_message = since
    return delivered


def held_the_stream(handler: Handler, seconds: float, session: Session) -> None:
    """Name, once a run, a handler that held the stream: the next messages waited for it (and
    if it blocked, Ctrl+C too)."""
    name = getattr(handler, "__name__", "the handler")
    if name not in session.slow_told:
        session.slow_told.add(name)
        log.warning("%s held the stream for %.1f s:\nthe messages after it waited. Start slow work "
                    "with\nin_background() and return at once (docs/handlers.md)", name, seconds)


def handler_failed(kind: str, handler: Handler, record: Record, error: Exception, session: Session) -> None:
    """Log a handler's exception: the first in full, with what the message lacked if it came
    broken; then, for a handler that keeps raising (a typo raises on every message), a line
    with the count every FAILURES_EVERY seconds; the summary counts them all."""
    name = getattr(handler, "__name__", "the handler")
    failure = failed_on(kind, record, error)
    count = session.failures[name] = session.failures.get(name, 0) + 1
    told, told_at = session.failures_told.get(name, (0, 0.0))
    now = time.monotonic()
    if count == 1:
        verbose = log.isEnabledFor(logging.DEBUG)
        log.warning("%s raised %s%s", name, failure, "" if verbose else "\n(-v shows where)", exc_info=verbose)
    elif now - told_at >= FAILURES_EVERY:
        log.warning("%s raised %d %s more:\nthe last, %s", name, count - told,
                    "time" if count - told == 1 else "times", failure)
    else:
        return
    session.failures_told[name] = (count, now)


def failed_on(kind: str, record: Record, error: Exception) -> str:
    """What a handler raised and on what: "ZeroDivisionError on a trade of SPY:\ndivision by
    zero", and what the message came without if it came broken and that may be the cause."""
    return f"{type(error).__name__} on a {kind} of {about(record)}:\n{error}{lacking(record, error)}"


def about(record: Record) -> str:
    """The symbol a message is about ("?" if it names none): an order update's is its order's."""
    try:
        return str(record.symbol or "?")
    except (KeyError, AttributeError):  # a broken message, or a kind without one (news)
        return "?"


def lacking(record: Record, error: Exception) -> str:
    """What a broken message lacks, to go under its handler's error when the handler may have
    tripped on it: a KeyError of a field it came without, a TypeError or an AttributeError of a
    timestamp that is not a time; else "". (Checked only once a handler has raised: a check of
    every message costs 10% of the speed.)"""
    if isinstance(error, KeyError):
        missing = [(wire.key, name) for name, wire in record.fields.items()
                   if not wire.optional and wire.key not in record]
        if any(error.args[:1] == (key,) for key, _ in missing):  # the key it came without
            return f"\n(the message came without {', '.join(name for _, name in missing)})"
        return ""
    stamp = record.fields.get("timestamp")
    when = record.get(stamp.key) if stamp else None
    if when is None or isinstance(when, datetime):
        return ""
    if isinstance(error, TypeError) or isinstance(error, AttributeError) and error.obj is when:
        return "\n(its timestamp is not a time)"
    return ""


background_tasks: set[asyncio.Future] = set()  # asyncio keeps only a weak reference to a task


class Turns:
    """In a replay, work started with in_background() runs one at a time, in the order started
    (one_at_a_time()): a recording has no wall clock to race, so two orders placed from one
    handler reach a backtest's broker in that order on every run."""

    on = False
    last: asyncio.Future | None = None  # the work started last, which the next waits for


turns = Turns()


def one_at_a_time(on: bool) -> None:
    turns.on, turns.last = on, None


async def after(before: asyncio.Future | None, work: Awaitable[object]) -> object:
    if before is not None:
        await asyncio.wait([before])  # its failure is its own, logged by background_done()
    return await work


def in_background(work: Awaitable[object]) -> None:
    """Start slow work and return at once, so that the next messages do not wait for it:

        in_background(async_client.submit_order(order))               # an async client
        in_background(asyncio.to_thread(client.submit_order, order))   # a blocking one

    A failure is logged. On exit, work gets BACKGROUND_GRACE seconds to finish; what still waits
    then is cancelled, and a blocking call already running in its thread is waited for."""
    if not inspect.isawaitable(work):
        raise TypeError(f"in_background() needs an awaitable, not {type(work).__name__}: for a "
                        "blocking function, pass asyncio.to_thread(function, arguments...)")
    task = asyncio.ensure_future(after(turns.last, work) if turns.on else work)
    if turns.on:
        turns.last = task
    background_tasks.add(task)
    task.add_done_callback(background_done)


def background_done(task: asyncio.Future) -> None:
    background_tasks.discard(task)
    if not task.cancelled() and task.exception() is not None:
        error = task.exception()
        log.warning("work started with in_background() failed: %s: %s", type(error).__name__, error,
                    exc_info=error if log.isEnabledFor(logging.DEBUG) else None)


async def background_settled() -> None:
    """At the end of a stream's run, before its sources close (the demo's paper broker among
    them): the work started with in_background() gets BACKGROUND_GRACE seconds to finish, so
    that an order on its way gets its answer; what still runs then is cancelled at exit, but a
    blocking call in a thread cannot be: the exit waits for it, and says so."""
    if background_tasks:
        _, running = await asyncio.wait(set(background_tasks), timeout=BACKGROUND_GRACE)
        if running:
            log.warning("%d of the work started with in_background() still runs after %g s:\n"
                        "a blocking call (asyncio.to_thread) is waited for to its end;\n"
                        "a second Ctrl+C forces the exit", len(running), BACKGROUND_GRACE)


async def background_finished() -> None:
    """Wait for the work started with in_background(), in a run that ends by itself (a --replay
    file, run_handlers()): its orders are placed, not cancelled at the end."""
    while background_tasks:  # work may start more work
        await asyncio.wait(set(background_tasks))
