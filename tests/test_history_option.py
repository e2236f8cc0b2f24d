"""--history SPAN on the command line: past days from Alpaca's historical data API (or --url's
host's, or --demo's local server's) into the handlers, as --replay reads a recording, and a
backtest as a replay is; its span read as docs/history.md says; each refusal before anything
connects, exit status 2, one message within 80 columns. Through main(), with the tests' own
handlers, against the local server, the cache in tmp_path."""

from __future__ import annotations

import json
import logging
import socket
import zlib
from datetime import datetime, timedelta, timezone

import pytest
from conftest import FAKE_KEY, FAKE_SECRET, script_env, unwrapped, wider_than_80
from test_backtest import Bot, filled, market

import websocket_stream as ws
from alpaca_stream.logs import LogFormatter
from alpaca_stream.options import parse_args, settings_from
from alpaca_stream.server.history import DEFAULT_TRADES, RateLimit
from alpaca_stream.sources import history

pytestmark = pytest.mark.timeout(60)

DAY = "2025-12-02"  # a Tuesday, a trading day
UTC = timezone.utc


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_a_demo_history_run_hands_a_past_days_messages_in_time_order_and_ends_with_the_summary(start_script):
    script = start_script("--demo", "SPY", "TSLA", "--trades", "--quotes", "--history", DAY, bot=True)
    assert script.finish(timeout=45) == 0, script.stderr
    messages = [json.loads(line) for line in script.out_lines]
    assert len(messages) == 2 * 2 * DEFAULT_TRADES  # each symbol's trades and quotes: the local server's day
    times = [datetime.fromisoformat(message["timestamp"]) for message in messages]
    assert times == sorted(times)
    # New York's 4:00 to 20:00 (EST: UTC-5)
    assert utc("2025-12-02T09:00") <= times[0] and times[-1] <= utc("2025-12-03T01:00")
    assert {(message["kind"], message["symbol"]) for message in messages} == {
        (kind, symbol) for kind in ("trade", "quote") for symbol in ("SPY", "TSLA")}
    assert f"received {2 * DEFAULT_TRADES:,} trades, {2 * DEFAULT_TRADES:,} quotes in" in script.said
    assert "Traceback" not in script.stderr


def test_the_json_output_of_a_history_run_replays_with_replay_to_the_same_messages(tmp_path, capsys):
    argv = ["--demo", "SPY", "BTC/USD", "--trades", "--quotes", "--bars", "--news", "--history", DAY, "--json"]
    assert ws.main(argv) == 0
    recorded = capsys.readouterr().out
    kinds = {json.loads(line)["type"] for line in recorded.splitlines()}
    assert kinds == {"trade", "quote", "bar", "news"}
    recording = tmp_path / "history.jsonl"
    recording.write_text(recorded, encoding="utf-8")
    assert ws.main(["--replay", str(recording), "--json"]) == 0
    assert capsys.readouterr().out == recorded


def test_a_backtest_on_a_history_run_fills_an_order_at_the_next_messages_price_as_on_its_recording(
        tmp_path, capsys, caplog):
    span = ["--demo", "SPY", "--history", f"{DAY}T15:00..15:10"]  # 10:00 in New York: regular hours
    assert ws.main([*span, "--json"]) == 0
    recording = tmp_path / "history.jsonl"
    recording.write_text(capsys.readouterr().out, encoding="utf-8")
    trades = [json.loads(line) for line in recording.read_text(encoding="utf-8").splitlines()]
    plan = {3: lambda client: client.submit_order(market(1))}  # on the third trade
    played, replayed = Bot(plan), Bot(plan)
    assert ws.main([*span, "--quiet"], handlers=played.handlers) == 0
    assert "a backtest: orders fill at the history's prices" in unwrapped(caplog.text)  # it has no recording
    caplog.clear()
    assert ws.main(["--replay", str(recording), "--quiet"], handlers=replayed.handlers) == 0
    fourth = trades[3]
    assert filled(played) == [("fill", fourth["price"], 1, datetime.fromisoformat(fourth["timestamp"]))]
    assert played.seen == replayed.seen and played.count == len(trades)


@pytest.fixture
def counted(make_server):
    """A local server, and its count of the requests it was asked (a rate limit never reached)."""
    asked = RateLimit(calls=10**9, window=3600)
    return make_server(rate=None, history_trades=1_500, history_rate_limit=asked), asked


def test_url_gives_the_host_whose_history_is_read_with_the_keys_and_no_cache_keeps_nothing(
        counted, start_script, tmp_path):
    server, asked = counted
    host = server.url.removesuffix("/v2/iex")
    kept = tmp_path / "cache" / "alpaca-stream" / "history"

    def run(*more: str) -> list[str]:
        script = start_script("--url", host, "SPY", "TSLA", "--history", DAY, *more, bot=True,
                              env=script_env(XDG_CACHE_HOME=str(tmp_path / "cache")))
        assert script.finish(timeout=30) == 0, script.stderr
        return script.out_lines

    first = run("--no-cache")
    assert len(first) == 2 * 1_500 and asked.used == 2 and not kept.exists()
    assert run() == first and asked.used == 4 and len(list(kept.rglob("*.msgpack.z"))) == 2
    assert run() == first and asked.used == 4  # from the cache: no request at all


def test_a_history_run_needs_keys_as_the_stream_does(start_script):
    script = start_script("SPY", "--history", DAY, env=script_env(APCA_API_KEY_ID=None, APCA_API_SECRET_KEY=None))
    assert script.finish(timeout=30) == 2
    assert "No Alpaca API keys found" in script.said and "Traceback" not in script.stderr


def test_the_progress_line_fits_80_columns_in_the_log(monkeypatch, caplog):
    monkeypatch.setattr(history, "PROGRESS_IN_LOG", 0.0)  # a line each batch
    with caplog.at_level(logging.INFO, "alpaca_stream"):
        assert ws.main(["--demo", "SPY", "TSLA", "--trades", "--quotes", "--history", DAY, "--quiet"]) == 0
    log = [LogFormatter().format(record) for record in caplog.records]
    progress = [line for line in log if " history 2025-12-0" in line]
    assert len(progress) >= 4 and progress[-1].endswith(f"{4 * DEFAULT_TRADES:,} messages, 4 pages")
    assert wider_than_80("\n".join(log).splitlines()) == []


def span(*argv: str) -> tuple[datetime, datetime] | None:
    return settings_from(parse_args(list(argv))).history


@pytest.mark.parametrize(("argv", "first", "last"), [
    # a day: New York's 4:00 to 20:00 for stocks, in winter and in summer
    (["SPY", "--history", DAY], "2025-12-02T09:00", "2025-12-03T01:00"),
    (["SPY", "--history", "2025-07-01"], "2025-07-01T08:00", "2025-07-02T00:00"),
    (["AAPL261218C00250000", "--history", DAY], "2025-12-02T09:00", "2025-12-03T01:00"),
    (["SPY", "BTC/USD", "--history", DAY], "2025-12-02T09:00", "2025-12-03T01:00"),
    # UTC's whole day for crypto pairs alone: on a Saturday too
    (["BTC/USD", "--history", "2025-11-29"], "2025-11-29T00:00", "2025-11-29T23:59:59.999999"),
    # news comes on a closed day
    (["SPY", "--news", "--history", "2025-11-29"], "2025-11-29T09:00", "2025-11-30T01:00"),
    # days: from the first's start to the last's end, over a weekend
    (["SPY", "--history", "2025-11-28..2025-12-01"], "2025-11-28T09:00", "2025-12-02T01:00"),
    # times: UTC, Z said or not; NY for New York's; the end's own day and zone
    (["SPY", "--history", f"{DAY}T14:30..15:00"], f"{DAY}T14:30", f"{DAY}T15:00"),
    (["SPY", "--history", f"{DAY}T14:30:15Z..15:00:30"], f"{DAY}T14:30:15", f"{DAY}T15:00:30"),
    (["SPY", "--history", f"{DAY}t09:30ny..10:00"], f"{DAY}T14:30", f"{DAY}T15:00"),
    (["SPY", "--history", f"{DAY}T19:00NY..2025-12-03T10:00Z"], "2025-12-03T00:00", "2025-12-03T10:00"),
])
def test_the_span_of_a_day_days_or_times_as_docs_history_says(argv, first, last):
    assert span(*argv) == (utc(first), utc(last))


def test_url_gives_the_history_host_over_http_and_wss_over_https():
    assert settings_from(parse_args(["--url", "ws://127.0.0.1:8765", "--history", DAY])).history_url == \
        "http://127.0.0.1:8765"
    assert settings_from(parse_args(["--url", "wss://proxy.example:443/", "--history", DAY])).history_url == \
        "https://proxy.example:443/"


TOMORROW = (datetime.now(UTC) + timedelta(days=2)).date()  # in New York's time too
IN_AN_HOUR = datetime.now(UTC) + timedelta(hours=1)


@pytest.mark.parametrize(("argv", "says"), [
    (["SPY", "--history", "2025-11-27"], "--history: the market was closed on 2025-11-27 (Thanksgiving)"),
    (["SPY", "TSLA", "--history", "2025-11-29"], "--history: the market was closed on 2025-11-29 (a Saturday)"),
    (["AAPL261218C00250000", "--history", "2025-12-25"], "closed on 2025-12-25 (Christmas)"),
    (["SPY", "--history", "2025-11-27T15:00..16:00"], "closed on 2025-11-27 (Thanksgiving)"),
    (["SPY", "--history", "2025-11-29..2025-11-30"], "closed on every day from 2025-11-29 to 2025-11-30"),
    (["SPY", "--history", f"{TOMORROW}"], f"--history: {TOMORROW} is in the future"),
    (["SPY", "--history", f"{DAY}..{TOMORROW}"], f"--history: {TOMORROW} is in the future"),
    (["BTC/USD", "--history", f"{IN_AN_HOUR:%Y-%m-%dT%H:%M}..{IN_AN_HOUR + timedelta(hours=1):%Y-%m-%dT%H:%M}"],
     "is in the future"),
    (["SPY", "--history", "2025-12-03..2025-12-01"], "--history 2025-12-03..2025-12-01 is the wrong way round: "
                                                     "it ends before it starts"),
    (["SPY", "--history", f"{DAY}T15:00..14:30"], "is the wrong way round: it ends before it starts"),
    (["SPY", "--history", f"{DAY}T15:00..15:00"], "is the wrong way round: it ends where it starts"),
    (["SPY", "--history", f"{DAY}T15:00"], "--history takes a day (2026-12-01), days"),
    (["SPY", "--history", "yesterday"], "--history takes a day (2026-12-01), days"),
    (["SPY", "--history", f"{DAY}..15:00"], "--history takes a day"),
    (["SPY", "--history", "2025-02-30"], "--history 2025-02-30: 2025-02-30 is not a date or a time of day"),
    # channels Alpaca keeps no history of
    (["SPY", "--statuses", "--history", DAY], "Alpaca keeps no history of trading halts: leave out --statuses"),
    (["SPY", "--lulds", "--history", DAY], "no history of LULD bands: leave out --lulds"),
    (["SPY", "--imbalances", "--history", DAY], "no history of order imbalances: leave out --imbalances"),
    (["SPY", "--updated-bars", "--history", DAY], "no history of updated bars (its bars are final"),
    (["SPY", "--daily-bars", "--history", DAY], "no history of daily bars each minute (one a day"),
    (["BTC/USD", "--orderbooks", "--history", DAY], "no history of crypto order books (the latest only)"),
    (["AAPL261218C00250000", "--quotes", "--history", DAY], "no history of option quotes (of options, trades"),
    # what it cannot go with
    (["--replay", "session.jsonl", "--history", DAY], "--history and --replay: one past at a time"),
    (["--source", "nats://127.0.0.1:4222", "--history", DAY], "--history and --source: the history is Alpaca's"),
    (["--test-stream", "--history", DAY], "--history and --test-stream: Alpaca's test stream keeps no history"),
    (["--serve", "8765", "--history", DAY], "--serve goes with a stream (Alpaca, --url, --demo or --source), "
                                            "not with --replay or --history"),
    (["--trade-updates", "--history", DAY], "not --source, --replay or --history (a backtest hands over its own)"),
    (["--live", "--history", DAY], "--live says where orders go: --source trades nowhere, and --replay or "
                                   "--history in a backtest of its own"),
    (["--trading-url", "http://127.0.0.1:1", "--history", DAY], "and --replay or --history in a backtest"),
    (["--replay-speed", "2", "--history", DAY], "--replay-speed goes with --replay FILE"),
    (["*", "--history", DAY], "--history: name the symbols: Alpaca's historical data has no '*'"),
    (["--url", "ws://127.0.0.1:1/v2/iex", "--history", DAY], "give the host alone, ws://127.0.0.1:1"),
    (["AAPL261218C00250000", "--options-feed", "opra", "--history", DAY], "Alpaca's option history has none"),
    (["--no-cache"], "--no-cache goes with --history SPAN"),
    # before Alpaca's history begins (the local server's days, and the calendar's table, too)
    (["SPY", "--history", "2015-12-31"], "Alpaca's history begins on 2016-01-01: 2015-12-31 is before it"),
    (["BTC/USD", "--history", "2015-12-31T23:00..2016-01-01T01:00"], "2015-12-31T23:00 is before it"),
    (["AAPL261218C00250000", "--history", "2024-01-31"],
     "Alpaca's option history begins on 2024-02-01: 2024-01-31 is before it"),
    (["--cash", "1000"], "--cash goes with --replay FILE or --history SPAN: it is a backtest's"),
])
def test_what_history_refuses_exits_2_before_anything_connects_saying_why_in_80_columns(argv, says, capsys):
    with pytest.raises(SystemExit) as exited:
        ws.main(argv)
    assert exited.value.code == 2
    errors = capsys.readouterr().err
    assert says in unwrapped(errors) and "Traceback" not in errors
    assert wider_than_80(errors.splitlines()) == []


def test_option_bars_are_taken_with_history_as_alpaca_keeps_them():
    assert settings_from(parse_args(["AAPL261218C00250000", "--bars", "--history", DAY])).channels == ["bars"]


@pytest.fixture
def keys(monkeypatch):
    """Fake keys in the environment, for main() in this process."""
    monkeypatch.setenv("APCA_API_KEY_ID", FAKE_KEY)
    monkeypatch.setenv("APCA_API_SECRET_KEY", FAKE_SECRET)


@pytest.mark.timeout(20)
def test_a_history_whose_server_cannot_be_reached_ends_exit_2_naming_the_address(keys, monkeypatch, caplog):
    monkeypatch.setattr(history, "GIVE_UP", 2.0)  # 60 s in a run: retried as the stream does until then
    with socket.socket() as closed:  # a port nobody listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    with caplog.at_level(logging.INFO, "alpaca_stream"):
        assert ws.main(["--url", f"ws://127.0.0.1:{port}", "SPY", "--history", DAY, "--no-cache"]) == 2
    log = [LogFormatter().format(record) for record in caplog.records]
    assert any("trying again in" in line for line in log)
    said = unwrapped("\n".join(log))
    assert f"the historical data API at http://127.0.0.1:{port} failed for 2 s (Connection refused)." in said
    assert "Is the address right, and the network up?" in said
    assert wider_than_80("\n".join(log).splitlines()) == [] and "Traceback" not in said


def test_a_damaged_page_in_the_cache_is_asked_again_and_said_once(counted, keys, monkeypatch, tmp_path, caplog,
                                                                  capsys):
    server, asked = counted
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    argv = ["--url", server.url.removesuffix("/v2/iex"), "SPY", "TSLA", "--history", DAY, "--json"]
    assert ws.main(argv) == 0
    first = capsys.readouterr().out
    pages = sorted(tmp_path.rglob("*.msgpack.z"))
    assert asked.used == len(pages) == 2
    pages[0].write_bytes(b"not a page")
    cut = zlib.decompress(pages[1].read_bytes())
    pages[1].write_bytes(zlib.compress(cut[:len(cut) // 2]))  # a whole file of half a page
    with caplog.at_level(logging.INFO, "alpaca_stream"):
        assert ws.main(argv) == 0
    assert asked.used == 4 and capsys.readouterr().out == first
    assert len([record for record in caplog.records if "is damaged" in record.getMessage()]) == 1
    assert ws.main(argv) == 0 and asked.used == 4  # kept anew
    assert capsys.readouterr().out == first
