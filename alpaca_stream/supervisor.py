"""The sources side by side, in one event loop, under one policy. Each runs in a task of its
own and mends its own faults: a dropped connection, or a refusal that a retry may cure (406,
say), reconnects that source alone (reconnect.py), never disturbing the others. What one of
them cannot mend (a refusal that retrying cannot cure, errors.FATAL_ADVICE; a wrong URL; a
bug) ends them all, and is raised to whoever runs them.

stream() is the stream awaited from a program's own event loop (a notebook, a web app); the
command line (cli.py) runs the same supervise() with Ctrl+C and the exit statuses around it."""

from __future__ import annotations

import asyncio
import time
from contextlib import AsyncExitStack

from alpaca_stream.handlers import Handlers, routes_for
from alpaca_stream.session import Session
from alpaca_stream.sources import Source
from alpaca_stream.subscriptions import streaming


async def stream(*sources: Source, handlers: Handlers, session: Session | None = None) -> Session:
    """Stream from these sources into the handlers (by kind: {"trade": on_trade, ...}), in a
    program's own event loop, until each source has ended (a recording does; a stream never)
    or the task awaiting this is cancelled; then what was counted. It installs no signal
    handler and configures no logging; it raises what ends the stream otherwise (AlpacaRefused,
    ConfigError, ...), for the program to decide. For example, in a notebook:

        from alpaca_stream import StockStream, load_keys, stream
        task = asyncio.create_task(stream(StockStream(["SPY"], keys=load_keys(Path())),
                                          handlers={"trade": on_trade}))
        ...
        task.cancel()
    """
    session = session or Session()
    async with AsyncExitStack() as stack:
        for source in sources:
            await stack.enter_async_context(source)  # each closed again on the way out
        await supervise(sources, handlers, session)
    return session


async def supervise(sources: tuple[Source, ...] | list[Source], handlers: Handlers, session: Session) -> None:
    """Run the sources (entered already) side by side until each has ended; the first that
    raises ends the others, and its error is raised here."""
    if session.started is None:
        session.started = time.monotonic()
    for source in sources:  # a stream's market is counted from 0, for --heartbeat to show it quiet
        if market := getattr(source, "market", ""):  # a recording's are those of its records
            session.markets.setdefault(market, 0)
    # subscribe() and unsubscribe() go to the stream that takes their symbols.
    online = [source.subscriptions for source in sources if not source.subscriptions.offline]
    told: set[str] = set()  # what the log says once a run ("Ctrl+C to stop"), whichever stream says it
    for source in sources:
        source.subscriptions.told = told
    tasks = [asyncio.create_task(source.run(routes_for(handlers, source.types), session)) for source in sources]
    try:
        with streaming(*(online or [sources[0].subscriptions])):
            for ended in asyncio.as_completed(tasks):
                await ended  # raises what ended that source, if anything did
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
