"""The stream's promises, in-process against the real local server, with handlers the tests
supply: they hold whatever a student writes in the script's handlers."""

from __future__ import annotations

import asyncio
import logging
import re
import signal
import socket
import ssl
import time
from unittest import mock

import msgpack
import pytest
from alpaca.data import models
from conftest import FAKE_KEY, FAKE_SECRET, KINDS, Recorder, as_received, run, stream_until

import websocket_stream as ws
from local_alpaca_server import CUES, ERRORS, AlpacaStreamServer, Faults

ALL_CHANNELS = tuple(ws.CHANNELS.values())
# alpaca-py's model for each kind (LULDs have none): our records must carry its names.
ALPACA_MODELS = {"trade": models.Trade, "quote": models.Quote, "bar": models.Bar, "updated_bar": models.Bar,
                 "daily_bar": models.Bar, "status": models.TradingStatus, "correction": models.TradeCorrection,
                 "cancel": models.TradeCancel}


# -- every channel, each to its own handler ------------------------------------------------------


def test_every_channel_reaches_its_own_handler_as_a_record_with_alpaca_py_names():
    received: dict[str, list[ws.Record]] = {kind: [] for kind in KINDS}

    def handler_for(kind: str) -> ws.Handler:
        async def handler(message: ws.Record) -> None:
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
            assert ws.KIND[type(message)] == kind  # each kind reached its own handler only
        model = ALPACA_MODELS.get(kind)
        if model is None:
            continue
        first = messages[0]
        wire = {**first, "t": msgpack.Timestamp.from_datetime(first["t"])}
        parsed = model(first.symbol, {**wire, "t": wire["t"].to_datetime()})
        for name in first.fields:
            assert getattr(first, name) == getattr(parsed, name), (kind, name)


def test_a_record_has_every_field_of_its_kind_and_prints_its_fields_by_name():
    trade = ws.Trade(as_received({"T": "t", "S": "SPY", "i": 7, "x": "V", "p": 601.5, "s": 100,
                                  "t": msgpack.Timestamp.from_unix_nano(10**18), "z": "B"}))
    assert trade.conditions is None and trade.tape == "B"  # "c" was left out: None, as in alpaca-py
    assert repr(trade).startswith("Trade(symbol='SPY', price=601.5, size=100, timestamp=datetime.datetime(2001")
    assert list(ws.UpdatedBar.fields) == list(ws.Bar.fields)


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

    async def on_trade(trade: ws.Trade) -> None:
        if trade.id % 5 == 0:
            raise RuntimeError(f"my strategy has a bug at {trade.id}")
        handled.append(trade.id)

    async def scenario() -> AlpacaStreamServer:
        async with AlpacaStreamServer(rate=200, seed=4) as server:
            handlers: dict[str, ws.Handler] = {**dict.fromkeys(KINDS, Recorder().record), "trade": on_trade}
            await stream_until(server, handlers, lambda: len(handled) >= 100)
            return server

    caplog.set_level(logging.INFO, logger="websocket_stream")
    server = run(scenario())
    sent = server.connections[0].trade_ids
    assert handled == [i for i in sent if i % 5][: len(handled)]
    failures = [r.getMessage() for r in caplog.records if "raised" in r.getMessage()]
    assert failures and all(re.fullmatch(r"on_trade raised RuntimeError on a trade of (SPY|TSLA):\n"
                                         r"my strategy has a bug at (\d+)\n\(-v shows where\)", text)
                            for text in failures), failures
    assert "skipped" not in caplog.text  # the handler had the message: it was not skipped
    assert len(server.connections) == 1


def test_broken_frames_and_messages_cost_only_themselves(caplog):
    recorder = Recorder()

    async def reads_every_field(trade: ws.Trade) -> None:
        _ = trade.price, trade.size  # a broken trade fails here, as it would in a student's handler
        await recorder.record(trade)

    async def scenario() -> AlpacaStreamServer:
        async with AlpacaStreamServer(rate=200, seed=5) as server:
            server.plan(Faults(garbage_after=10))
            await stream_until(server, dict.fromkeys(KINDS, recorder.record) | {"trade": reads_every_field},
                               lambda: len(recorder.messages) >= 40)
            return server

    caplog.set_level(logging.DEBUG, logger="websocket_stream")
    server = run(scenario())
    trades = recorder.of("trade")  # now and then a correction or a cancel comes too
    assert [trade.id for trade in trades] == server.connections[0].trade_ids[: len(trades)]
    assert len(server.connections) == 1
    for skipped in ("not msgpack", "not a list", "unknown type", "a broken trade (no p) failed reads_every_field"):
        assert skipped in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


# -- how each fault is handled --------------------------------------------------------------------


def mocked_stream(fail_with: str | None = None, frames: tuple[bytes, ...] = ()) -> mock.Mock:
    """A StockDataStream whose auth fails with alpaca-py's ValueError, or that yields frames."""

    class Websocket:
        def __aiter__(self):
            return self._frames()

        async def _frames(self):
            for frame in frames:
                yield frame

        async def send(self, data: bytes) -> None:
            pass

    stream = mock.Mock(spec=ws.StockDataStream)
    stream._connect = mock.AsyncMock()
    stream._auth = mock.AsyncMock(side_effect=ValueError(fail_with) if fail_with else None)
    stream._ws = Websocket()
    return stream


def run_until_first_retry(stream) -> tuple[str, list[float]]:
    """Run the reconnect wrapper until it decides: an exit (AlpacaRefused) or a retry."""
    delays: list[float] = []

    async def first_retry_only(delay: float) -> None:
        delays.append(delay)
        raise asyncio.CancelledError

    async def scenario():
        await ws.stream_with_reconnect(stream, ws.Settings("ws://mock", ["SPY"]), ws.routes_for(Recorder().handlers),
                                       ws.Session())

    with mock.patch.object(ws.asyncio, "sleep", first_retry_only):
        try:
            asyncio.run(scenario())
        except ws.AlpacaRefused as refusal:
            return f"exit {refusal.code}", delays
        except asyncio.CancelledError:
            return "retry", delays
    raise AssertionError("neither exited nor retried")


@pytest.mark.parametrize("code", sorted(ERRORS))
def test_every_alpaca_error_code_at_auth_exits_or_retries_as_documented(code):
    decision, delays = run_until_first_retry(mocked_stream(fail_with=ERRORS[code]))
    if code in (402, 405, 409, 410):  # retrying cannot help
        assert decision == f"exit {code}"
    else:
        assert decision == "retry" and 0.5 <= delays[0] <= 1.0


@pytest.mark.parametrize("code", sorted(ERRORS))
def test_every_alpaca_error_code_mid_stream_exits_or_retries_as_documented(code):
    frame = msgpack.packb([{"T": "error", "code": code, "msg": ERRORS[code]}])
    decision, _ = run_until_first_retry(mocked_stream(frames=(frame,)))
    assert decision == (f"exit {code}" if code in (402, 405, 409, 410) else "retry")


def test_every_fatal_code_has_advice_naming_the_fix():
    assert "paper and live" in ws.FATAL_ADVICE[402]
    assert "30 symbols" in ws.FATAL_ADVICE[405]
    assert "--feed iex" in ws.FATAL_ADVICE[409]
    assert "allows one per account" in ws.RETRY_ADVICE[406]


@pytest.mark.parametrize(("attempt", "low", "high"), [(1, 0.5, 1), (2, 1, 2), (3, 2, 4), (4, 4, 8), (5, 8, 16),
                                                      (6, 15, 30), (7, 15, 30), (1000, 15, 30)])
def test_backoff_doubles_with_equal_jitter_up_to_30_s(attempt, low, high):
    with mock.patch.object(ws.random, "uniform", lambda a, b: a):
        assert ws.backoff_delay(attempt) == low
    with mock.patch.object(ws.random, "uniform", lambda a, b: b):
        assert ws.backoff_delay(attempt) == high


@pytest.mark.parametrize("status", [400, 401, 403, 404])
def test_a_handshake_refused_with_a_client_error_is_a_wrong_url_not_retried(status):
    async def scenario() -> AlpacaStreamServer:
        async with AlpacaStreamServer(faults=Faults(refuse=status)) as server:
            with pytest.raises(ws.ConfigError, match=f"{re.escape(server.url)} refused the websocket:\nHTTP {status}"):
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

    caplog.set_level(logging.INFO, logger="websocket_stream")
    run(scenario())
    assert f"the server refused the websocket: HTTP {status}" in caplog.text


def test_cannot_find_the_host_says_to_check_the_network(caplog):
    async def scenario() -> None:
        async with AlpacaStreamServer() as server:
            await stream_until(server, Recorder().handlers, lambda: "reconnecting in" in caplog.text,
                               url="wss://nonexistent.invalid/v2/iex")

    caplog.set_level(logging.INFO, logger="websocket_stream")
    run(scenario())
    assert "cannot find nonexistent.invalid:\ncheck the internet connection and DNS" in caplog.text


def test_a_failed_tls_handshake_says_it_is_tls_and_why(caplog):
    async def scenario() -> None:
        async with AlpacaStreamServer() as server:  # speaks plain ws://, so TLS meets plain HTTP
            await stream_until(server, Recorder().handlers, lambda: "reconnecting in" in caplog.text,
                               url=server.url.replace("ws://", "wss://"))

    caplog.set_level(logging.INFO, logger="websocket_stream")
    run(scenario())
    assert "TLS handshake cut by 127.0.0.1:\nis it a TLS (wss://) server?" in caplog.text


def test_an_unverifiable_certificate_is_explained():
    error = ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed")
    error.verify_message = "self-signed certificate"
    text = ws.why_not_connected(error, "wss://stream.data.alpaca.markets/v2/iex")
    assert text.startswith("TLS: certificate of stream.data.alpaca.markets\nnot verified: self-signed certificate.")
    assert "antivirus" in text and "clock" in text


@pytest.mark.parametrize("error", [socket.gaierror(-2, "Name or service not known"), ssl.SSLError(1, "bad"),
                                   ConnectionRefusedError(111, "refused"), ConnectionResetError(104, "reset"),
                                   OSError(113, "No route to host"), ssl.SSLCertVerificationError(1, "x")])
def test_connection_failures_with_alpacas_host_fit_80_columns_as_warnings(error):
    if isinstance(error, ssl.SSLCertVerificationError):
        error.verify_message = "unable to get local issuer certificate"
    text = ws.why_not_connected(error, "wss://stream.data.alpaca.markets/v2/iex")
    first, *rest = text.splitlines()
    assert len("2026-11-24 23:00:53Z warning: " + first) <= 80 and all(len("  " + line) <= 80 for line in rest)


def test_verbose_shows_each_step_of_connecting_and_never_a_key(caplog):
    recorder = Recorder()

    async def scenario() -> None:
        async with AlpacaStreamServer(rate=100) as server:
            server.plan(Faults(auth_error=406))
            await stream_until(server, recorder.handlers, lambda: recorder.messages)

    caplog.set_level(logging.DEBUG)
    run(scenario())
    text = caplog.text
    for step in ("connecting to ws://127.0.0.1:", "connected, and greeted; sending the keys",
                 "Alpaca refused: connection limit exceeded (406)", "reconnecting in",
                 "authenticated; subscribing: {'action': 'subscribe', 'trades': ['SPY', 'TSLA']}",
                 "subscribed to trades of SPY, TSLA"):
        assert step in text
    assert FAKE_KEY not in text and FAKE_SECRET not in text


def test_a_quiet_market_gives_one_line_and_stays_connected(monkeypatch, caplog):
    monkeypatch.setattr(ws, "QUIET_AFTER", 0.3)
    started = time.monotonic()

    async def scenario() -> AlpacaStreamServer:
        async with AlpacaStreamServer(faults=Faults(silent=True)) as server:
            # A second warning, or a reconnect, would come within the 1.5 s after the first.
            await stream_until(server, Recorder().handlers, lambda: "market may be closed" in caplog.text
                               and time.monotonic() - started > 1.5)
            return server

    caplog.set_level(logging.INFO, logger="websocket_stream")
    server = run(scenario())
    assert caplog.text.count("market may be closed") == 1
    assert "--test-stream" in caplog.text
    assert len(server.connections) == 1


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

    async def on_trade(trade: ws.Trade) -> None:
        await recorder.record(trade)
        if len(recorder.messages) == 1:
            ws.in_background(asyncio.to_thread(blocking_order, trade.symbol))
            ws.in_background(async_order(trade.symbol))
            ws.in_background(failing())

    async def failing() -> None:
        raise ValueError("the order was rejected")

    async def scenario() -> float:
        async with AlpacaStreamServer(rate=200) as server:
            started = time.monotonic()
            await stream_until(server, dict.fromkeys(KINDS, on_trade), lambda: len(recorder.messages) >= 50)
            took = time.monotonic() - started
            await stream_until(server, dict.fromkeys(KINDS, recorder.record), lambda: len(finished) == 2)
            return took

    caplog.set_level(logging.INFO, logger="websocket_stream")
    took = run(scenario())
    assert took < 0.5 + 0.3  # 50 trades at 200/s: the half-second jobs did not hold them up
    assert sorted(finished) == ["async SPY", "blocking SPY"] or sorted(finished) == ["async TSLA", "blocking TSLA"]
    assert "work started with in_background() failed: ValueError: the order was rejected" in caplog.text


def test_in_background_given_the_result_of_a_blocking_call_says_what_to_pass():
    async def scenario() -> None:
        ws.in_background("an Order")  # type: ignore[arg-type]  # submit_order(...) ran at once

    with pytest.raises(TypeError, match=r"needs an awaitable, not str: .*asyncio.to_thread\(function, arguments"):
        run(scenario())


# -- signals --------------------------------------------------------------------------------------


def test_first_signal_stops_second_forces_exit_and_old_handlers_come_back(monkeypatch):
    stops: list[str] = []
    forced: list[int] = []
    monkeypatch.setattr(ws.os, "_exit", forced.append)
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    async def scenario():
        with ws.stop_on_signals(lambda: stops.append("stop")):
            signal.raise_signal(signal.SIGTERM)
            await asyncio.sleep(0.05)  # the stop is scheduled on the loop, not run in the handler
            assert stops == ["stop"] and forced == []
            signal.raise_signal(signal.SIGINT)
            assert forced == [ws.EXIT_FORCED]

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
        asyncio.get_running_loop().call_later(0.1, signal.raise_signal, signal.SIGTERM)
        started = time.monotonic()
        await ws.until_stopped(loses_the_first_cancel(), ws.Settings("", []), ws.Session())
        return time.monotonic() - started

    took = asyncio.run(asyncio.wait_for(scenario(), 20))
    assert lost == [True] and took < 15  # not the 30 s of the sleep after the lost cancel


# -- exit statuses and the summary, through main() ---------------------------------------------------


def test_wrong_keys_exit_3_with_the_error_as_the_last_line(make_server, monkeypatch, tmp_path, caplog):
    server = make_server(keys=("RIGHT-KEY-ID-000001", "RIGHT-SECRET-000001"))
    monkeypatch.setenv(ws.KEY_ENV, FAKE_KEY)
    monkeypatch.setenv(ws.SECRET_ENV, FAKE_SECRET)
    monkeypatch.setattr(ws, "__file__", str(tmp_path / "websocket_stream.py"))  # no config.py there
    caplog.set_level(logging.INFO, logger="websocket_stream")
    assert ws.main(["--url", server.url]) == ws.EXIT_REFUSED
    assert caplog.records[-1].levelno == logging.ERROR and "402 auth failed" in caplog.records[-1].getMessage()
    assert "the environment" in caplog.records[-1].getMessage()


def test_an_unexpected_error_exits_1_with_the_traceback(monkeypatch, caplog):
    monkeypatch.setattr(ws, "stream_with_reconnect", mock.AsyncMock(side_effect=ZeroDivisionError("a bug")))
    assert ws.main(["--demo"]) == ws.EXIT_UNEXPECTED
    assert "unexpected error: please report it" in caplog.text and "ZeroDivisionError: a bug" in caplog.text


def test_an_alpaca_py_without_what_the_script_uses_exits_2_saying_which_to_install(monkeypatch):
    class StreamOfAnotherRelease:  # has connect and close, but no _auth
        def __init__(self, api_key: str, secret_key: str, url_override: str, websocket_params: dict) -> None: ...
        async def _connect(self) -> None: ...
        async def close(self) -> None: ...

    monkeypatch.setattr(ws, "StockDataStream", StreamOfAnotherRelease)
    with pytest.raises(ws.ConfigError, match=r"needs alpaca-py 0.33.1 to 0.44, you have \S+:\nits StockDataStream "
                                             r"has no _auth.\nInstall the tested one: pip install -r requirements.txt"):
        ws.check_alpaca_py()


def test_an_alpaca_py_that_fails_to_import_pytz_says_to_install_it(monkeypatch):
    monkeypatch.setattr(ws, "ALPACA_IMPORT_ERROR", ModuleNotFoundError("No module named 'pytz'", name="pytz"))
    with pytest.raises(ws.ConfigError, match=r"it fails to import:\npytz\n\(older alpaca-py releases need it: "
                                             r"pip install pytz\)"):
        ws.check_alpaca_py()


def test_an_import_error_without_a_module_name_is_shown_by_its_message(monkeypatch):
    # What pandas raises, under alpaca-py 0.33.1, when pytz is missing.
    monkeypatch.setattr(ws, "ALPACA_IMPORT_ERROR", ImportError("Unable to import required dependencies:\n"
                                                               "pytz: No module named 'pytz'"))
    with pytest.raises(ws.ConfigError, match=r"it fails to import:\nUnable to import required dependencies: pytz: No "
                                             r"module named 'pytz'\n\(older alpaca-py releases need it: pip install"):
        ws.check_alpaca_py()


def test_the_installed_alpaca_py_passes_the_check():
    ws.check_alpaca_py()


def test_the_summary_fits_80_columns_whatever_arrived():
    session = ws.Session(started=time.monotonic())
    session.received.update(dict.fromkeys(KINDS, 123456) | {"status": 1})
    first, *rest = session.summary().splitlines()
    assert first.startswith("received 123456 trades, 123456 quotes") and "1 status," in session.summary()
    assert len("2026-11-24 23:00:53Z " + first) <= 80 and all(len("  " + line) <= 80 for line in rest)
    assert rest[-1].endswith("; reconnects: 0")


def test_the_log_is_in_utc_with_the_date_like_the_data():
    record = logging.LogRecord("websocket_stream", logging.WARNING, __file__, 1, "first\nsecond", None, None)
    record.created = 1764000000.5  # 2025-11-24 16:00:00.5 UTC
    assert ws.LogFormatter().format(record) == "2025-11-24 16:00:00Z warning: first\n  second"
    record.levelno = logging.INFO
    assert ws.LogFormatter().format(record).startswith("2025-11-24 16:00:00Z first")

