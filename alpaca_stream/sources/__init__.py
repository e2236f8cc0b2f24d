"""Where records come from, one module each: Alpaca's stock stream (stocks.py) and its crypto
stream (crypto.py), the local server's demo data through the same stream (demo.py), a NATS
server that a --publish feeder publishes to (nats.py), and a --json recording (recording.py).
Each is a Source; the supervisor runs any number of them side by side, in one event loop."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from alpaca_stream.handlers import Route
from alpaca_stream.records import RecordType
from alpaca_stream.session import Session
from alpaca_stream.subscriptions import Subscriptions


class Source(Protocol):
    """An endpoint with its channels and symbols (subscriptions), its record table (types:
    Alpaca's "T" -> the kind and its record), and its own way of going on after a fault.
    Entered (async with) before anything streams: what it needs is opened or checked then;
    run() then delivers its messages until it has no more, or for ever."""

    subscriptions: Subscriptions

    @property
    def types(self) -> Mapping[str, tuple[str, RecordType]]: ...

    async def __aenter__(self) -> object: ...

    async def __aexit__(self, *exc_info: object) -> None: ...

    async def run(self, routes: dict[str, Route], session: Session) -> None: ...
