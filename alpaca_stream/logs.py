"""The log on stderr: a line per event, in UTC like the data, every line within 80 columns;
or, with --log-format json, one JSON object a line for a log collector."""

from __future__ import annotations

import json
import logging
import os
import sys
import textwrap
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import datetime, timezone

WIDTH = 80  # columns of a terminal: a longer line wraps, and the screen is unreadable


def fitted(text: str) -> str:
    """text with each line within WIDTH columns, broken at spaces (a long URL stays whole), and
    the lines after the first indented: how the log and the errors of the options print."""
    lines = text.split("\n")
    return "\n".join(textwrap.fill(line, WIDTH, initial_indent="  " if n else "", subsequent_indent="  ",
                                    break_long_words=False, break_on_hyphens=False)
                      for n, line in enumerate(lines))


class LogFormatter(logging.Formatter):
    """2026-11-24 21:35:43Z warning: ..., in UTC like the data, so the two line up; fitted in
    WIDTH columns, lines after a message's first indented (a traceback's too)."""

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.fromtimestamp(record.created, timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")
        level = "" if record.levelno == logging.INFO else f"{record.levelname.lower()}: "
        text = fitted(f"{when} {level}{record.getMessage()}")
        if record.exc_info:
            text += ("\n" + self.formatException(record.exc_info)).replace("\n", "\n  ")
        return text


class JsonLogFormatter(logging.Formatter):
    """--log-format json: one object a line, for log collectors: time, level, message, and the
    fields the message is about (a heartbeat's counts, say). The message on one line: its
    breaks are for a terminal's 80 columns."""

    def format(self, record: logging.LogRecord) -> str:
        message = " ".join(line.strip() for line in record.getMessage().splitlines())
        entry = {"time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
                 "level": record.levelname.lower(), "message": message, **getattr(record, "fields", {})}
        if record.exc_info:
            entry["traceback"] = self.formatException(record.exc_info)
        return json.dumps(entry)


class StderrHandler(logging.StreamHandler):
    """The log's handler, on stderr. When the reader of stderr has gone (2>&1 | head, with no
    data on stdout), a write raises BrokenPipeError: the log goes nowhere from then on, and
    gone() is called, to end the run as when the reader of the data goes."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)
        self.reader_gone = False
        self.gone: Callable[[], object] = lambda: None
        self.at_once = False

    @contextmanager
    def written_at_once(self) -> Iterator[None]:
        """In the block, lines go straight to stderr's file descriptor, past the stream's
        buffer: for a signal handler (cli.py's), which may have cut into a write to that buffer,
        where a second write raises RuntimeError (reentrant call)."""
        self.at_once = True
        try:
            yield
        finally:
            self.at_once = False

    def emit(self, record: logging.LogRecord) -> None:
        if not self.at_once:
            super().emit(record)
            return
        with suppress(OSError):  # the reader gone: nothing to tell
            os.write(self.stream.fileno(), (self.format(record) + self.terminator).encode(
                self.stream.encoding or "utf-8", errors="replace"))

    def handleError(self, record: logging.LogRecord) -> None:
        if isinstance(sys.exc_info()[1], BrokenPipeError) and not self.reader_gone:
            self.reader_gone = True
            # What is still buffered, and every line after it, goes to devnull, without an error.
            os.dup2(os.open(os.devnull, os.O_WRONLY), self.stream.fileno())
            self.gone()
            return
        super().handleError(record)
