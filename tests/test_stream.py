"""The stream's promises, in-process against the real local server, with handlers the tests
supply: they hold whatever a student writes in the script's handlers."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any
from unittest import mock

import msgpack
import pytest
from alpaca.data import models
from conftest import FAKE_KEY, FAKE_SECRET, KINDS, POSIX_ONLY, Recorder, as_received, run, stream_until

import websocket_stream as ws
from alpaca_stream.channels import ALPACA_CHANNELS, PAIR
from alpaca_stream.cli import stop_on_signals, until_stopped
from alpaca_stream.connection import check_alpaca_py, data_stream, why_not_connected
from alpaca_stream.errors import (
    EXIT_FORCED,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_UNEXPECTED,
    FATAL_ADVICE,
    RETRY_ADVICE,
    AlpacaRefused,
    ConfigError,
)
from alpaca_stream.handlers import Handler, in_background
from alpaca_stream.keys import KEY_ENV, SECRET_ENV
from alpaca_stream.logs import LogFormatter
from alpaca_stream.options import DATA_TIMEOUT, parse_args, settings_from
from alpaca_stream.reconnect import backoff_delay
from alpaca_stream.records import KIND, Bar, Record, Trade, UpdatedBar
from alpaca_stream.server import CUES, ERRORS, AlpacaStreamServer, Faults
from alpaca_stream.session import Session
from alpaca_stream.subscriptions import Subscriptions, log_subscription, streaming
from alpaca_stream.testing import run_handlers

ALL_CHANNELS = ALPACA_CHANNELS  # the stock stream's
# alpaca-py's model for each kind (LULDs have none): our records must carry its names.
ALPACA_MODELS = {"trade": models.Trade, "quote": models.Quote, "bar": models.Bar, "updated_bar": models.Bar,
                 "daily_bar": models.Bar, "status": models.TradingStatus, "correction": models.TradeCorrection,
                 "cancel": models.TradeCancel}


# -- every channel, each to its own handler ------------------------------------------------------


def test_every_channel_reaches_its_own_handler_as_a_record_with_alpaca_py_names():
    received: dict[str, list[Record]] = {kind: [] for kind in KINDS}

    def handler_for(kind: str) -> Handler:
        async def handler(message: Record) -> None:
            received[kind].append(message)
        return handler

    async def scenario() -> None:
        async with AlpacaStreamServer(rate=50, seed=2) as server:
            server.cue(*CUES)
            await stream_until(server, {kind: handler_for(kind) for kind in KINDS},
                               lambda: all(received.values()), channels=ALL_CHANNELS)

    run(scenario())
    for kind, messages in received.items():
        for message in messages:
            assert KIND[type(message)] == kind  # each kind reached its own handler only
        model = ALPACA_MODELS.get(kind)
        if model is None:
            continue
        first = messages[0]
        wire = {**first, "t": msgpack.Timestamp.from_datetime(first["t"])}
        parsed = model(first.symbol, {**wire, "t": wire["t"].to_datetime()})
        for name in first.fields:
            assert getattr(first, name) == getattr(parsed, name), (kind, name)


def test_a_record_has_every_field_of_its_kind_and_prints_its_fields_by_name():
    trade = Trade(as_received({"T": "t", "S": "SPY", "i": 7, "x": "V", "p": 601.5, "s": 100,
                                  "t": msgpack.Timestamp.from_unix_nano(10**18), "z": "B"}))
    assert trade.conditions is None and trade.tape == "B"  # "c" was left out: None, as in alpaca-py
    assert repr(trade).startswith("Trade(symbol='SPY', price=601.5, size=100, timestamp=datetime.datetime(2001")
    assert list(UpdatedBar.fields) == list(Bar.fields)


# -- exactly once, in order ------------------------------------------------------------------------


def test_every_message_reaches_its_handler_once_in_order_across_frames_and_reconnects():
    recorder = Recorder()

    async def scenario() -> AlpacaStreamServer:
        async with AlpacaStreamServer(rate=400, seed=3) as server:
            server.plan(Faults(drop_after=300))
            server.cue("correction", "cancel")
            await stream_until(server, recorder.handlers, lambda: len(recorder.messages) >= 600,
                               channels=("trades", "quotes"))
            return server

    server = run(scenario())
    first, second = server.connections
    sent = [as_received(message) for message in first.messages + second.messages]
    got = [dict(message) for message in recorder.messages]
    assert len(first.messages) == 300 and got[:300] == sent[:300]  # the whole first connection
    assert got == sent[: len(got)]  # then the second, with nothing lost, doubled or reordered
    assert {message["T"] for message in got} >= {"t", "q", "c", "x"}
    assert second.subscriptions["trades"] == ["SPY", "TSLA"] == second.subscriptions["quotes"]


def test_a_handler_that_raises_costs_that_message_only_and_is_reported_as_it_happened(caplog):
    handled: list[int] = []
    raised: list[int] = []

    async def on_trade(trade: Trade) -> None:
        if trade.id % 5 == 0:
            raised.append(trade.id)
            raise RuntimeError(f"my strategy has a bug at {trade.id}")
        handled.append(trade.id)

    async def scenario() -> tuple[AlpacaStreamServer, Session]:
        async with AlpacaStreamServer(rate=200, seed=4) as server:
            handlers: dict[str, Handler] = {**dict.fromkeys(KINDS, Recorder().record), "trade": on_trade}
            return server, await stream_until(server, handlers, lambda: len(handled) >= 100)

    caplog.set_level(logging.INFO, logger="alpaca_stream")
    server, session = run(scenario())
    sent = server.connections[0].trade_ids
    assert handled == [i for i in sent if i % 5][: len(handled)]
    failures = [r.getMessage() for r in caplog.records if "raised" in r.getMessage()]
    assert len(failures) == 1 and re.fullmatch(r"on_trade raised RuntimeError on a trade of (SPY|TSLA):\n"
                                               r"my strategy has a bug at (\d+)\n\(-v shows where\)", failures[0])
    assert session.failures == {"on_trade": len(raised)}  # every one counted, for the summary
    assert f"handlers that raised: on_trade {len(raised)} times" in session.summary()
    assert "skipped" not in caplog.text  # the handler had the message: it was not skipped
    assert len(server.connections) == 1


def test_a_handler_that_raises_on_every_message_is_told_in_full_once_then_counted_now_and_then(monkeypatch,
                                                                                               caplog):
    monkeypatch.setattr("alpaca_stream.handlers.FAILURES_EVERY", 0.5)
    raised: list[int] = []

    async def on_trade(trade: Trade) -> None:
        raised.append(trade.id)
        _ = trade.prize  # type: ignore[attr-defined]  # a typo: it raises on every trade

    async def scenario() -> Session:
        async with AlpacaStreamServer(rate=200, seed=4) as server:
            handlers: dict[str, Handler] = {**dict.fromkeys(KINDS, Recorder().record), "trade": on_trade}
            return await stream_until(server, handlers, lambda: " more:\n" in caplog.text, timeout=15)

    caplog.set_level(logging.INFO, logger="alpaca_stream")
    session = run(scenario())
    told = [r.getMessage() for r in caplog.records if "raised" in r.getMessage()]
    assert told[0].startswith("on_trade raised AttributeError on a trade of ") and "\n(-v shows where)" in told[0]
    counts = [int(re.match(r"on_trade raised (\d+) times? more:\nthe last, AttributeError on a trade of "
                           r"(SPY|TSLA):\n'Trade' object has no attribute 'prize'$", line)[1]) for line in told[1:]]
    assert len(told) == 2 and 1 + sum(counts) <= len(raised) == session.failures["on_trade"]
    assert all(fits_80_columns("warning: ", line) for line in told)


def test_broken_frames_and_messages_cost_only_themselves(caplog):
    recorder = Recorder()

    async def reads_every_field(trade: Trade) -> None:
        _ = trade.price, trade.size  # a broken trade fails here, as it would in a student's handler
        await recorder.record(trade)

    async def scenario() -> AlpacaStreamServer:
        async with AlpacaStreamServer(rate=200, seed=5) as server:
            server.plan(Faults(garbage_after=10))
            await stream_until(server, dict.fromkeys(KINDS, recorder.record) | {"trade": reads_every_field},
                               lambda: len(recorder.messages) >= 40)
            return server

    caplog.set_level(logging.DEBUG, logger="alpaca_stream")
    server = run(scenario())
    trades = recorder.of("trade")  # now and then a correction or a cancel comes too
    assert [trade.id for trade in trades] == server.connections[0].trade_ids[: len(trades)]
    assert len(server.connections) == 1
    for skipped in ("not msgpack", "not a list", "unknown type"):
        assert skipped in caplog.text
    # The broken trade's failure, told like any other, with what the trade came without.
    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warned == ["reads_every_field raised KeyError on a trade of SPY:\n'p'\n(the message came without price)"]


def test_a_handlers_error_says_what_the_message_came_without_only_if_the_handler_tripped_on_that(caplog):
    async def typo(trade: Trade) -> None:
        print(symbl)  # type: ignore[name-defined]  # noqa: F821

    async def reads_the_exchange(trade: Trade) -> None:
        _ = trade.exchange

    async def reads_the_hour(trade: Trade) -> None:
        _ = trade.timestamp.hour

    no_exchange = {"type": "trade", "symbol": "SPY", "price": 600.5, "size": 100, "timestamp": "2026-11-24T15:00:00Z",
                   "id": 1}
    a_number_for_a_time = {**no_exchange, "exchange": "V", "timestamp": 1764000000}
    for message, handler in ((no_exchange, typo), (no_exchange, reads_the_exchange),
                             (a_number_for_a_time, typo), (a_number_for_a_time, reads_the_hour)):
        run_handlers([message], {"trade": handler}, keep_going=True)
    told = [r.getMessage().removesuffix("\n(-v shows where)") for r in caplog.records if " raised " in r.getMessage()]
    assert told == [
        "typo raised NameError on a trade of SPY:\nname 'symbl' is not defined",  # not "(... without exchange)"
        "reads_the_exchange raised KeyError on a trade of SPY:\n'x'\n(the message came without exchange)",
        "typo raised NameError on a trade of SPY:\nname 'symbl' is not defined",
        "reads_the_hour raised AttributeError on a trade of SPY:\n'int' object has no attribute 'hour'\n"
        "(its timestamp is not a time)"]


def test_a_handler_that_holds_the_stream_is_named_once_with_how_long_and_the_advice(monkeypatch, caplog):
    monkeypatch.setattr("alpaca_stream.handlers.SLOW_HANDLER", 0.1)  # a second on the stream; a tenth here
    trades = [{"type": "trade", "symbol": "SPY", "price": 600.5, "size": 100, "id": n} for n in range(3)]

    async def on_trade(trade: Trade) -> None:
        time.sleep(0.2)  # a blocking call, as a student's may be: it holds the event loop

    run_handlers(trades, {"trade": on_trade})
    told = [r.getMessage() for r in caplog.records if "held the stream" in r.getMessage()]
    assert len(told) == 1, told  # once, not every message
    assert re.fullmatch(r"on_trade held the stream for 0\.\d s:\nthe messages after it waited\. Start slow work "
                        r"with\nin_background\(\) and return at once \(docs/handlers\.md\)", told[0])
    assert fits_80_columns("warning: ", told[0])


# -- how each fault is handled --------------------------------------------------------------------


FATAL = (402, 405, 409, 410, 411, 412, 413)  # retrying cannot cure these: exit status 3


def second_connection_data(server: AlpacaStreamServer, recorder: Recorder) -> bool:
    """Whether a trade that the server's second connection sent has reached the handlers."""
    return len(server.connections) > 1 and bool(set(server.connections[1].trade_ids) &
                                                {trade["i"] for trade in recorder.of("trade")})


@pytest.mark.parametrize("code", sorted(ERRORS))
@pytest.mark.parametrize("when", ["at auth", "mid-stream"])
def test_every_alpaca_error_code_exits_or_retries_as_documented(when, code, caplog):
    # The server carries on streaming after a mid-stream error: a client that did not read the
    # error would stay on the first connection, and never see the second.
    recorder = Recorder()
    fault = Faults(auth_error=code) if when == "at auth" else Faults(error_after=20, error_code=code)

    server = AlpacaStreamServer(rate=200, seed=6)

    async def scenario() -> None:
        async with server:
            server.plan(fault)
            if code in FATAL:
                with pytest.raises(AlpacaRefused) as refused:
                    await stream_until(server, recorder.handlers, lambda: False)
                assert refused.value.code == code
            else:
                await stream_until(server, recorder.handlers, lambda: second_connection_data(server, recorder))

    caplog.set_level(logging.INFO, logger="alpaca_stream")
    run(scenario())
    first = server.connections[0]
    got = [dict(message) for message in recorder.messages]
    before_error = [as_received(message) for message in first.messages[:20 if when == "mid-stream" else 0]]
    assert got[: len(before_error)] == before_error  # what came before the error was delivered
    if code in FATAL:
        assert len(server.connections) == 1 and got == before_error  # no retry, nothing after it
    else:
        assert f"Alpaca refused: {ERRORS[code]} ({code})" in caplog.text
        second = [as_received(message) for message in server.connections[1].messages]
        assert got[len(before_error):] == second[: len(got) - len(before_error)]  # then the new connection's


@pytest.mark.parametrize("code", FATAL)
def test_a_refusal_that_retrying_cannot_cure_exits_3_with_advice_last(code, make_server, monkeypatch, tmp_path,
                                                                       caplog):
    server = make_server(faults=Faults(auth_error=code))
    monkeypatch.setenv(KEY_ENV, FAKE_KEY)
    monkeypatch.setenv(SECRET_ENV, FAKE_SECRET)
    monkeypatch.setattr(ws, "__file__", str(tmp_path / "websocket_stream.py"))  # no config.py there
    caplog.set_level(logging.INFO, logger="alpaca_stream")
    assert ws.main(["--url", server.url]) == EXIT_REFUSED
    last = caplog.records[-1]
    assert last.levelno == logging.ERROR and last.getMessage() == FATAL_ADVICE[code].format(source="the environment")
    assert f"({code} {ERRORS[code]})" in last.getMessage().replace("\n", " ")
    assert len(server.connections) == 1


def fits_80_columns(level: str, message: str) -> bool:
    """Whether a log message fits a terminal: its first line after the time and the level, the
    rest indented by two."""
    first, *rest = message.splitlines()
    return len(f"2026-11-24 23:00:53Z {level}{first}") <= 80 and all(len("  " + line) <= 80 for line in rest)


def test_every_refusal_and_its_advice_fit_80_columns():
    for code, advice in FATAL_ADVICE.items():
        assert fits_80_columns("error: ", advice.format(source="the environment")), code
    for code, advice in RETRY_ADVICE.items():
        assert fits_80_columns("warning: ", f"Alpaca refused: {ERRORS[code]} ({code})\n{advice}"), code


def test_every_fatal_code_has_advice_naming_the_fix():
    assert "paper and live" in FATAL_ADVICE[402]
    assert "30 symbols" in FATAL_ADVICE[405]
    assert "--feed iex" in FATAL_ADVICE[409] and "--options-feed indicative" in FATAL_ADVICE[409]
    assert "name the contracts" in FATAL_ADVICE[413]
    assert "market data scope" in FATAL_ADVICE[411].replace("\n", " ")
    assert "per endpoint per user (iex and sip are two)" in RETRY_ADVICE[406]
    assert sorted(FATAL_ADVICE) == list(FATAL)


@pytest.mark.parametrize(("attempt", "low", "high"), [(1, 0.5, 1), (2, 1, 2), (3, 2, 4), (4, 4, 8), (5, 8, 16),
                                                      (6, 15, 30), (7, 15, 30), (1000, 15, 30)])
def test_backoff_doubles_with_equal_jitter_up_to_30_s(attempt, low, high):
    with mock.patch("alpaca_stream.reconnect.random.uniform", lambda a, b: a):
        assert backoff_delay(attempt) == low
    with mock.patch("alpaca_stream.reconnect.random.uniform", lambda a, b: b):
        assert backoff_delay(attempt) == high


@pytest.mark.parametrize("status", [400, 401, 403, 404])
def test_a_handshake_refused_with_a_client_error_is_a_wrong_url_not_retried(status):
    async def scenario() -> AlpacaStreamServer:
        async with AlpacaStreamServer(faults=Faults(refuse=status)) as server:
            with pytest.raises(ConfigError, match=f"{re.escape(server.url)} refused the websocket:\nHTTP {status}"):
                await stream_until(server, Recorder().handlers, lambda: False, timeout=5)
            return server

    assert len(run(scenario()).attempts) == 1


@pytest.mark.parametrize("status", [429, 500, 503])
def test_a_handshake_refused_with_a_server_error_or_429_is_retried(status, caplog):
    recorder = Recorder()

    async def scenario() -> None:
        async with AlpacaStreamServer(rate=100) as server:
            server.plan(Faults(refuse=status))
            await stream_until(server, recorder.handlers, lambda: recorder.messages)

    caplog.set_level(logging.INFO, logger="alpaca_stream")
    run(scenario())
    assert f"the server refused the websocket: HTTP {status}" in caplog.text


@pytest.mark.parametrize("status", [404, 503])
def test_a_refused_handshake_is_read_from_websockets_new_client_too(status, monkeypatch, caplog):
    # alpaca-py issue 743 plans to move to websockets' new client, whose handshake error carries
    # the HTTP status on its response: a wrong URL must still exit 2, and a 503 be retried.
    from websockets.asyncio.client import connect as new_client

    async def connect_with_the_new_client(self: Any) -> None:
        self._ws = await new_client(self._endpoint, additional_headers={"Content-Type": "application/msgpack"},
                                    max_size=None)
        await self._ws.recv()  # the greeting

    monkeypatch.setattr(data_stream("stocks"), "_connect", connect_with_the_new_client)
    recorder = Recorder()

    async def scenario() -> None:
        async with AlpacaStreamServer(rate=100) as server:
            server.plan(Faults(refuse=status))
            if status == 404:
                with pytest.raises(ConfigError, match=f"refused the websocket:\nHTTP {status} .not found."):
                    await stream_until(server, recorder.handlers, lambda: False)
            else:
                await stream_until(server, recorder.handlers, lambda: recorder.messages)

    caplog.set_level(logging.INFO, logger="alpaca_stream")
    run(scenario())
    assert (f"the server refused the websocket: HTTP {status}" in caplog.text) == (status == 503)


def test_cannot_find_the_host_says_to_check_the_network(caplog):
    async def scenario() -> None:
        async with AlpacaStreamServer() as server:
            await stream_until(server, Recorder().handlers, lambda: "reconnecting in" in caplog.text,
                               url="wss://nonexistent.invalid/v2/iex")

    caplog.set_level(logging.INFO, logger="alpaca_stream")
    run(scenario())
    assert "cannot find nonexistent.invalid:\ncheck the internet connection and DNS" in caplog.text


def test_a_failed_tls_handshake_says_it_is_tls_and_why(caplog):
    async def scenario() -> None:
        async with AlpacaStreamServer() as server:  # speaks plain ws://, so TLS meets plain HTTP
            await stream_until(server, Recorder().handlers, lambda: "reconnecting in" in caplog.text,
                               url=server.url.replace("ws://", "wss://"))

    caplog.set_level(logging.INFO, logger="alpaca_stream")
    run(scenario())
    assert "TLS handshake cut by 127.0.0.1:\nis it a TLS (wss://) server?" in caplog.text


def test_an_unverifiable_certificate_is_explained():
    error = ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed")
    error.verify_message = "self-signed certificate"
    text = why_not_connected(error, "wss://stream.data.alpaca.markets/v2/iex")
    assert text.startswith("TLS: certificate of stream.data.alpaca.markets\nnot verified: self-signed certificate.")
    assert "antivirus" in text and "clock" in text


@pytest.mark.parametrize("error", [socket.gaierror(-2, "Name or service not known"), ssl.SSLError(1, "bad"),
                                   ConnectionRefusedError(111, "refused"), ConnectionResetError(104, "reset"),
                                   OSError(113, "No route to host"), ssl.SSLCertVerificationError(1, "x")])
def test_connection_failures_with_alpacas_host_fit_80_columns_as_warnings(error):
    if isinstance(error, ssl.SSLCertVerificationError):
        error.verify_message = "unable to get local issuer certificate"
    text = why_not_connected(error, "wss://stream.data.alpaca.markets/v2/iex")
    assert fits_80_columns("warning: ", text)


def test_verbose_shows_each_step_of_connecting_once_and_never_a_key(caplog):
    recorder = Recorder()

    async def scenario() -> None:
        async with AlpacaStreamServer(rate=100) as server:
            server.plan(Faults(auth_error=406))
            await stream_until(server, recorder.handlers, lambda: recorder.messages)

    caplog.set_level(logging.DEBUG)  # websockets' too: a key must not be in them either
    caplog.set_level(logging.DEBUG, logger="alpaca_stream")  # a main() run before set it to INFO
    run(scenario())
    text = caplog.text
    for step in ("opening the websocket", "connected, and greeted; sending the keys",
                 "Alpaca refused: connection limit exceeded (406)", "reconnecting in",
                 "subscribing: {'action': 'subscribe', 'trades': ['SPY', 'TSLA']}",
                 "subscribed to trades of SPY, TSLA"):
        assert step in text
    assert text.count("authenticated") == 1  # the one connection that got in
    assert FAKE_KEY not in text and FAKE_SECRET not in text


def test_a_quiet_market_gives_one_line_and_stays_connected(monkeypatch, caplog):
    monkeypatch.setattr("alpaca_stream.connection.QUIET_AFTER", 0.3)
    started = time.monotonic()

    async def scenario() -> AlpacaStreamServer:
        async with AlpacaStreamServer(faults=Faults(silent=True)) as server:
            # A second warning, or a reconnect, would come within the 1.5 s after the first.
            await stream_until(server, Recorder().handlers, lambda: "market may be closed" in caplog.text
                               and time.monotonic() - started > 1.5)
            return server

    caplog.set_level(logging.INFO, logger="alpaca_stream")
    server = run(scenario())
    assert caplog.text.count("market may be closed") == 1
    assert "--test-stream" in caplog.text
    assert len(server.connections) == 1


def mute_then_replaced(recorder: Recorder, **settings: Any) -> AlpacaStreamServer:
    """A first connection that goes mute after 30 messages, answering pings; streamed until the
    second connection's data has arrived."""
    server = AlpacaStreamServer(rate=200, seed=7)

    async def scenario() -> None:
        async with server:
            server.plan(Faults(mute_after=30))
            await stream_until(server, recorder.handlers, lambda: second_connection_data(server, recorder),
                               timeout=15, **settings)

    run(scenario())
    return server


def test_a_stream_that_goes_mute_in_market_hours_is_replaced_after_the_data_timeout(monkeypatch, caplog):
    monkeypatch.setattr("alpaca_stream.connection.market_open", lambda now=None: True)
    caplog.set_level(logging.INFO, logger="alpaca_stream")
    recorder = Recorder()
    server = mute_then_replaced(recorder, data_timeout=1.0)
    first, second = server.connections[:2]
    got = [dict(message) for message in recorder.messages]
    sent = [as_received(message) for message in first.messages + second.messages]
    assert len(first.messages) == 30 and got == sent[: len(got)]  # nothing lost or doubled
    warning = next(r for r in caplog.records if "no market data" in r.getMessage())
    assert warning.levelno == logging.WARNING
    assert warning.getMessage().startswith("no market data for 1 s in market hours:\nreplacing the connection")
    assert fits_80_columns("warning: ", warning.getMessage())
    assert first.closed_at is not None and second.opened_at - first.opened_at >= 1.0


def test_the_data_timeout_waits_twice_as_long_each_time_in_a_row_no_data_comes(monkeypatch, caplog):
    monkeypatch.setattr("alpaca_stream.connection.market_open", lambda now=None: True)
    caplog.set_level(logging.INFO, logger="alpaca_stream")

    async def scenario() -> AlpacaStreamServer:
        async with AlpacaStreamServer(faults=Faults(silent=True)) as server:  # a holiday, say
            await stream_until(server, Recorder().handlers, lambda: "no market data for 2 s" in caplog.text,
                               data_timeout=1.0)
            return server

    server = run(scenario())
    assert caplog.text.count("no market data for 1 s") == 1 and len(server.connections) == 2


@pytest.mark.parametrize("why", ["the market is closed", "0 turns it off"])
def test_a_mute_stream_is_not_replaced_when_the_market_is_closed_or_the_timeout_off(why, monkeypatch, caplog):
    monkeypatch.setattr("alpaca_stream.connection.market_open", lambda now=None: why != "the market is closed")
    # The quiet line proves that 4 data timeouts went by.
    monkeypatch.setattr("alpaca_stream.connection.QUIET_AFTER", 2.0)

    async def scenario() -> AlpacaStreamServer:
        async with AlpacaStreamServer(faults=Faults(silent=True)) as server:
            await stream_until(server, Recorder().handlers, lambda: "market may be closed" in caplog.text,
                               data_timeout=0.5 if why == "the market is closed" else 0.0)
            return server

    caplog.set_level(logging.INFO, logger="alpaca_stream")
    server = run(scenario())
    assert len(server.connections) == 1 and "no market data" not in caplog.text


@pytest.mark.parametrize(("argv", "timeout", "market_hours"), [
    ([], DATA_TIMEOUT, True), (["--data-timeout", "5"], 5.0, True), (["--data-timeout", "0"], 0.0, True),
    (["--quotes", "--statuses"], DATA_TIMEOUT, True), (["--bars"], DATA_TIMEOUT, True),
    (["--statuses", "--lulds", "--data-timeout", "5"], 0.0, True),  # may be silent all day
    (["--updated-bars"], 0.0, True), (["--imbalances"], 0.0, True),
    (["--demo"], DATA_TIMEOUT, False), (["--test-stream"], DATA_TIMEOUT, False)])
def test_the_data_timeout_is_armed_only_for_channels_that_flow_all_day(argv, timeout, market_hours):
    settings = settings_from(parse_args(argv))
    assert (settings.data_timeout, settings.market_hours) == (timeout, market_hours)


@POSIX_ONLY
def test_data_timeout_5_on_the_command_line_replaces_a_mute_stream(make_server, monkeypatch, tmp_path, caplog):
    server = make_server(rate=100, seed=8)
    server.plan(Faults(mute_after=20))
    monkeypatch.setattr("alpaca_stream.connection.market_open", lambda now=None: True)
    monkeypatch.setenv(KEY_ENV, FAKE_KEY)
    monkeypatch.setenv(SECRET_ENV, FAKE_SECRET)
    monkeypatch.setattr(ws, "__file__", str(tmp_path / "websocket_stream.py"))  # no config.py there
    recorder = Recorder()

    def stop_once_the_second_connection_streams() -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not (len(server.connections) > 1 and server.connections[1].messages):
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=stop_once_the_second_connection_streams, daemon=True).start()
    caplog.set_level(logging.INFO, logger="alpaca_stream")
    assert ws.main(["--url", server.url, "--data-timeout", "5"], handlers=recorder.handlers) == EXIT_OK
    assert "no market data for 5 s in market hours" in caplog.text
    first, second = server.connections[:2]
    assert second.opened_at - first.opened_at >= 5.0 and "reconnects: 1" in caplog.records[-1].getMessage()


# -- what Alpaca's server does that a test server might not ----------------------------------------


def test_a_frame_over_1_mib_is_read_whole_and_compressed_frames_are_read(caplog):
    recorder = Recorder()

    async def scenario() -> AlpacaStreamServer:
        async with AlpacaStreamServer(rate=50, seed=9) as server:
            server.cue("big_frame")  # 30,000 trades in one frame; websockets' default max_size is 1 MiB
            await stream_until(server, recorder.handlers, lambda: len(recorder.of("trade")) >= 30_100)
            return server

    server = run(scenario())
    connection, = server.connections
    assert connection.compressed  # permessage-deflate, as Alpaca's server offers it
    got = [dict(message) for message in recorder.messages]
    assert got == [as_received(message) for message in connection.messages][: len(got)]


def test_a_client_too_slow_for_the_server_gets_407_and_streams_again(caplog):
    recorder = Recorder()
    # Uncompressed: compressed, the frames took 10 s at 1,000 ticks a second to fill the buffers.
    server = AlpacaStreamServer(rate=2000, batch=50, seed=10, slow_after=0.5, compression=False)

    async def slow_until_told(message: Record) -> None:
        await recorder.record(message)
        if not server.connections[0].slow:
            await asyncio.sleep(0.01)  # reads 100 messages a second of the 2,000 sent

    async def scenario() -> None:
        async with server:
            await stream_until(server, dict.fromkeys(KINDS, slow_until_told),
                               lambda: second_connection_data(server, recorder), timeout=30)

    caplog.set_level(logging.INFO, logger="alpaca_stream")
    run(scenario())
    assert server.connections[0].slow
    assert "Alpaca refused: slow client (407)\nThe server says we read too slowly." in caplog.text
    first = [as_received(message) for message in server.connections[0].messages]
    got = [dict(message) for message in recorder.messages]
    assert got[: len(first)] == first  # every message the server had sent before its 407


def test_a_reconnect_while_alpaca_holds_the_dropped_connection_meets_406_then_gets_in(caplog):
    recorder = Recorder()
    server = AlpacaStreamServer(rate=200, seed=11, hold_dropped=1.5)

    def streamed_after_the_hold() -> bool:
        return len(server.connections) > 2 and bool(set(server.connections[-1].trade_ids) &
                                                    {trade["i"] for trade in recorder.of("trade")})

    async def scenario() -> None:
        async with server:
            server.plan(Faults(drop_after=30))  # cut without a close: Alpaca keeps its place
            await stream_until(server, recorder.handlers, streamed_after_the_hold, timeout=20)

    caplog.set_level(logging.INFO, logger="alpaca_stream")
    run(scenario())
    assert "Alpaca refused: connection limit exceeded (406)\nAnother connection with these keys" in caplog.text
    streamed = [as_received(m) for connection in server.connections for m in connection.messages]
    got = [dict(message) for message in recorder.messages]
    assert got == streamed[: len(got)]  # the refused connections sent nothing; nothing lost or doubled


# -- slow work, in the background ----------------------------------------------------------------


def test_slow_work_in_the_background_does_not_hold_up_the_stream(caplog):
    recorder = Recorder()
    finished: list[str] = []

    def blocking_order(symbol: str) -> None:
        time.sleep(0.5)  # a blocking HTTP client
        finished.append(f"blocking {symbol}")

    async def async_order(symbol: str) -> None:
        await asyncio.sleep(0.5)  # an async HTTP client
        finished.append(f"async {symbol}")

    async def on_trade(trade: Trade) -> None:
        await recorder.record(trade)
        if len(recorder.messages) == 1:
            in_background(asyncio.to_thread(blocking_order, trade.symbol))
            in_background(async_order(trade.symbol))
            in_background(failing())

    async def failing() -> None:
        raise ValueError("the order was rejected")

    async def scenario() -> float:
        async with AlpacaStreamServer(rate=200) as server:
            started = time.monotonic()
            await stream_until(server, dict.fromkeys(KINDS, on_trade), lambda: len(recorder.messages) >= 50)
            took = time.monotonic() - started
            await stream_until(server, dict.fromkeys(KINDS, recorder.record), lambda: len(finished) == 2)
            return took

    caplog.set_level(logging.INFO, logger="alpaca_stream")
    took = run(scenario())
    assert took < 0.5 + 0.3  # 50 trades at 200/s: the half-second jobs did not hold them up
    assert sorted(finished) == ["async SPY", "blocking SPY"] or sorted(finished) == ["async TSLA", "blocking TSLA"]
    assert "work started with in_background() failed: ValueError: the order was rejected" in caplog.text


def test_in_background_given_the_result_of_a_blocking_call_says_what_to_pass():
    async def scenario() -> None:
        in_background("an Order")  # type: ignore[arg-type]  # submit_order(...) ran at once

    with pytest.raises(TypeError, match=r"needs an awaitable, not str: .*asyncio.to_thread\(function, arguments"):
        run(scenario())


# -- signals --------------------------------------------------------------------------------------


class Forced(Exception):
    """os._exit(), in a test that must go on."""


def test_first_signal_stops_second_forces_exit_and_old_handlers_come_back(monkeypatch):
    stops: list[str] = []
    told: list[tuple[int, bool]] = []
    session = Session()

    def forced(status: int) -> None:
        raise Forced(status)

    monkeypatch.setattr(os, "_exit", forced)
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    async def scenario():
        with stop_on_signals(lambda: stops.append("stop"), session, lambda signum, again: told.append((signum, again))):
            signal.raise_signal(signal.SIGTERM)
            # In the signal handler itself, as a handler may hold the loop: told, and no message after it.
            assert told == [(signal.SIGTERM, False)] and session.stopping and stops == []
            await asyncio.sleep(0.05)  # the stop is scheduled on the loop
            assert stops == ["stop"]
            with pytest.raises(Forced, match=str(EXIT_FORCED)):
                signal.raise_signal(signal.SIGINT)
            assert told[-1] == (signal.SIGINT, True)  # the summary, before the exit

    asyncio.run(scenario())
    assert {sig: signal.getsignal(sig) for sig in before} == before


def test_a_stop_whose_cancel_is_lost_still_stops():
    # What asyncio.wait_for does before Python 3.12 when a cancel comes just as what it waits
    # for completes (CPython issue 86296), here on purpose, so that it happens every time.
    lost: list[bool] = []

    async def loses_the_first_cancel() -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            lost.append(True)
        await asyncio.sleep(30)

    async def scenario() -> float:
        started = time.monotonic()
        await until_stopped(loses_the_first_cancel(), Session(),
                            also=lambda stop: asyncio.get_running_loop().call_later(0.1, stop))
        return time.monotonic() - started

    took = asyncio.run(asyncio.wait_for(scenario(), 20))
    assert lost == [True] and took < 15  # not the 30 s of the sleep after the lost cancel


# -- exit statuses and the summary, through main() ---------------------------------------------------


def test_wrong_keys_exit_3_with_the_error_as_the_last_line(make_server, monkeypatch, tmp_path, caplog):
    server = make_server(keys=("RIGHT-KEY-ID-000001", "RIGHT-SECRET-000001"))
    monkeypatch.setenv(KEY_ENV, FAKE_KEY)
    monkeypatch.setenv(SECRET_ENV, FAKE_SECRET)
    monkeypatch.setattr(ws, "__file__", str(tmp_path / "websocket_stream.py"))  # no config.py there
    caplog.set_level(logging.INFO, logger="alpaca_stream")
    assert ws.main(["--url", server.url]) == EXIT_REFUSED
    assert caplog.records[-1].levelno == logging.ERROR and "402 auth failed" in caplog.records[-1].getMessage()
    assert "the environment" in caplog.records[-1].getMessage()


def test_an_unexpected_error_exits_1_with_the_traceback(monkeypatch, caplog):
    bug = mock.AsyncMock(side_effect=ZeroDivisionError("a bug"))
    monkeypatch.setattr("alpaca_stream.sources.stocks.keep_connected", bug)
    assert ws.main(["--demo"]) == EXIT_UNEXPECTED
    assert "unexpected error: please report it" in caplog.text and "ZeroDivisionError: a bug" in caplog.text


def test_an_alpaca_py_without_what_the_script_uses_exits_2_saying_which_to_install(monkeypatch):
    class StreamOfAnotherRelease:  # has close, but no _connect
        def __init__(self, api_key: str, secret_key: str, url_override: str, websocket_params: dict) -> None: ...
        async def close(self) -> None: ...

    monkeypatch.setattr("alpaca_stream.connection.data_stream", lambda market: StreamOfAnotherRelease)
    with pytest.raises(ConfigError, match=r"needs alpaca-py 0.33.1 to 0.44, you have \S+:\nits "
                                             r"StockDataStream has no _connect.\nInstall the tested one: pip install "
                                             r"-r requirements.txt"):
        check_alpaca_py()


def fails_with(error: ImportError) -> Callable[[str], type]:
    def importing(market: str) -> type:
        raise error
    return importing


def test_an_alpaca_py_that_fails_to_import_pytz_says_to_install_it(monkeypatch):
    missing = ModuleNotFoundError("No module named 'pytz'", name="pytz")
    monkeypatch.setattr("alpaca_stream.connection.data_stream", fails_with(missing))
    with pytest.raises(ConfigError, match=r"it fails to import:\npytz\n\(alpaca-py 0.33.1 to 0.43.2 need it: "
                                             r"pip install pytz\)"):
        check_alpaca_py()


def test_an_import_error_without_a_module_name_is_shown_by_its_message(monkeypatch):
    # What pandas raises, under alpaca-py 0.33.1, when pytz is missing.
    missing = ImportError("Unable to import required dependencies:\npytz: No module named 'pytz'")
    monkeypatch.setattr("alpaca_stream.connection.data_stream", fails_with(missing))
    with pytest.raises(ConfigError, match=r"it fails to import:\nUnable to import required dependencies: pytz: No "
                                             r"module named 'pytz'\n\(alpaca-py 0.33.1 to 0.43.2 need it: pip install"):
        check_alpaca_py()


def test_the_installed_alpaca_py_passes_the_check():
    check_alpaca_py()


def test_the_summary_fits_80_columns_whatever_arrived():
    session = Session(started=time.monotonic())
    session.received.update(dict.fromkeys(KINDS, 123456) | {"status": 1})
    first, *rest = session.summary().splitlines()
    assert first.startswith("received 123,456 trades, 123,456 quotes") and "1 status," in session.summary()
    assert len("2026-11-24 23:00:53Z " + first) <= 80 and all(len("  " + line) <= 80 for line in rest)
    assert rest[-1].endswith("; reconnects: 0")


def test_the_summary_counts_news_as_articles():
    session = Session()
    session.received.update({"trade": 2, "news": 3})
    assert session.summary().startswith("received 2 trades, 3 articles in ")


def test_the_log_is_in_utc_with_the_date_like_the_data():
    record = logging.LogRecord("websocket_stream", logging.WARNING, __file__, 1, "first\nsecond", None, None)
    record.created = 1764000000.5  # 2025-11-24 16:00:00.5 UTC
    assert LogFormatter().format(record) == "2025-11-24 16:00:00Z warning: first\n  second"
    record.levelno = logging.INFO
    assert LogFormatter().format(record).startswith("2025-11-24 16:00:00Z first")



def test_a_long_log_line_is_fitted_in_80_columns_broken_at_spaces_and_indented():
    message = "the NATS server had lost the consumer strategy-1: made again " * 3 + "\nnext " + "x" * 90
    record = logging.LogRecord("websocket_stream", logging.WARNING, __file__, 1, message.strip(), None, None)
    lines = LogFormatter().format(record).splitlines()
    assert all(len(line) <= 80 for line in lines[:-1]) and lines[-1] == "  " + "x" * 90  # a word stays whole
    assert all(line.startswith("  ") for line in lines[1:]) and lines[-2] == "  next"
    assert " ".join(line.strip() for line in lines)[len("2025-11-24 16:00:00Z warning: "):] == \
        " ".join(message.split())


@pytest.mark.parametrize(("answer", "logged"), [
    ({"trades": ["SPY", "TSLA"], "quotes": ["TSLA", "SPY"]}, "trades, quotes of SPY, TSLA"),
    ({"trades": ["SPY", "TSLA", "AAPL"], "quotes": ["TSLA"], "bars": ["AAPL"]},
     "trades of SPY, TSLA, AAPL; quotes of TSLA; bars of AAPL"),
    ({"trades": [f"S{n}" for n in range(7)], "quotes": ["S1"]}, "trades of 7 symbols; quotes of S1"),
    ({"trades": []}, "nothing"),
    ({"trades": ["AAPL"], "updatedBars": ["AAPL"], "dailyBars": ["AAPL"]},  # as the options name them
     "trades, updated bars, daily bars of AAPL"),
])
def test_the_subscription_line_says_which_symbols_each_channel_has(answer, logged, caplog):
    caplog.set_level(logging.INFO, logger="alpaca_stream")
    log_subscription({"T": "subscription", **answer})
    said = caplog.records[-1].getMessage()
    assert " ".join(said.split("\n")) == f"subscribed to {logged}; Ctrl+C to stop"
    assert fits_80_columns("", said)


def test_how_to_stop_is_said_once_a_run_by_whichever_stream_subscribes_first(caplog):
    # The stock stream (first) has not subscribed yet, say its connection waits: the crypto
    # stream's subscription must still say how to stop, and the stock stream's then not again.
    caplog.set_level(logging.INFO, logger="alpaca_stream")
    stocks, crypto = Subscriptions(["trades"], ["SPY"]), Subscriptions(["trades"], ["BTC/USD"], symbol=PAIR)
    stocks.told = crypto.told = set()  # as supervise() shares it among a run's streams
    with streaming(stocks, crypto):
        crypto.control({"T": "subscription", "trades": ["BTC/USD"]})
        stocks.control({"T": "subscription", "trades": ["SPY"]})
    said = [record.getMessage() for record in caplog.records]
    assert [line.endswith("Ctrl+C to stop") for line in said] == [True, False], said
