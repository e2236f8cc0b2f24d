"""run_handlers(): the stream's hand-over (handlers.py) with no stream, for tests of a strategy:
your messages to your handlers, in order; with trading="simulated", through a backtest
(sources/backtest.py's feed and its broker, as --replay), so that a test asserts on the fills
and the result. Beside the handlers, not in handlers.py: a backtest is a source's, and data
flows one way."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Iterable
from types import TracebackType
from typing import Any

import msgpack

from alpaca_stream.handlers import Handler, Handlers, background_finished, deliver, failed_on, routes_for
from alpaca_stream.orders import trading_through
from alpaca_stream.records import KIND, TIMES, Record, either_market_types, from_json
from alpaca_stream.session import Session
from alpaca_stream.sources.backtest import Feed
from alpaca_stream.times import rfc3339

SIMULATED = "simulated"  # run_handlers(..., trading=SIMULATED): a backtest's account


class HandlersFailed(Exception):
    """run_handlers(): the handlers raised; every failure is listed, the first is the cause."""


def run_handlers(messages: Iterable[dict[str, Any]], handlers: Handlers, *, keep_going: bool = False,
                 trading: object = None) -> Session:
    """Hand messages to these handlers (by kind: {"trade": on_trade, ...}) as the stream does,
    with no network and no server: for your own tests. The same records, in the same order;
    work started with in_background() is waited for. A message is a dict as Alpaca sends it
    ("T", "S", "p", ...; "t" a datetime or a msgpack Timestamp) or as --json prints it ("type",
    "symbol", "price", ...); one of a kind with no handler here is counted, and goes no
    further. A handler that raises is logged and the next message goes on, as on the stream;
    then, at the end, HandlersFailed lists every failure, so that a test of a strategy that
    raises fails (keep_going=True: no raise, as the stream). trading, for a strategy that
    places orders: "simulated", a backtest's account, as --replay's (its orders fill at the
    prices of the messages after them, the fills come to on_trade_update, and the session's
    backtest is the result: its fills, P&L, equity); or what trading_client() gives the
    handlers meanwhile, an object with the methods they call (submit_order, ...) that notes
    the orders. Returns what the summary counts:

        trade = {"type": "trade", "symbol": "SPY", "price": 600.5, "size": 100,
                 "timestamp": "2026-11-24T15:00:00+00:00", "exchange": "V", "id": 1}
        session = run_handlers([trade], {"trade": on_trade})
        assert session.received["trade"] == 1
        session = run_handlers(messages, {"trade": on_trade}, trading="simulated")
        assert session.backtest.symbols["SPY"].realized == 12.5
    """
    __tracebackhide__ = True  # pytest shows the test's line, not this machinery's
    kinds = list(KIND.values())
    unknown = set(handlers) - set(kinds)
    if unknown:
        raise ValueError(f"no such kind of message: {', '.join(sorted(unknown))} (one of {', '.join(kinds)})")
    if isinstance(trading, str) and trading != SIMULATED:
        raise ValueError(f'trading takes "{SIMULATED}" or a client, not {trading!r}')
    failures: list[tuple[str, Exception, TracebackType | None]] = []  # each with its traceback from the handler on

    def noting(kind: str, handler: Handler) -> Handler:
        @functools.wraps(handler)  # its name, for the log
        async def noted(record: Record) -> None:
            try:
                await handler(record)
            except Exception as error:
                name = getattr(handler, "__name__", "the handler")
                failure = f"{name} raised {failed_on(kind, record, error)}".replace("\n", " ")
                failures.append((failure, error, error.__traceback__.tb_next if error.__traceback__ else None))
                raise  # to deliver(), which logs it and goes on, as on the stream

        return noted

    routes = routes_for({kind: noting(kind, handler) for kind, handler in handlers.items()}, either_market_types())
    wire = [as_wire(message) for message in messages]
    session = Session(started=time.monotonic())

    async def hand_over() -> None:
        await deliver(wire, routes, session)
        await background_finished()

    async def backtest() -> None:
        feed = Feed()
        feed.open()
        try:
            await feed.replay(wire, routes, session)
            await feed.finish(routes, session)
        finally:
            await feed.close()

    if trading == SIMULATED:
        asyncio.run(backtest())
    else:
        with trading_through(trading) if trading is not None else contextlib.nullcontext():
            asyncio.run(hand_over())  # subscribe() in a handler changes nothing here: no stream runs
    if failures and not keep_going:
        listed = "\n".join(failure for failure, _, _ in failures)
        _, first, raised_at = failures[0]
        # Its traceback from the handler's frame on, not through deliver(): the student's line
        # is what pytest shows first (and Python's own format, --tb=native, too).
        raise HandlersFailed(f"{len(failures)} of the messages made a handler raise:\n{listed}") from \
            first.with_traceback(raised_at)
    return session


def as_datetime(value: Any) -> Any:
    """A time in a message given to run_handlers(): msgpack's Timestamp, or RFC 3339 text as
    Alpaca's JSON frames have it ("2026-12-05T15:00:00Z"), as a datetime; else as it is."""
    if isinstance(value, msgpack.Timestamp):
        return value.to_datetime()
    if isinstance(value, str):
        return rfc3339(value)
    return value


def as_wire(message: dict[str, Any]) -> dict[str, Any]:
    """A message given to run_handlers(), as the stream has it: Alpaca's, times as datetimes."""
    try:
        if "T" not in message:
            return from_json(message)
        return {**message, **{key: as_datetime(message[key]) for key in TIMES if key in message}}
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError("not a message as Alpaca sends it, nor as --json prints it: "
                         f"{message!r}") from error
