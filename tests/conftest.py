"""Fixtures: the local Alpaca server (in the test's event loop, or in a thread of its own), the
tests' own handlers, and the script as a real subprocess, run from a copy in an empty folder so
that no config.py or .env of yours is read.

Every test has a deadline: pytest-timeout's (pyproject.toml) as a backstop, and a shorter one of
its own wherever it waits for something."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import msgpack
import pytest

from alpaca_stream.handlers import Handler
from alpaca_stream.keys import Keys
from alpaca_stream.records import KIND, MESSAGE_TYPES, Record
from alpaca_stream.server import AlpacaStreamServer, Faults
from alpaca_stream.session import Session
from alpaca_stream.sources.stocks import StockStream
from alpaca_stream.supervisor import supervise

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # websocket_stream.py, a script at the top of the project (not installed)

FAKE_KEY = "FAKE-TEST-KEY-ID-0001"
FAKE_SECRET = "FAKE-TEST-SECRET-DO-NOT-USE-0001"
KEYS = Keys(FAKE_KEY, FAKE_SECRET, "the tests")
KINDS = [kind for kind, _ in MESSAGE_TYPES.values()]
T = TypeVar("T")
POSIX_ONLY = pytest.mark.skipif(sys.platform == "win32", reason="sends POSIX signals to the script")


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """How many tests run side by side: two a core for the whole suite, whose tests mostly wait
    for a server, a script or a retry (on 2 cores, 459 tests: 1 at a time 339 s; 3 side by side
    143 s, 4 134 s, 6 130 s, where the 2 cores were busy); none for files or tests named on the
    command line, as `python -m pytest tests/test_my_bot.py`, which starting workers would slow."""
    if config.option.file_or_dir:
        return 0
    return 2 * (os.cpu_count() or 1)


def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> None:
    """Say, under a failed printout test, what a student who changed the printing should do."""
    module = getattr(item, "module", None)
    if call.excinfo is not None and module is not None and module.__name__ == "test_printout":
        item.add_report_section("call", "note", "This test checks the default printout of the handlers in "
                                "websocket_stream.py.\nIf you changed the printing, change or delete this test.")


# -- the tests' own handlers, in-process ---------------------------------------------------------


class Recorder:
    """Handlers for every kind of message that keep what they get, in order."""

    def __init__(self) -> None:
        self.messages: list[Record] = []

    @property
    def handlers(self) -> dict[str, Handler]:
        return dict.fromkeys(KINDS, self.record)

    async def record(self, message: Record) -> None:
        self.messages.append(message)

    def of(self, kind: str) -> list[Record]:
        return [message for message in self.messages if KIND[type(message)] == kind]


def as_received(message: dict) -> dict:
    """A message the server sent, as the client decodes it (timestamps as datetimes)."""
    received: dict = msgpack.unpackb(msgpack.packb(message), timestamp=3)
    return received


async def stream_until(server: AlpacaStreamServer, handlers: dict[str, Handler], done: Callable[[], object],
                       *, channels: tuple[str, ...] = ("trades",), symbols: tuple[str, ...] = ("SPY", "TSLA"),
                       timeout: float = 10.0, url: str | None = None, **given: Any) -> Session:
    """Stream from `server` in this event loop, with these handlers and the package's own stock
    stream (its connection, parsing and reconnect wrapper) under its supervisor, until done() is
    true; then stop. given: more of StockStream's options (data_timeout=5, say)."""
    source = StockStream(symbols, channels, keys=KEYS, url=url or server.url, **given)
    session = Session()
    deadline = time.monotonic() + timeout
    async with supervised([source], handlers, session) as streaming:
        while not done():
            if streaming.done():
                streaming.result()  # raises what ended it
                raise AssertionError("the stream ended by itself")
            if time.monotonic() > deadline:
                raise AssertionError(f"not done within {timeout} s")
            await asyncio.sleep(0.01)
    return session


@asynccontextmanager
async def supervised(sources: list[Any], handlers: Mapping[str, Handler],
                     session: Session) -> AsyncIterator[asyncio.Task]:
    """The package's supervisor running these sources with these handlers in this event loop
    while in the block, then cancelled; the block gets its task (to see if it ended by itself)."""
    streaming = asyncio.create_task(supervise(sources, handlers, session))
    try:
        yield streaming
    finally:
        streaming.cancel()
        await asyncio.gather(streaming, return_exceptions=True)


async def until(condition: Callable[[], object], what: str, timeout: float = 10) -> None:
    """Wait, in a test's event loop, until condition() is true (a server's own record, say)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.01)


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coroutine)


def within(coroutine: Coroutine[Any, Any, object], seconds: float = 15) -> None:
    """Run a test's scenario with a deadline of its own."""
    run(asyncio.wait_for(coroutine, seconds))


# -- the server in a thread, for the script as a subprocess ---------------------------------------


class LoopThread:
    """An event loop of its own in a thread, for what runs beside a test's blocking code (a
    server, a NATS client, a feeder): call() runs a coroutine there and waits for its result."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def call(self, coroutine: Awaitable[T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=10)  # type: ignore[arg-type]

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


class ServerThread(LoopThread):
    """An AlpacaStreamServer on its own event loop in a thread; stop() and start() keep the port."""

    def __init__(self, **options: object) -> None:
        super().__init__()
        self.server = AlpacaStreamServer(**options)  # type: ignore[arg-type]
        self.start()

    def start(self) -> None:
        self.call(self.server.start())

    def stop(self) -> None:
        self.call(self.server.stop())

    def close(self) -> None:
        self.stop()
        super().close()

    def plan(self, *faults: Faults) -> None:
        self.loop.call_soon_threadsafe(self.server.plan, *faults)

    def cue(self, *events: str) -> None:
        self.loop.call_soon_threadsafe(self.server.cue, *events)

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def connections(self) -> list:
        return self.server.connections


@pytest.fixture
def made_servers() -> list[ServerThread]:
    """The local servers a test has made (make_server), the first first."""
    return []


@pytest.fixture
def make_server(made_servers: list[ServerThread]) -> Iterator[Callable[..., ServerThread]]:
    def make(**options: object) -> ServerThread:
        made_servers.append(ServerThread(**options))
        return made_servers[-1]

    yield make
    for server in made_servers:
        server.close()


@pytest.fixture
def server(make_server: Callable[..., ServerThread]) -> ServerThread:
    """A server sending 200 ticks a second to any fake keys."""
    return make_server(rate=200, seed=1)


# -- the script as a subprocess --------------------------------------------------------------------


def unwrapped(text: str) -> str:
    """The script's log or errors with their line breaks undone: it fits each message in 80
    columns, going on, on lines indented by two spaces."""
    return text.replace("\n  ", " ")


class Script:
    """websocket_stream.py running as a subprocess; its output is collected by two threads."""

    def __init__(self, process: subprocess.Popen) -> None:
        self.process = process
        self.out_lines: list[str] = []
        self.err_lines: list[str] = []
        self._readers = [threading.Thread(target=self._read, args=(pipe, lines), daemon=True)
                         for pipe, lines in ((process.stdout, self.out_lines), (process.stderr, self.err_lines))
                         if pipe is not None]
        for reader in self._readers:
            reader.start()

    def _read(self, pipe, lines: list[str]) -> None:
        for line in pipe:
            lines.append(line.rstrip("\n"))

    @property
    def stdout(self) -> str:
        return "\n".join(self.out_lines)

    @property
    def stderr(self) -> str:
        return "\n".join(self.err_lines)

    @property
    def said(self) -> str:
        """stderr with the log's line breaks undone: what each message says, whatever its width."""
        return unwrapped(self.stderr)

    def wait_for(self, condition: Callable[[], object], timeout: float = 15, what: str = "") -> None:
        """Wait until condition() is true; fail, showing stderr, if it is not within timeout s."""
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                self.kill()
                pytest.fail(f"not seen within {timeout} s: {what}\n--- stderr:\n{self.stderr}")
            time.sleep(0.02)

    def wait_for_stderr(self, text: str, timeout: float = 15) -> None:
        self.wait_for(lambda: unwrapped(text) in self.said, timeout, repr(text))

    def wait_for_lines(self, count: int, timeout: float = 15) -> None:
        self.wait_for(lambda: len(self.out_lines) >= count, timeout, f"{count} lines on stdout")

    def finish(self, timeout: float = 15) -> int:
        """Wait for the exit; the status. The readers are joined, so all output is in."""
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"still running after {timeout} s\n--- stderr:\n{self.stderr}")
        for reader in self._readers:
            reader.join(timeout=5)
        return code

    def stop(self, sig: int, timeout: float = 15) -> tuple[int, float]:
        """Send a signal; the exit status and the seconds it took to exit."""
        sent = time.monotonic()
        self.process.send_signal(sig)
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"still running {timeout} s after signal {sig}\n--- stderr:\n{self.stderr}")
        took = time.monotonic() - sent
        self.finish()
        return code, took

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()


def script_env(**extra: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("APCA_")}
    env.update(PYTHONUNBUFFERED="0", PYTHONIOENCODING="utf-8", APCA_API_KEY_ID=FAKE_KEY,
               APCA_API_SECRET_KEY=FAKE_SECRET)
    env.update(extra)  # type: ignore[arg-type]
    return {k: v for k, v in env.items() if v is not None}  # None: not in the environment



# Ctrl+C as a user presses it, at the start of one module's import: a sitecustomize the script's
# Python runs before it, with a finder asked before the others.
INTERRUPT_AT_IMPORT = """import importlib.abc, os, signal, sys
class InterruptAt(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == os.environ["INTERRUPT_AT_IMPORT"]:
            sys.meta_path.remove(self)
            signal.raise_signal(signal.SIGINT)  # KeyboardInterrupt, raised here and now
        return None
sys.meta_path.insert(0, InterruptAt())
"""


def ctrl_c_at_import(module: str, folder: Path) -> dict[str, str]:
    """The environment of a script that gets Ctrl+C at the start of `module`'s import (its
    sitecustomize written in folder/hook)."""
    hook = folder / "hook"
    hook.mkdir(exist_ok=True)
    (hook / "sitecustomize.py").write_text(INTERRUPT_AT_IMPORT, encoding="utf-8")
    return script_env(PYTHONPATH=str(hook), INTERRUPT_AT_IMPORT=module)

@pytest.fixture
def copy_script(tmp_path: Path) -> Callable[..., Path]:
    """Copy the script and these files of the project into an empty folder; the folder."""

    def copy(*names: str) -> Path:
        for name in ("websocket_stream.py", *names):  # the package is installed (requirements.txt)
            target, text = tmp_path / Path(name).name, (ROOT / name).read_bytes()
            # Not written again when it is the same: a script started from it may be reading it,
            # and a file rewritten under it was cut short (a test that starts scripts side by side).
            if not target.exists() or target.read_bytes() != text:
                target.write_bytes(text)
        return tmp_path

    return copy


# Options after which the script trades nowhere, or where the test says: else at its default,
# Alpaca's paper API.
TRADING_ELSEWHERE = ("--demo", "--trading-url", "--live", "--source", "--replay", "--history")


@pytest.fixture
def start_script(copy_script: Callable[..., Path], make_server: Callable[..., ServerThread],
                 made_servers: list[ServerThread]) -> Iterator[Callable[..., Script]]:
    """Start the script with arguments, fake keys in the environment unless env says otherwise.
    bot=True runs it with the tests' own handlers (tests/recording_bot.py): one JSON line each.
    edit(path) may change the copy of the script before it starts. A run that would trade at
    Alpaca's paper API trades at a local server's paper broker (the test's first, or one made
    for it): a handler of the student's that places orders (the README's example pasted) sends
    them there, so that the suite needs no network whatever the handlers do."""
    scripts: list[Script] = []

    def trading_here(args: tuple[str, ...]) -> list[str]:
        if any(arg.partition("=")[0] in TRADING_ELSEWHERE for arg in args):
            return []
        broker = made_servers[0] if made_servers else make_server(rate=None)
        return ["--trading-url", broker.server.trading_url]

    def start(*args: str, bot: bool = False, env: dict[str, str] | None = None,
              edit: Callable[[Path], None] | None = None,
              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen: Any) -> Script:
        folder = copy_script(*(["tests/recording_bot.py"] if bot else []))
        if edit:
            edit(folder / "websocket_stream.py")  # as a student edits their copy
        program = folder / ("recording_bot.py" if bot else "websocket_stream.py")
        process = subprocess.Popen([sys.executable, str(program), *args, *trading_here(args)], cwd=folder,
                                   env=env if env is not None else script_env(), stdin=stdin,
                                   stdout=stdout, stderr=stderr, text=True, **popen)
        scripts.append(Script(process))
        return scripts[-1]

    yield start
    for script in scripts:
        script.kill()
        script.finish()
    # Whatever a test is about, each script's log fits a terminal of 80 columns.
    too_wide = wider_than_80([line for script in scripts for line in script.err_lines])
    assert not too_wide, "lines of the log wider than 80 columns:\n" + "\n".join(too_wide)


def wider_than_80(log: list[str]) -> list[str]:
    """The lines of a script's log that do not fit 80 columns. It breaks them at spaces, so a
    word longer than that (a long path) may go past; a JSON log (--log-format json) is for
    machines, an object a line."""
    return [line for line in log if len(line) > 80 and " " in line.strip() and not line.startswith("{")]
