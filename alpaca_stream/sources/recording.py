"""--replay: a recording of --json lines (python websocket_stream.py --json > FILE), read into
the same handlers as the stream's messages, in its order: as fast as they take them, or at the
pace of their timestamps. Through a backtest (backtest.py): trading_client() gives the
handlers an account whose orders fill at the recording's prices."""

from __future__ import annotations

import asyncio
import codecs
import itertools
import logging
import os
import re
import sys
import time
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any, TextIO

import orjson

from alpaca_stream.errors import ConfigError
from alpaca_stream.handlers import Route
from alpaca_stream.orders import Costs
from alpaca_stream.records import either_market_types, from_json, from_json_line
from alpaca_stream.result import FillsCsv
from alpaca_stream.session import Session
from alpaca_stream.sources.backtest import Feed
from alpaca_stream.subscriptions import Subscriptions

log = logging.getLogger("alpaca_stream")

REPLAY_BATCH = 1000  # lines of a --replay file handed over at a time, as a frame: a flush each
PERIOD_STARTS = ("b", "u", "d")  # bars: their timestamp is the start of their minute or day
TERMINAL_LINE = re.compile(r"\d\d:\d\d:\d\d\.\d{3}Z \w")  # show()'s text: "19:25:01.123Z trade  SPY ..."
LOG_LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ ")  # logs.py's: "2026-11-24 21:35:43Z ..."
HOW_TO_RECORD = ("with handlers that call show() (as the script's own do):\n"
                 "python websocket_stream.py --demo --json > session.jsonl")


class Played:
    """What a replay of past messages is, whatever they come from: a source with no connection,
    of every market, whose messages go through the feed of its backtest (costs: its; fills:
    --fills's file) batch by batch, each a frame (batches()). It ends when its messages do."""

    played = "recording"  # what its messages are, for the log

    def __init__(self, costs: Costs | None = None, fills: str | None = None) -> None:
        self.fills = fills
        self.types = either_market_types()  # messages of every market alike
        self.subscriptions = Subscriptions(offline=True)  # subscribe() changes nothing here
        self.feed = Feed(costs, self.played)
        self.session: Session | None = None  # the run's, once it runs

    def open_feed(self, read_from: str = "") -> None:
        """--fills' file (not read_from, the file played), and the backtest's account, at
        trading_client()'s first call; ConfigError if the file cannot be written."""
        if self.fills is not None:
            self.feed.ledger.csv = open_fills(self.fills, read_from)
        self.feed.open()

    async def __aexit__(self, *exc_info: object) -> None:
        self.feed.result_so_far(self.session)  # a run stopped (Ctrl+C) before its end has one too
        await self.feed.close()

    async def run(self, routes: dict[str, Route], session: Session) -> None:
        """Each batch through the feed to the handlers, as a frame; then the feed's end."""
        self.session = session
        async for messages in self.batches(session):
            await self.feed.replay(messages, routes, session)
            sys.stdout.flush()
            await asyncio.sleep(0)  # the loop's other tasks (the heartbeat, the clients of --serve) run
        await self.feed.finish(routes, session)

    def batches(self, session: Session) -> AsyncIterator[list[dict[str, Any]]]:
        raise NotImplementedError


class Recording(Played):
    """The recording in the file at path; speed: times the recorded pace, 0 as fast as the
    handlers take it; costs: its backtest's; fills: --fills's file. It ends when the file does."""

    def __init__(self, path: str, speed: float = 0.0, costs: Costs | None = None,
                 fills: str | None = None) -> None:
        super().__init__(costs, fills)
        self.path, self.speed = path, speed

    async def __aenter__(self) -> Recording:
        self.file = open_recording(self.path)  # a bad file: exit 2, before anything streams
        try:
            self.open_feed(self.path)
        except ConfigError:
            self.file.close()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.file.close()
        await super().__aexit__()

    def batches(self, session: Session) -> AsyncIterator[list[dict[str, Any]]]:
        return replayed(self.file, self.speed, session)


def open_recording(path: str) -> TextIO:
    """--replay's file of --json lines, open at its start; ConfigError if it cannot be read, or
    if it is empty or most of its first lines (a batch of them) are not messages: a file of
    another kind, with a line or two of JSON in it (a README with an example)."""
    try:
        with open(path, "rb") as file:
            head = file.read(2)
        # Windows PowerShell 5.1's > writes UTF-16, with a byte order mark; the rest UTF-8.
        encoding = "utf-16" if head in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE) else "utf-8-sig"
        # errors="replace": an undecodable line is a broken line, skipped, not a traceback;
        # replayed() closes the file.
        recording = open(path, encoding=encoding, errors="replace")  # noqa: SIM115
    except OSError as error:
        raise ConfigError(f"--replay: cannot read {path}:\n{error.strerror}") from None
    first = list(itertools.islice(recording, REPLAY_BATCH))
    messages, broken = from_json_lines(first)
    if not first or len(broken) > len(messages):
        recording.close()
        if not first:
            raise ConfigError(f"--replay: {path} is empty. To record one:\n"
                              "python websocket_stream.py --demo --json > session.jsonl")
        printed_lines = [first[index].strip() for index in broken if printed(first[index])]
        what = "not messages as --json prints them"
        if len(printed_lines) * 2 > len(broken):
            what = (f"printed lines, not --json messages (the first: \"{excerpt(printed_lines[0])}\"): "
                    f"{how_printed(printed_lines)}")
        raise ConfigError(f"--replay: {path} is not a recording: {len(broken)} of its first {len(first)} lines "
                          f"are {what}. To record one, {HOW_TO_RECORD}")
    recording.seek(0)
    return recording


def printed(line: str) -> bool:
    """Whether a line that is no message is text that was printed (a handler's print(), the
    terminal's lines of a run without --json), not a message cut short or garbled: no JSON."""
    text = line.strip()
    return bool(text) and text[0] not in "{[" and "\ufffd" not in text  # U+FFFD: bytes not UTF-8


def how_printed(lines: list[str]) -> str:
    """How a recording came to hold these printed lines: the terminal's, the log's, or else a
    handler's."""
    how = []
    if any(TERMINAL_LINE.match(line) for line in lines):
        how.append("the terminal's text, of a run without --json")
    if any(LOG_LINE.match(line) for line in lines):  # recorded with 2>&1
        how.append("the log's lines are in it: record with > file alone, the log goes to stderr")
    return "; ".join(how) or ("what a handler prints goes into a recording, and the messages of one that does "
                              "not call show() do not")


def excerpt(line: str, most: int = 50) -> str:
    return line if len(line) <= most else line[:most - 3] + "..."


async def replayed(recording: TextIO, speed: float, session: Session) -> AsyncIterator[list[dict[str, Any]]]:
    """--replay: the messages of a --json recording, in its order, a batch at a time; as fast as
    they are taken, or with a speed, at the pace of their timestamps times that. A broken line
    is skipped and counted, a printed one apart, each kind with a warning at its first."""
    log.info("replaying %s%s; Ctrl+C to stop", recording.name, f" at {speed:g}x" if speed else "")
    start: tuple[float, datetime] | None = None  # the first paced message: when, and its timestamp
    read = 0  # lines
    with recording:
        # At a pace, a line at a time: each message waits for its time.
        while lines := list(itertools.islice(recording, 1 if speed else REPLAY_BATCH)):
            messages, broken = from_json_lines(lines)
            printed_lines = [index for index in broken if printed(lines[index])]
            garbled = [index for index in broken if index not in printed_lines]
            if garbled and not session.skipped:
                log.warning("line %d is not a --json message: skipped\n"
                            "(any more are counted in the summary)", read + garbled[0] + 1)
            if printed_lines and not session.printed:
                texts = [lines[index].strip() for index in printed_lines]
                line = texts[0]
                log.warning('line %d is printed text, not a --json message: skipped (any more are counted in the '
                            'summary): "%s": %s. To record them all, %s', read + printed_lines[0] + 1,
                            excerpt(line), how_printed(texts), HOW_TO_RECORD)
            session.skipped += len(garbled)
            session.printed += len(printed_lines)
            read += len(lines)
            if speed and messages:
                start = await keep_pace(messages[0], speed, start)
            yield messages


def open_fills(path: str, recording: str) -> FillsCsv:
    """--fills' CSV file, with its header; ConfigError if it cannot be written (or is the
    recording, which it would overwrite)."""
    try:
        if recording and os.path.exists(path) and os.path.samefile(path, recording):
            raise ConfigError(f"--fills {path} is the recording: it would be overwritten")
        return FillsCsv(open(path, "w", encoding="utf-8", newline=""))  # noqa: SIM115  # closed by the feed
    except OSError as error:
        raise ConfigError(f"--fills: cannot write {path}:\n{error.strerror}") from None


def from_json_lines(lines: list[str]) -> tuple[list[dict[str, Any]], list[int]]:
    """Lines of --json as Alpaca sent them, and the indexes of the broken ones. Parsed in one
    call of orjson, which takes half the time of the json module's (measured); one by one if
    any is broken, or is JSON that orjson does not take and the json module does (NaN)."""
    try:
        parsed = orjson.loads(f"[{','.join(lines)}]")
        if len(parsed) == len(lines):  # else a line held two objects, or half of one
            return [from_json(fields) for fields in parsed], []
    except (ValueError, KeyError, TypeError):
        pass
    messages = [from_json_line(line) for line in lines]
    broken = [index for index, message in enumerate(messages) if message is None]
    return [message for message in messages if message is not None], broken


async def keep_pace(message: dict[str, Any], speed: float,
                    start: tuple[float, datetime] | None) -> tuple[float, datetime] | None:
    """Wait until the message is due, at speed times the pace of the timestamps since start (the
    first paced message: when it was replayed, and its timestamp). Returns start, or this one."""
    when = message.get("t")
    if message["T"] in PERIOD_STARTS or not isinstance(when, datetime) or not when.tzinfo:
        return start
    if start is None:
        return time.monotonic(), when
    await asyncio.sleep(start[0] + (when - start[1]).total_seconds() / speed - time.monotonic())
    return start


