"""Fixtures: the local Alpaca server in a thread of the test process, and the script as a real
subprocess, run from a copy in an empty folder so that no config.py or .env of yours is read."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the script and the server are modules at the top of the project

from local_alpaca_server import AlpacaStreamServer, Faults  # noqa: E402
FAKE_KEY = "FAKE-TEST-KEY-ID-0001"
FAKE_SECRET = "FAKE-TEST-SECRET-DO-NOT-USE-0001"


class ServerThread:
    """An AlpacaStreamServer on its own event loop in a thread; stop() and start() keep the port."""

    def __init__(self, **options: object) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = AlpacaStreamServer(**options)
        self.start()

    def call(self, coroutine: object) -> object:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=10)

    def start(self) -> None:
        self.call(self.server.start())

    def stop(self) -> None:
        self.call(self.server.stop())

    def close(self) -> None:
        self.stop()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()

    def plan(self, *faults: Faults) -> None:
        self.loop.call_soon_threadsafe(self.server.plan, *faults)

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def connections(self) -> list:
        return self.server.connections


@pytest.fixture
def make_server() -> Iterator[Callable[..., ServerThread]]:
    servers: list[ServerThread] = []

    def make(**options: object) -> ServerThread:
        servers.append(ServerThread(**options))
        return servers[-1]

    yield make
    for server in servers:
        server.close()


@pytest.fixture
def server(make_server: Callable[..., ServerThread]) -> ServerThread:
    """A server sending 200 trades a second to any fake keys."""
    return make_server(rate=200, seed=1)


class Script:
    """websocket_stream.py running as a subprocess; its output is collected by two threads."""

    def __init__(self, process: subprocess.Popen) -> None:
        self.process = process
        self.out_lines: list[str] = []
        self.err_lines: list[str] = []
        self.ended_at: float | None = None
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

    def wait_for(self, condition: Callable[[], object], timeout: float = 15, what: str = "") -> None:
        """Wait until condition() is true; fail, showing stderr, if it is not within timeout s."""
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                self.kill()
                pytest.fail(f"not seen within {timeout} s: {what}\n--- stderr:\n{self.stderr}")
            time.sleep(0.02)

    def wait_for_stderr(self, text: str, timeout: float = 15) -> None:
        self.wait_for(lambda: text in self.stderr, timeout, repr(text))

    def wait_for_trades(self, count: int, timeout: float = 15) -> None:
        self.wait_for(lambda: len(self.out_lines) >= count, timeout, f"{count} trades on stdout")

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
        code = self.process.wait(timeout)
        took = time.monotonic() - sent
        self.finish()
        return code, took

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()


def script_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("APCA_")}
    env.update(PYTHONUNBUFFERED="0", PYTHONIOENCODING="utf-8",
               APCA_API_KEY_ID=FAKE_KEY, APCA_API_SECRET_KEY=FAKE_SECRET)
    env.update(extra)
    return {k: v for k, v in env.items() if v is not None}


@pytest.fixture
def copy_script(tmp_path: Path) -> Callable[..., Path]:
    """Copy the script (and the server, for --demo) into an empty folder; its path there."""

    def copy(*names: str) -> Path:
        for name in ("websocket_stream.py", *names):
            shutil.copy(ROOT / name, tmp_path / name)
        return tmp_path / "websocket_stream.py"

    return copy


@pytest.fixture
def start_script(copy_script: Callable[..., Path]) -> Iterator[Callable[..., Script]]:
    """Start the script with arguments; fake keys in the environment unless env says otherwise."""
    scripts: list[Script] = []

    def start(*args: str, env: dict[str, str] | None = None, files: tuple[str, ...] = ("local_alpaca_server.py",),
              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, **popen: object) -> Script:
        path = copy_script(*files)
        process = subprocess.Popen([sys.executable, str(path), *args], cwd=path.parent,
                                   env=env if env is not None else script_env(), stdin=stdin,
                                   stdout=stdout, stderr=subprocess.PIPE, text=True, **popen)
        scripts.append(Script(process))
        return scripts[-1]

    yield start
    for script in scripts:
        script.kill()
        script.finish()
