"""The reconnect wrapper: a connection opened again after every fault, with exponential
backoff and jitter, for as long as the run lasts. What it gives up on, it raises: a refusal
that retrying cannot cure (errors.FATAL_ADVICE) or a wrong URL."""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Protocol

import websockets

from alpaca_stream.connection import http_status
from alpaca_stream.errors import FATAL_ADVICE, RETRY_ADVICE, AlpacaRefused, CannotConnect, NoData
from alpaca_stream.handlers import Route
from alpaca_stream.session import Session

log = logging.getLogger("alpaca_stream")

RETRY_MIN, RETRY_MAX = 1.0, 30.0  # reconnect backoff, seconds
# Faults of the network or the server: reconnect. Anything else is a bug and ends the run.
CONNECTION_FAULTS = (OSError, asyncio.TimeoutError, websockets.WebSocketException, ValueError, LookupError,
                     CannotConnect)


class Reconnecting(Protocol):
    """What the wrapper needs of a connection: the market data's (connection.py), or the
    trading stream's (sources/trading.py)."""

    market: str
    last_data: float  # time.monotonic() of its latest data
    silent_reconnects: int  # in a row, for want of data

    async def stream_once(self, routes: dict[str, Route], session: Session) -> None: ...

    async def close(self) -> None: ...


async def keep_connected(connection: Reconnecting, routes: dict[str, Route], session: Session) -> None:
    """Run connection.stream_once() forever: reconnect and subscribe again after every fault,
    with exponential backoff and jitter (backoff_delay), starting over once messages flow."""
    failures = 0
    while True:
        had_data, silent = connection.last_data, False
        try:
            await connection.stream_once(routes, session)
            reason = "the server closed the connection"
        except BrokenPipeError:
            raise  # an OSError, but of stdout, not of the network
        except AlpacaRefused as refusal:
            if refusal.code in FATAL_ADVICE or refusal.advice:
                raise
            reason = f"Alpaca refused: {refusal}"
            if refusal.code in RETRY_ADVICE and refusal.code not in session.advised:
                session.advised.add(refusal.code)
                reason += "\n" + RETRY_ADVICE[refusal.code]
        except NoData as silence:
            reason, silent = str(silence), True
        except CONNECTION_FAULTS as error:
            reason = describe(error)
            log.debug("the fault in full: %r", error)
        finally:
            await connection.close()
        if connection.last_data > had_data:
            failures = connection.silent_reconnects = 0
        failures += 1
        connection.silent_reconnects += silent
        delay = backoff_delay(failures)
        session.reconnects += 1
        # The stock stream's lines as they always were; another's say which, as several may run.
        which = "" if connection.market == "stocks" else f"the {connection.market} stream"
        log.warning("%s", f"{which}: {reason}" if which else reason)
        log.info("reconnecting %sin %.2f s (attempt %d)", f"{which} " if which else "", delay, failures)
        await asyncio.sleep(delay)


def backoff_delay(attempt: int) -> float:
    """Seconds to wait before reconnect attempt 1, 2, 3...: doubling from RETRY_MIN up to
    RETRY_MAX, with "equal jitter" (between half and all of that) so that many clients cut off
    at once do not come back at once. Alpaca's SDKs do the same."""
    ceiling = min(RETRY_MAX, RETRY_MIN * 2 ** min(attempt - 1, 10))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


def describe(error: BaseException) -> str:
    """A fault, in words for the log."""
    if isinstance(error, websockets.ConnectionClosed):
        close_frame = error.rcvd or error.sent  # sent: we closed it, e.g. "keepalive ping timeout"
        return "connection lost" + (f" ({close_frame.reason})" if close_frame and close_frame.reason else "")
    if isinstance(error, asyncio.TimeoutError):
        return "no answer from the server in time"
    status = http_status(error) if isinstance(error, websockets.InvalidHandshake) else None
    if status:
        return f"the server refused the websocket: HTTP {status}"
    if isinstance(error, OSError):
        return f"connection failed: {error.strerror or type(error).__name__}"
    return str(error) if isinstance(error, CannotConnect) else f"{type(error).__name__}: {error}"
