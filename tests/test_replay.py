"""--replay FILE and run_handlers(): a recording of --json lines, or a test's own messages, handed
to the handlers as the stream hands them over, with no network and no server. The tests' own
handlers (Recorder, recording_bot.py, or show() for all, what --json prints) take what comes, so
these pass whatever a student writes in the handlers."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import re
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import msgpack
import pytest
from conftest import KINDS, POSIX_ONLY, ROOT, Recorder, Script, script_env, unwrapped

import websocket_stream as ws
from alpaca_stream.channels import ALPACA_CHANNELS, CHANNELS
from alpaca_stream.handlers import in_background
from alpaca_stream.options import parse_args, settings_from
from alpaca_stream.orders import Costs
from alpaca_stream.outputs.terminal import format_json
from alpaca_stream.records import (
    KIND,
    Bar,
    CryptoTrade,
    News,
    OptionQuote,
    OptionTrade,
    Orderbook,
    Record,
    Trade,
    UpdatedBar,
)
from alpaca_stream.sources.recording import Recording
from alpaca_stream.supervisor import stream
from alpaca_stream.testing import HandlersFailed, run_handlers

SESSION = ROOT / "tests" / "data" / "session.jsonl"  # recorded from --demo --json
NO_KEYS = script_env(APCA_API_KEY_ID=None, APCA_API_SECRET_KEY=None)
WHEN = datetime(2026, 11, 24, 15, 0, tzinfo=timezone.utc)
# The script with show() as every handler: it prints as the defaults do, whatever they are now.
SHOW_ALL = """import sys, websocket_stream as ws
from alpaca_stream import show
async def shown(message): show(message)
sys.exit(ws.main(handlers=dict.fromkeys(ws.HANDLERS, shown)))"""


def trade_line(id: int, at: float = 0.0, **more: object) -> str:
    """A trade as --json prints it, `at` seconds after WHEN."""
    return json.dumps(
        {
            "type": "trade",
            "symbol": "SPY",
            "price": 600.0 + id / 100,
            "size": 100,
            "timestamp": (WHEN + timedelta(seconds=at)).isoformat(),
            "exchange": "V",
            "id": id,
            **more,
        }
    )


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def replay(path: Path, *options: str) -> subprocess.CompletedProcess:
    """The script (SHOW_ALL) replaying path, with no keys."""
    return subprocess.run(
        [sys.executable, "-c", SHOW_ALL, "--replay", str(path), *options],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=NO_KEYS,
        timeout=30,
    )


# -- the --json round trip ----------------------------------------------------------------------


def test_the_shipped_recording_replayed_with_json_prints_each_of_its_lines_as_it_is():
    done = replay(SESSION, "--json")
    assert done.returncode == 0, done.stderr
    assert done.stdout == SESSION.read_text(encoding="utf-8")


def test_a_replays_summary_counts_what_came_and_no_reconnects_a_recording_cannot_have():
    done = replay(SESSION)
    assert done.returncode == 0, done.stderr
    last = unwrapped(done.stderr).splitlines()[-1]
    assert re.search(r"received 55 trades, 2 corrections, 3 cancels in \d+\.\d s$", last), last
    assert "reconnects" not in done.stderr


@POSIX_ONLY
def test_a_json_recording_of_every_kind_replayed_with_json_prints_the_same_objects_in_order(
    make_server, copy_script, tmp_path
):
    server = make_server(rate=100, seed=7)
    channels = [f"--{option.replace('_', '-')}" for option, name in CHANNELS.items() if name in ALPACA_CHANNELS]
    live = Script(
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                SHOW_ALL,
                "--url",
                server.url,
                "--json",
                "SPY",
                "TSLA",
                *channels,
            ],
            cwd=copy_script(),
            env=script_env(),
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
    )
    try:
        live.wait_for_stderr("subscribed to")
        server.cue(
            "block",
            "correction",
            "cancel",
            "halt",
            "resume",
            "luld",
            "imbalance",
            "bar",
            "daily_bar",
            "updated_bar",
        )
        live.wait_for(
            lambda: {json.loads(line)["type"] for line in live.out_lines} >= set(KINDS),
            15,
            "every kind of message",
        )
        assert live.stop(signal.SIGINT)[0] == 0
    finally:
        live.kill()
    recording = write(tmp_path / "session.jsonl", live.out_lines)
    assert {"tks", "r"} <= {
        key for line in live.out_lines for key in json.loads(line)
    }  # Alpaca's extras too
    done = replay(recording, "--json")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == live.out_lines


def test_a_recording_written_by_windows_powershell_in_utf_16_replays_the_same(tmp_path):
    recording = tmp_path / "session.jsonl"
    recording.write_text(
        SESSION.read_text(encoding="utf-8").replace("\n", "\r\n"), encoding="utf-16"
    )
    done = replay(recording, "--json")
    assert done.returncode == 0, done.stderr
    assert done.stdout == SESSION.read_text(encoding="utf-8")


# -- broken lines and files that are no recording -----------------------------------------------


def test_broken_lines_are_skipped_and_counted_with_one_warning_and_the_rest_replayed(tmp_path):
    good = SESSION.read_text(encoding="utf-8").splitlines() * 3
    broken = [
        '{"type": "nosuch", "symbol": "SPY"}',
        "[1, 2]",
        "",
        good[0][:40],
        trade_line(9).replace("+00:00", "+99:00"),
    ]
    recording = tmp_path / "broken.jsonl"  # over 1,000 lines: the script reads that many at a time
    lines = [line for bad in broken for line in (*good, bad)]
    recording.write_bytes(b"\xc3\x28 not utf-8\n" + "\n".join(lines).encode())
    done = replay(recording, "--json")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == good * len(broken)
    assert done.stderr.count("warning") == 1
    assert "line 1 is not a --json message: skipped" in done.stderr
    assert f"skipped {len(broken) + 1} broken lines of the recording" in done.stderr
    assert "Traceback" not in done.stderr


def test_printed_lines_among_the_messages_are_skipped_saying_a_handler_printed_them_and_how_to_record(tmp_path):
    # Recorded with the order example of docs/handlers.md over on_trade: its printout is in the
    # recording, the trades it no longer show()s are not; the demo's corrections and cancels are.
    good = SESSION.read_text(encoding="utf-8").splitlines()[:3]
    recording = tmp_path / "session.jsonl"
    recording.write_text("\n".join(["buying 1 SPY after a block of 30000", *good,
                                    "buying 1 TSLA after a block of 47500"]) + "\n", encoding="utf-8")
    done = replay(recording, "--json")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == good
    said = unwrapped(done.stderr)
    assert done.stderr.count("warning") == 1
    assert ('line 1 is printed text, not a --json message: skipped (any more are counted in the summary): '
            '"buying 1 SPY after a block of 30000": what a handler prints goes into a recording, and the messages '
            "of one that does not call show() do not") in said
    assert "To record them all, with handlers that call show()" in said and "--demo --json > session.jsonl" in said
    assert "skipped 2 printed lines of the recording" in said and "broken" not in said


def test_the_logs_lines_in_a_recording_made_with_2_and_1_are_said_to_be_the_logs(tmp_path):
    # --demo --json > f 2>&1: the log's lines (logs.py's format), not a handler's printout.
    good = SESSION.read_text(encoding="utf-8").splitlines()[:3]
    recording = tmp_path / "session.jsonl"
    recording.write_text("\n".join(["2026-12-07 23:38:24Z demo data from a local server, not the market", *good,
                                    "2026-12-07 23:38:30Z received 3 trades in 6.0 s; reconnects: 0"]) + "\n",
                         encoding="utf-8")
    done = replay(recording, "--json")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == good
    said = unwrapped(done.stderr)
    assert ('"2026-12-07 23:38:24Z demo data from a local ser...": the log\'s lines are in it: record with > file '
            "alone, the log goes to stderr.") in said
    assert "handler prints" not in said and "skipped 2 printed lines of the recording" in said


@pytest.mark.parametrize(
    ("content", "says"),
    [(b"", "notes.txt is empty"), (b"hello\nworld\n", "notes.txt is not a recording: 2 of its first 2 lines"),
     (b"\x00\x01\x02" * 100, "is not a recording"), (b'{"kind": "trade"}\n', "is not a recording"),
     # A README with two messages in its examples: its other lines are not a recording's broken ones.
     (f"# A README\n\n{trade_line(1)}\nSome text.\n{trade_line(2)}\n```\n".encode(),
      "notes.txt is not a recording: 4 of its first 6 lines are printed lines, not --json messages"),
     # Recorded with the README's VWAP example in on_trade: its lines, not the messages.
     (b"block: 28700 TSLA at 350.12, +0.013% from the VWAP of 350.07\n",
      'notes.txt is not a recording: 1 of its first 1 lines are printed lines, not --json messages (the first: '
      '"block: 28700 TSLA at 350.12, +0.013% from the V..."): what a handler prints goes into a recording, '
      "and the messages of one that does not call show() do not. To record one, with handlers that call show()"),
     # Recorded without --json: the terminal's lines.
     (b"00:17:51.071Z correction  SPY   92 @ 600.06 -> 192 @ 600.06\n"
      b"00:17:54.846Z cancel      SPY   19 @ 600.05 cancelled\n",
      "...\"): the terminal's text, of a run without --json. To record one"),
     # Recorded without --json, with 2>&1: the log's lines too.
     (b"2026-12-07 23:38:24Z subscribed to trades of SPY, TSLA; Ctrl+C to stop\n"
      b"23:38:24.071Z trade       TSLA                    95 @    349.91  P\n",
      "\"): the terminal's text, of a run without --json; the log's lines are in it: record with > file alone, "
      "the log goes to stderr. To record one")],
    ids=["empty", "text", "binary", "JSON, not of --json", "more text than messages", "a bot's own printout",
         "recorded without --json", "recorded without --json, with 2>&1"],
)
def test_a_file_that_is_not_a_recording_exits_2_saying_so_and_handles_nothing(tmp_path, content, says):
    recording = tmp_path / "notes.txt"
    recording.write_bytes(content)
    done = replay(recording)
    assert done.returncode == 2
    assert says in unwrapped(done.stderr) and "--demo --json > session.jsonl" in done.stderr
    assert done.stdout == "" and "received" not in done.stderr and "Traceback" not in done.stderr


def test_an_empty_files_message_fits_80_columns_unbroken(start_script):
    script = start_script("--replay", "session.jsonl", env=NO_KEYS, edit=lambda script: (
        script.with_name("session.jsonl").write_text("")))
    assert script.finish() == 2
    assert re.fullmatch(r"\S+ \S+ error: --replay: session.jsonl is empty\. To record one:", script.err_lines[0])
    assert script.err_lines[1:] == ["  python websocket_stream.py --demo --json > session.jsonl"]


def test_a_missing_file_exits_2_saying_so(tmp_path):
    done = replay(tmp_path / "nosuch.jsonl")
    assert done.returncode == 2
    assert f"--replay: cannot read {tmp_path / 'nosuch.jsonl'}" in unwrapped(done.stderr)
    assert done.stdout == "" and "Traceback" not in done.stderr


def test_replay_needs_no_keys_and_no_alpaca_py():
    # alpaca-py made impossible to import: the stream would exit 2 saying so. The package's steps
    # as main() runs them, not the student's file, which may import alpaca-py for its orders.
    steps = """import sys
from pathlib import Path
from alpaca_stream import CommandLine, show
from alpaca_stream.records import KIND
async def shown(message): show(message)
with CommandLine() as run:
    run.until_stopped(run.streams(run.keys(folder=Path.cwd())), dict.fromkeys(KIND.values(), shown))
sys.exit(run.exit_status)"""
    done = subprocess.run([sys.executable, "-c", "import sys; sys.modules['alpaca'] = None\n" + steps,
                           "--replay", str(SESSION)], cwd=ROOT, capture_output=True, text=True, env=NO_KEYS,
                          timeout=30)
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.splitlines()) == len(SESSION.read_text(encoding="utf-8").splitlines())


@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        (["--replay", "x", "--demo"], "not allowed with argument"),
        (["--replay", "x", "--url", "ws://127.0.0.1:1"], "not allowed with argument"),
        (["--replay", "x", "--source", "nats://127.0.0.1:4222"], "not allowed with argument"),
        (["--replay", "x", "--test-stream"], "not allowed with argument"),
        (["--replay", "x", "AAPL"], "symbols, channel options and --feed have no effect"),
        (["--replay", "x", "--quotes"], "symbols, channel options and --feed have no effect"),
        (
            ["--replay", "x", "--feed", "sip"],
            "symbols, channel options and --feed have no effect",
        ),
        (["--replay-speed", "2"], "--replay-speed goes with --replay FILE"),
        (["--replay", "x", "--replay-speed", "0"], "--replay-speed takes a number above 0"),
        (["--replay", "x", "--replay-speed", "-1"], "--replay-speed takes a number above 0"),
        (["--replay", "x", "--replay-speed", "inf"], "--replay-speed takes a number above 0"),
        (["--replay", "x", "--replay-speed", "nan"], "--replay-speed takes a number above 0"),
        # a backtest's options (tests/test_backtest.py)
        (["--cash", "1000"], "--cash goes with --replay FILE or --history SPAN: it is a backtest's"),
        (["--latency", "0"], "--latency goes with --replay FILE or --history SPAN: it is a backtest's"),
        (["--slippage", "5"], "--slippage goes with --replay FILE or --history SPAN: it is a backtest's"),
        (["--fee-bps", "1"], "--fee-bps goes with --replay FILE or --history SPAN: it is a backtest's"),
        (["--replay", "x", "--cash", "0"], "--cash takes a number of dollars above 0"),
        (["--replay", "x", "--cash", "inf"], "--cash takes a number of dollars above 0"),
        (["--replay", "x", "--latency", "-1"], "--latency takes a number of milliseconds, 0 or more"),
        (["--replay", "x", "--slippage", "1001"], "--slippage takes a number of basis points from 0 to 1000"),
        (["--replay", "x", "--fee-bps", "nan"], "--fee-bps takes a number of basis points from 0 to 1000"),
        (["--replay", "x", "--fee-bps", "ten"], "--fee-bps: invalid float value: 'ten'"),
    ],
)
def test_replay_options_used_wrongly_exit_2_saying_why(arguments, error, capsys):
    with pytest.raises(SystemExit) as exited:
        parse_args(arguments)
    assert exited.value.code == 2
    assert error in unwrapped(capsys.readouterr().err)


def test_a_backtests_costs_are_the_options_given_in_costs_units_and_its_defaults_for_the_rest():
    assert settings_from(parse_args(["--replay", "x"])).costs == Costs()
    given = settings_from(parse_args(["--replay", "x", "--latency", "1500", "--fee-bps", "5"])).costs
    assert given == Costs(latency=1.5, fee_bps=5.0)  # --latency in milliseconds, Costs' in seconds
    assert settings_from(parse_args(["--replay", "x", "--cash", "25000", "--slippage", "10"])).costs == \
        Costs(cash=25_000.0, slippage_bps=10.0)


# -- the pace, and Ctrl+C ----------------------------------------------------------------------


def arrivals(path: Path, speed: float) -> list[tuple[float, Record]]:
    """Replay path in this process, with handlers that note when each message came."""
    got: list[tuple[float, Record]] = []

    async def note(message: Record) -> None:
        got.append((time.monotonic(), message))

    asyncio.run(stream(Recording(str(path), speed), handlers=dict.fromkeys([*KINDS, "orderbook", "news"], note)))
    return got


@pytest.mark.parametrize(("speed", "gap"), [(1, 0.4), (2, 0.2)])
def test_replay_speed_keeps_the_recorded_pace_times_the_speed_and_a_bar_does_not_set_it(
    tmp_path, speed, gap
):
    # A bar's timestamp is the start of its minute, earlier than the trades after it: the pace
    # goes by the trades, or the first would wait 5 s.
    bar = json.dumps(
        {
            "type": "bar",
            "symbol": "SPY",
            "timestamp": (WHEN - timedelta(seconds=5)).isoformat(),
            "open": 600.0,
            "high": 600.1,
            "low": 599.9,
            "close": 600.0,
            "volume": 300,
        }
    )
    recording = write(
        tmp_path / "paced.jsonl", [bar, trade_line(1), trade_line(2, 0.4), trade_line(3, 0.8)]
    )
    got = arrivals(recording, speed)
    assert [KIND[type(message)] for _, message in got] == ["bar", "trade", "trade", "trade"]
    times = [when for when, _ in got]
    assert times[1] - times[0] < 0.1
    # Each trade is due at its recorded time from the first, not from the one before: one that
    # came late on a busy machine is followed by one on time, sooner than the recorded gap.
    for k, later in enumerate(times[2:], start=1):
        assert k * gap * 0.95 <= later - times[1] < k * gap + 0.25


def test_without_a_speed_a_replay_does_not_wait_for_the_recorded_times(tmp_path):
    recording = write(
        tmp_path / "slow.jsonl", [trade_line(1), trade_line(2, 5), trade_line(3, 10)]
    )
    got = arrivals(recording, 0)
    assert len(got) == 3 and got[-1][0] - got[0][0] < 1


@POSIX_ONLY
@pytest.mark.parametrize(
    "speed", [[], ["--replay-speed", "1"]], ids=["as fast as it goes", "at the recorded pace"]
)
def test_ctrl_c_stops_a_replay_within_a_second_with_the_summary(start_script, tmp_path, speed):
    # 300,000 lines: far more than it replays in the time the test takes to send SIGINT.
    lines = SESSION.read_text(encoding="utf-8").splitlines()
    recording = write(tmp_path / "long.jsonl", lines * (300_000 // len(lines)))
    replaying = start_script("--replay", str(recording), *speed, bot=True, env=NO_KEYS)
    replaying.wait_for_lines(10)
    code, took = replaying.stop(signal.SIGINT)
    # Within a second as a student runs it (the README); 3 here, where the suite's other tests
    # share the cores: a replay that ran on to its end would take tens of seconds.
    assert code == 0 and took < 3, replaying.stderr
    assert "received" in replaying.err_lines[-1] or "received" in replaying.stderr.splitlines()[-2]
    assert len(replaying.out_lines) < 300_000


# -- run_handlers(): a test's own messages ------------------------------------------------------


def test_a_crypto_pairs_messages_replayed_or_handed_over_become_crypto_records_beside_stock_ones(tmp_path):
    when = datetime(2026, 12, 5, 15, 0, 0, 123456, tzinfo=timezone.utc)
    crypto = {"T": "t", "S": "BTC/USD", "p": 90000.5, "s": 0.0125, "t": when, "i": 3, "tks": "B"}
    stock = {"T": "t", "S": "SPY", "i": 7, "x": "V", "p": 600.5, "s": 100, "t": when, "c": ["@"], "z": "B"}
    recorded = [CryptoTrade(crypto), Trade(stock)]
    recording = write(tmp_path / "both.jsonl", [format_json(record) for record in recorded])
    replayed = [message for _, message in arrivals(recording, 0)]
    assert replayed == recorded and [type(message) for message in replayed] == [CryptoTrade, Trade]
    book = {"T": "o", "S": "BTC/USD", "t": when, "b": [{"p": 89990.0, "s": 0.5}], "a": [{"p": 90010.0, "s": 0.25}],
            "r": True}
    replayed = [message for _, message in arrivals(write(tmp_path / "book.jsonl", [format_json(Orderbook(book))]), 0)]
    assert replayed == [book] and isinstance(replayed[0], Orderbook)
    assert (replayed[0].book.best_bid, replayed[0].book.best_ask) == ((89990.0, 0.5), (90010.0, 0.25))
    article = {"T": "n", "id": 9, "headline": "BTCUSD Moves", "summary": "In a sentence.", "author": "A. Writer",
               "created_at": when, "updated_at": when, "url": "https://news.example.invalid/9",
               "content": "<p>Story.</p>", "symbols": ["BTCUSD"], "source": "benzinga"}
    replayed = [message for _, message in arrivals(write(tmp_path / "news.jsonl", [format_json(News(article))]), 0)]
    assert replayed == [article] and isinstance(replayed[0], News) and replayed[0].created_at == when
    recorder = Recorder()
    run_handlers([crypto, stock, json.loads(format_json(CryptoTrade(crypto)))], recorder.handlers)
    assert [type(message) for message in recorder.messages] == [CryptoTrade, Trade, CryptoTrade]
    assert recorder.messages[0] == recorder.messages[2] == CryptoTrade(crypto)



def test_lines_read_the_same_whatever_their_fields_order_and_kinds_with_the_same_fields_stay_apart(tmp_path):
    # A replay looks each line's layout up (its kind and field names in order): a line of
    # another order, or with a field more, is read as itself, and a bar is not taken for an
    # updated bar, whose fields are the same.
    when = datetime(2026, 12, 5, 15, 0, tzinfo=timezone.utc)
    trade = {"T": "t", "S": "SPY", "p": 600.5, "s": 100, "t": when, "x": "V", "c": ["@"], "i": 1, "z": "B"}
    bar = {"T": "b", "S": "SPY", "o": 600.0, "h": 601.0, "l": 599.5, "c": 600.5, "v": 1200, "t": when}
    lines = [format_json(Trade(trade)), json.dumps(dict(reversed(json.loads(format_json(Trade(trade))).items()))),
             format_json(Trade({**trade, "tks": "B"})), format_json(Bar(bar)),
             format_json(UpdatedBar({**bar, "T": "u", "c": 600.75})), format_json(Bar(bar))]
    replayed = [message for _, message in arrivals(write(tmp_path / "layouts.jsonl", lines), 0)]
    assert replayed == [trade, trade, {**trade, "tks": "B"}, bar, {**bar, "T": "u", "c": 600.75}, bar]
    assert [type(message) for message in replayed] == [Trade, Trade, Trade, Bar, UpdatedBar, Bar]


def test_main_leaves_the_garbage_collector_as_it_found_it_for_a_caller_in_the_same_process():
    # main() freezes what start-up made for the run (cli.py); a test or a notebook that calls it
    # gets its process back as it was: nothing frozen. (Something else in this worker may have
    # frozen objects before, which main() then leaves frozen: the CI leg of 3.12 had 375.)
    gc.unfreeze()
    assert ws.main(["--replay", str(SESSION), "--quiet"]) == 0
    assert gc.get_freeze_count() == 0


def test_a_line_with_nan_as_the_json_module_writes_it_is_replayed_not_skipped(tmp_path):
    # orjson, which reads the batches, refuses NaN; the json module, which reads them then,
    # takes it, as it writes it.
    lines = [trade_line(1), json.dumps({**json.loads(trade_line(2)), "price": float("nan")}), trade_line(3)]
    replayed = [message for _, message in arrivals(write(tmp_path / "nan.jsonl", lines), 0)]
    assert [message.id for message in replayed] == [1, 2, 3]
    assert replayed[1].price != replayed[1].price  # NaN


def test_an_options_messages_replayed_or_handed_over_become_option_records_beside_stock_ones(tmp_path):
    when = datetime(2026, 12, 5, 15, 0, 0, 123456, tzinfo=timezone.utc)
    trade = {"T": "t", "S": "AAPL261218C00250000", "t": when, "p": 15.3, "s": 3, "x": "C", "c": "I"}
    quote = {"T": "q", "S": "AAPL261218C00250000", "t": when, "bx": "C", "bp": 15.25, "bs": 12, "ax": "Q",
             "ap": 15.35, "as": 40, "c": "A"}
    stock = {"T": "t", "S": "AAPL", "i": 7, "x": "V", "p": 250.5, "s": 100, "t": when, "c": ["@"], "z": "C"}
    recorded = [OptionTrade(trade), OptionQuote(quote), Trade(stock)]
    recording = write(tmp_path / "options.jsonl", [format_json(record) for record in recorded])
    replayed = [message for _, message in arrivals(recording, 0)]
    assert replayed == recorded and [type(message) for message in replayed] == [OptionTrade, OptionQuote, Trade]
    assert replayed[0].conditions == "I" and replayed[0].market == "options"
    recorder = Recorder()
    run_handlers([trade, json.loads(format_json(OptionQuote(quote))), stock], recorder.handlers)
    assert [type(message) for message in recorder.messages] == [OptionTrade, OptionQuote, Trade]

def test_run_handlers_takes_alpacas_wire_form_with_any_time_and_what_json_prints_alike():
    when = datetime(2026, 11, 24, 15, 0, 0, 123456, tzinfo=timezone.utc)
    wire = {"T": "t", "S": "SPY", "p": 600.5, "s": 100, "t": when, "x": "V", "i": 7, "tks": "B"}
    as_json = json.loads(format_json(Trade(wire)))
    recorder = Recorder()
    session = run_handlers(  # a time as a datetime, as msgpack's, and as Alpaca's JSON frames write it
        [wire, {**wire, "t": msgpack.Timestamp.from_datetime(when)}, {**wire, "t": "2026-11-24T15:00:00.123456Z"},
         as_json], recorder.handlers
    )
    assert recorder.messages == [Trade(wire)] * 4
    assert all(type(message) is Trade for message in recorder.messages)
    assert session.received["trade"] == 4
    assert wire["t"] is when  # the test's own message is left as it was


def test_run_handlers_keeps_the_order_and_logs_a_handler_that_raises_as_the_stream_does(caplog):
    got: list[int] = []

    async def fails_on_2(trade: Trade) -> None:
        if trade.id == 2:
            raise RuntimeError("boom")
        got.append(trade.id)

    trades = [json.loads(trade_line(id)) for id in (1, 2, 3)]
    with caplog.at_level(logging.INFO, logger="alpaca_stream"):
        session = run_handlers(trades, {"trade": fails_on_2}, keep_going=True)
    assert got == [1, 3] and session.received["trade"] == 3
    assert "fails_on_2 raised RuntimeError on a trade of SPY:\nboom" in caplog.text


def test_run_handlers_raises_at_the_end_listing_every_error_even_of_a_message_with_fields_left_out():
    got: list[float] = []

    async def divides(trade: Trade) -> None:
        got.append(trade.price)
        if trade.price > 1:
            _ = 1 / 0

    small = {"type": "trade", "symbol": "SPY", "price": 1.0, "size": 1}  # as a student writes one
    with pytest.raises(HandlersFailed) as failed:
        run_handlers([small, {**small, "price": 2.0}, {**small, "symbol": "TSLA", "price": 3.0}], {"trade": divides})
    assert got == [1.0, 2.0, 3.0]  # each message was handed over, as on the stream
    assert str(failed.value) == (
        "2 of the messages made a handler raise:\n"
        "divides raised ZeroDivisionError on a trade of SPY: division by zero\n"
        "divides raised ZeroDivisionError on a trade of TSLA: division by zero")  # not what they came without
    assert isinstance(failed.value.__cause__, ZeroDivisionError)


@pytest.mark.parametrize("style", ["auto", "native"])
def test_a_pytest_failure_of_run_handlers_shows_the_handlers_line_first_not_the_packages(style, copy_script):
    folder = copy_script()
    # The handler in a module of its own, as a student's is in websocket_stream.py, and the test
    # through the script's run_handlers(), as the README shows.
    (folder / "strategy.py").write_text("async def on_trade(trade):\n    print(symbl)\n")
    (folder / "test_strategy.py").write_text(
        "import websocket_stream\nfrom strategy import on_trade\n\n\ndef test_on_trade():\n"
        "    websocket_stream.run_handlers([{'type': 'trade', 'symbol': 'SPY', 'price': 1.0, 'size': 1}],\n"
        "                                  {'trade': on_trade})\n")
    env = {name: value for name, value in script_env().items() if not name.startswith("PYTEST")}
    pytest_run = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", f"--tb={style}",
                                 "test_strategy.py"], cwd=folder, env=env, capture_output=True, text=True, timeout=60)
    shown = pytest_run.stdout
    assert pytest_run.returncode == 1 and "name 'symbl' is not defined" in shown, shown
    if style == "native":  # Python's own format: the first frame is the handler's
        first = next(line for line in shown.splitlines() if line.startswith('  File "'))
        assert "strategy.py" in first and "in on_trade" in first, shown
    else:  # pytest's: the handler's line marked first, and none of the package's frames
        first = next(line for line in shown.splitlines() if line.startswith(">"))
        assert first.split() == [">", "print(symbl)"], shown
        assert "alpaca_stream/" not in shown and "alpaca_stream\\" not in shown, shown


def test_run_handlers_waits_for_the_work_a_handler_started_in_the_background():
    placed: list[int] = []

    async def place(id: int) -> None:
        await asyncio.sleep(0.2)
        placed.append(id)

    async def orders(trade: Trade) -> None:
        in_background(place(trade.id))

    run_handlers([json.loads(trade_line(1)), json.loads(trade_line(2))], {"trade": orders})
    assert placed == [1, 2]


@pytest.mark.parametrize(
    ("messages", "handlers", "error"),
    [
        (
            [{"type": "trade", "symbol": "SPY", "timestamp": "yesterday"}],
            {},
            "nor as --json prints it",
        ),
        ([{"symbol": "SPY"}], {}, "nor as --json prints it"),
        (
            [],
            {"trades": Recorder().record},
            "no such kind of message: trades (one of trade, quote",
        ),
    ],
)
def test_run_handlers_refuses_what_is_not_a_message_or_a_kind_saying_so(messages, handlers, error):
    with pytest.raises(ValueError, match=error.replace("(", r"\(")):
        run_handlers(messages, handlers)
