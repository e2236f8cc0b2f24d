"""websocket_stream.py in-process: configuration, arguments, output, and how every Alpaca error
code is handled, with a mocked stream where a real server would add nothing."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
from datetime import datetime, timezone
from pathlib import Path
from unittest import mock

import msgpack
import pytest

import websocket_stream as ws
from conftest import FAKE_KEY, FAKE_SECRET
from local_alpaca_server import ERRORS, AlpacaStreamServer, Faults

# -- configuration -----------------------------------------------------------------------------


@pytest.fixture
def clean_env(monkeypatch):
    for name in (ws.KEY_ENV, ws.SECRET_ENV):
        monkeypatch.delenv(name, raising=False)


def test_config_py_wins_over_the_environment(tmp_path, monkeypatch):
    (tmp_path / "config.py").write_text(f'API_KEY = "{FAKE_KEY}"\nSECRET_KEY = "{FAKE_SECRET}"\n')
    monkeypatch.setenv(ws.KEY_ENV, "ENV-KEY-ID-0000000")
    assert ws.check_keys(ws.load_keys(tmp_path)) == (FAKE_KEY, FAKE_SECRET, "config.py")


def test_config_example_copied_as_is_reads_the_environment(tmp_path, monkeypatch):
    (tmp_path / "config.py").write_text((Path(ws.__file__).parent / "config.example.py").read_text())
    monkeypatch.setenv(ws.KEY_ENV, FAKE_KEY)
    monkeypatch.setenv(ws.SECRET_ENV, FAKE_SECRET)
    assert ws.check_keys(ws.load_keys(tmp_path)) == (FAKE_KEY, FAKE_SECRET, "config.py")


def test_config_example_copied_as_is_with_no_keys_anywhere_is_refused_as_placeholder(tmp_path, clean_env):
    (tmp_path / "config.py").write_text((Path(ws.__file__).parent / "config.example.py").read_text())
    with pytest.raises(ws.ConfigError, match="API_KEY from config.py is still the placeholder 'your_api_key_here'"):
        ws.check_keys(ws.load_keys(tmp_path))


def test_without_config_py_the_environment_is_used(tmp_path, monkeypatch):
    monkeypatch.setenv(ws.KEY_ENV, f"  {FAKE_KEY}\n")  # pasted with spaces around
    monkeypatch.setenv(ws.SECRET_ENV, FAKE_SECRET)
    assert ws.check_keys(ws.load_keys(tmp_path)) == (FAKE_KEY, FAKE_SECRET, "the environment")


def test_without_config_py_or_environment_a_dotenv_file_is_used(tmp_path, clean_env):
    (tmp_path / ".env").write_text(f"{ws.KEY_ENV}={FAKE_KEY}\n{ws.SECRET_ENV}={FAKE_SECRET}\n")
    assert ws.check_keys(ws.load_keys(tmp_path)) == (FAKE_KEY, FAKE_SECRET, ".env")


def test_no_keys_anywhere_says_how_to_set_them_for_linux_macos_and_windows(tmp_path, clean_env):
    with pytest.raises(ws.ConfigError) as refused:
        ws.check_keys(ws.load_keys(tmp_path))
    message = str(refused.value)
    assert "No Alpaca API keys found" in message
    assert "cp config.example.py config.py" in message and "copy config.example.py config.py" in message
    assert "--demo" in message


@pytest.mark.parametrize(("key", "secret", "problem"), [
    ("", FAKE_SECRET, "API_KEY from config.py is missing or empty"),
    (FAKE_KEY, "   ", "SECRET_KEY from config.py is missing or empty"),
    ("your_api_key_here", FAKE_SECRET, "still the placeholder"),
    (FAKE_KEY, "your_secret_key_here", "still the placeholder"),
    ('"PKQUOTED0000000"', FAKE_SECRET, "does not look like a key"),
    (FAKE_KEY, "two words here", "does not look like a key"),
    ("abc", FAKE_SECRET, "does not look like a key"),
])
def test_keys_that_cannot_work_are_refused_before_connecting(key, secret, problem):
    with pytest.raises(ws.ConfigError, match=problem):
        ws.check_keys(ws.Keys(key, secret, "config.py"))


def test_a_broken_config_py_is_reported_by_line_without_printing_the_key(tmp_path):
    (tmp_path / "config.py").write_text("# keys\nAPI_KEY = PKUNQUOTED12345678\nSECRET_KEY = 'x'\n")
    with pytest.raises(ws.ConfigError) as refused:
        ws.load_keys(tmp_path)
    assert "line 2 (NameError)" in str(refused.value)
    assert "PKUNQUOTED" not in str(refused.value)


def test_a_config_py_failing_for_another_reason_says_why(tmp_path):
    (tmp_path / "config.py").write_text("import no_such_module_here\n")
    with pytest.raises(ws.ConfigError, match="line 1 \\(ModuleNotFoundError\\): No module named 'no_such_module_here'"):
        ws.load_keys(tmp_path)


def test_an_unexpected_error_exits_1_with_the_traceback(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(ws, "stream_until_stopped", mock.AsyncMock(side_effect=ZeroDivisionError("a bug")))
    assert ws.main(["--demo"]) == ws.EXIT_UNEXPECTED
    assert "unexpected error: please report it" in caplog.text and "ZeroDivisionError: a bug" in caplog.text


def test_main_returns_2_for_missing_keys(tmp_path, clean_env, monkeypatch, caplog):
    monkeypatch.setattr(ws, "__file__", str(tmp_path / "websocket_stream.py"))
    assert ws.main(["--url", "ws://127.0.0.1:9/v2/iex"]) == ws.EXIT_USAGE
    assert "No Alpaca API keys found" in caplog.text


# -- arguments ---------------------------------------------------------------------------------


def test_symbols_are_upper_cased_and_deduplicated():
    assert ws.parse_args(["spy", "Tsla", "SPY", "brk.b"]).symbols == ["SPY", "TSLA", "BRK.B"]


@pytest.mark.parametrize("argv", [["SP Y"], ["$$$"], ["--url", "http://example.invalid"],
                                  ["--feed", "otc"], ["--demo", "--url", "ws://127.0.0.1:1"],
                                  ["--test-stream", "--demo"]])
def test_bad_arguments_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exited:
        ws.parse_args(argv)
    assert exited.value.code == ws.EXIT_USAGE
    assert "error:" in capsys.readouterr().err


def test_help_lists_every_exit_status(capsys):
    with pytest.raises(SystemExit):
        ws.parse_args(["--help"])
    help_text = capsys.readouterr().out
    for status in ("0 ", "1 ", "2 ", "3 ", "130 "):
        assert f"\n  {status}" in help_text


@pytest.mark.parametrize(("argv", "url", "symbols"), [
    ([], "wss://stream.data.alpaca.markets/v2/iex", ["SPY", "TSLA"]),
    (["--feed", "sip", "AAPL"], "wss://stream.data.alpaca.markets/v2/sip", ["AAPL"]),
    (["--feed", "delayed_sip"], "wss://stream.data.alpaca.markets/v2/delayed_sip", ["SPY", "TSLA"]),
    (["--test-stream"], "wss://stream.data.alpaca.markets/v2/test", ["FAKEPACA"]),
    (["--url", "ws://127.0.0.1:8765/v2/iex", "qqq"], "ws://127.0.0.1:8765/v2/iex", ["QQQ"]),
])
def test_feeds_and_endpoints(argv, url, symbols):
    settings = ws.settings_from(ws.parse_args(argv))
    assert (settings.url, settings.symbols) == (url, symbols)


# -- output ------------------------------------------------------------------------------------


def wire_trade(**changes) -> dict:
    """A trade as Alpaca sends it, with "t" a msgpack Timestamp."""
    trade = {"T": "t", "S": "SPY", "i": 52983525029461, "x": "V", "p": 601.23, "s": 100,
             "c": ["@"], "t": msgpack.Timestamp.from_unix_nano(1_764_000_000_123_456_789), "z": "B"}
    return {**trade, **changes}


def received(message: dict) -> dict:
    """A message as the script unpacks it off the wire."""
    return msgpack.unpackb(msgpack.packb(message), timestamp=3)


def test_parse_trade_keeps_every_field_with_microseconds_in_utc():
    trade = ws.parse_trade(received(wire_trade()))
    assert trade == ws.Trade("SPY", 601.23, 100, datetime(2025, 11, 24, 16, 0, 0, 123456, tzinfo=timezone.utc),
                             "V", ["@"], 52983525029461, "B")


def test_text_lines_line_up_in_columns():
    lines = [ws.format_text(ws.parse_trade(received(wire_trade(**fields))))
             for fields in ({}, {"S": "TSLA", "s": 5, "p": 1234.5}, {"S": "SNDL", "s": 12000, "p": 0.4567})]
    assert lines[0] == "2025-11-24 16:00:00.123456+00:00  SPY          100 @     601.23  V"
    assert lines[2].endswith("0.4567  V")
    assert len({line.index("@") for line in lines}) == 1 and len({len(line) for line in lines}) == 1


def test_json_line_has_the_promised_fields():
    assert json.loads(ws.format_json(ws.parse_trade(received(wire_trade())))) == {
        "symbol": "SPY", "price": 601.23, "size": 100, "timestamp": "2025-11-24T16:00:00.123456+00:00",
        "exchange": "V", "conditions": ["@"], "id": 52983525029461, "tape": "B"}


# -- classification of every error code, with a mocked stream ----------------------------------


def mocked_stream(fail_with: str | None = None, frames: list[bytes] = ()) -> mock.Mock:
    """A StockDataStream whose connection fails with alpaca-py's ValueError, or yields frames."""

    class Websocket:
        def __aiter__(self):
            return self._frames()

        async def _frames(self):
            for frame in frames:
                yield frame

    stream = mock.Mock(spec=ws.StockDataStream)
    stream._start_ws = mock.AsyncMock(side_effect=ValueError(fail_with) if fail_with else None)
    stream._ws = Websocket()
    return stream


async def noop_handler(trade: ws.Trade) -> None:
    pass


def run_until_first_retry(stream) -> tuple[str, list[float]]:
    """Run the reconnect wrapper until it decides: an exit (AlpacaRefused) or a retry."""
    delays: list[float] = []

    async def first_retry_only(delay: float) -> None:
        delays.append(delay)
        raise asyncio.CancelledError

    async def scenario():
        await ws.stream_with_reconnect(stream, ws.Settings("ws://mock", ["SPY"]), noop_handler, ws.Session())

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
    decision, _ = run_until_first_retry(mocked_stream(frames=[frame]))
    assert decision == (f"exit {code}" if code in (402, 405, 409, 410) else "retry")


def test_every_fatal_code_has_advice_naming_the_fix():
    assert "paper and live" in ws.FATAL_ADVICE[402]
    assert "30 symbols" in ws.FATAL_ADVICE[405]
    assert "--feed iex" in ws.FATAL_ADVICE[409]
    assert "one is allowed per account" in ws.RETRY_ADVICE[406]


def test_backoff_grows_to_about_30_s_and_starts_over_once_trades_flow():
    delays = [ws.reconnect_delay(n, ws.RETRY_MIN, ws.RETRY_MAX) for n in range(1, 10)]
    assert delays[0] <= 1.0 and 15 <= delays[-1] <= 30
    assert all(low / 2 <= d for low, d in zip([1, 2, 4, 8, 16, 30, 30, 30, 30], delays))


# -- a broken trade, a failing handler -----------------------------------------------------------


def test_a_broken_trade_or_a_failing_handler_costs_that_trade_only(caplog):
    delivered: list[int] = []

    async def picky_handler(trade: ws.Trade) -> None:
        if trade.id == 3:
            raise RuntimeError("my strategy has a bug")
        delivered.append(trade.id)

    broken = wire_trade(i=2)
    del broken["p"]
    frame = msgpack.packb([wire_trade(i=1), broken, wire_trade(i=3), wire_trade(i=4)])
    session = ws.Session()
    caplog.set_level(logging.DEBUG, logger="websocket_stream")
    asyncio.run(ws.stream_once(mocked_stream(frames=[frame]), ws.Settings("ws://mock", ["SPY"]), picky_handler, session))
    assert delivered == [1, 4]
    assert session.trades["SPY"] == 2
    assert "does not parse" in caplog.text
    assert "the trade handler raised RuntimeError: my strategy has a bug (SPY trade 3 skipped)" in caplog.text


# -- quiet market, in-process with a short wait --------------------------------------------------


def test_quiet_market_gives_one_line_and_stays_connected(monkeypatch, caplog):
    monkeypatch.setattr(ws, "QUIET_AFTER", 0.3)
    server = AlpacaStreamServer(faults=Faults(silent=True))
    keys = ws.Keys(FAKE_KEY, FAKE_SECRET, "test")

    async def scenario():
        async with server:
            settings = ws.Settings(server.url, ["SPY"])
            task = asyncio.create_task(ws.stream_until_stopped(settings, keys))
            for _ in range(100):  # until the warning, at most 5 s
                await asyncio.sleep(0.05)
                if "market may be closed" in caplog.text:
                    break
            await asyncio.sleep(1.0)  # a second warning, or a reconnect, would come in this time
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    caplog.set_level(logging.INFO, logger="websocket_stream")
    asyncio.run(scenario())
    assert caplog.text.count("market may be closed") == 1
    assert "--test-stream" in caplog.text
    assert len(server.connections) == 1


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
