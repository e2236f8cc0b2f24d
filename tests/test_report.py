"""--report FILE.html (#34): a backtest's report, one file complete alone: the library inlined
with its license, nothing fetched from anywhere but the attribution's link to TradingView, the
summary's figures as a table, the same as the run prints. The backtest runs in this process
with the tests' own handlers (test_backtest's Bot), through main(); its page in a real browser
is test_report_browser.py's."""

from __future__ import annotations

import json
import os
import re
import signal
from datetime import datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path

import pytest
from conftest import ROOT, run, unwrapped
from test_backtest import Bot, Plan, backtest, market, trade
from test_backtest_result import EVENING, TWO_MARKET_BUYS
from test_chart import WHEN, candles_of
from test_chart import trade as trade_record

import websocket_stream as ws
from alpaca_stream.errors import EXIT_USAGE
from alpaca_stream.options import parse_args
from alpaca_stream.outputs.chart import CANDLES_KEPT, FOLDER
from alpaca_stream.outputs.report import Report
from alpaca_stream.records import Bar, Quote, Record
from alpaca_stream.sources.recording import REPLAY_BATCH

pytestmark = pytest.mark.timeout(30)

# SPY's trades over six minutes, a few of TSLA's; 10 SPY bought on the 5th message, sold on the
# 14th; the fills come on SPY's trades after them.
PRICES = [600.0, 600.5, 599.8, 601.0, 601.2, 600.9, 602.0, 601.5, 603.0, 602.2, 604.0, 603.5, 603.1, 602.8,
          602.5, 603.3]
TRADES = [trade(25 * number, price, 100 + number) for number, price in enumerate(PRICES)] + [
    trade(30, 350.0, 5, "TSLA"), trade(95, 351.5, 7, "TSLA"), trade(96, 349.9, 3, "TSLA")]
TRADES.sort(key=lambda line: line["timestamp"])
PLAN: Plan = {5: lambda client: client.submit_order(market(10)),
              14: lambda client: client.submit_order(market(10, "sell"))}


class Page(HTMLParser):
    """What a report's HTML holds: every tag's src and href, the summary table's rows."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.links: list[tuple[str, str, str]] = []  # tag, attribute, value
        self.tags: list[str] = []
        self.table: dict[str, str] = {}
        self.cell: list[str] = []
        self.row: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.links += [(tag, name, value or "") for name, value in attrs if name in ("src", "href")]
        if tag in ("th", "td"):
            self.cell = []

    def handle_data(self, data: str) -> None:
        self.cell.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag in ("th", "td"):
            self.row.append("".join(self.cell).strip())
        elif tag == "tr":
            name, value = self.row
            self.table[name] = value
            self.row = []


def report_data(text: str) -> dict:
    """The run's data, as the report's script has it."""
    found = re.search(r"^const report = (.*);$", text, re.MULTILINE)
    assert found, "no data in the report"
    return json.loads(found.group(1))


def summarized(log: str) -> dict[str, str]:
    """The figures of the summary the run printed, named as the report's table names them."""
    said = unwrapped(log)

    def found(pattern: str) -> tuple[str, ...]:
        match = re.search(pattern, said)
        assert match, f"not in the summary: {pattern}"
        return match.groups()

    figures = dict(zip(("orders", "fills", "open at the end"),
                       found(r"backtest: orders (\d+), fills (\d+), open at the end (\d+)")))
    for symbol, realized, unrealized, holding in re.findall(
            r"([A-Z]+): realized ([-+][\d,.]+), unrealized ([-+][\d,.]+)(?:, holding (\S+))?", said):
        figures |= {f"{symbol} realized": realized, f"{symbol} unrealized": unrealized,
                    f"{symbol} holding": holding or "0"}
    figures |= dict(zip(("equity", "change", "fees in it", "largest drawdown", "largest drawdown, %"),
                        found(r"equity ([\d,.]+) \(([-+][\d,.]+)(?:, fees ([\d,.]+) in it)?\); "
                              r"largest drawdown ([\d,.]+) \(([\d.]+)%\)")))
    figures["buy and hold equity"] = found(r"buy and hold [A-Z, ]+: equity ([\d,.]+)")[0]
    return {name: figure for name, figure in figures.items() if figure is not None}


def reported(tmp_path: Path, caplog: pytest.LogCaptureFixture, options: tuple[str, ...] = ()) -> tuple[str, dict]:
    """The report of the backtest of TRADES with PLAN, and the figures of the summary printed."""
    path = tmp_path / "report.html"
    backtest(tmp_path, TRADES, PLAN, options=("--report", str(path), *options))
    return path.read_text(encoding="utf-8"), summarized(caplog.text)


def test_the_report_is_one_file_that_fetches_nothing_with_the_librarys_license_and_no_path_in_it(tmp_path, caplog):
    text, _ = reported(tmp_path, caplog)
    page = Page(text)
    assert page.links == [("a", "href", "https://www.tradingview.com/")]  # the attribution: a link, not a fetch
    assert {"link", "img", "iframe", "object", "embed"}.isdisjoint(page.tags)
    assert "LightweightCharts" in text and "attributionLogo:true" in text.replace(" ", "")
    assert (FOLDER / "LICENSE").read_text(encoding="utf-8") in text
    assert (FOLDER / "NOTICE").read_text(encoding="utf-8") in text
    assert str(tmp_path) not in text and str(ROOT) not in text


def test_the_reports_table_has_the_figures_of_the_summary_the_run_printed(tmp_path, caplog):
    text, printed = reported(tmp_path, caplog, ("--fee-bps", "2"))
    table = Page(text).table
    assert set(printed) >= {"SPY realized", "fees in it", "largest drawdown"}
    assert {name: table.get(name) for name in printed} == printed
    assert float(printed["SPY realized"]) != 0  # a round trip: something realized, to the cent


def test_the_report_has_each_minutes_candle_of_the_trades_each_fill_and_the_equity_to_the_end(tmp_path, caplog):
    text, printed = reported(tmp_path, caplog)
    data = report_data(text)
    made = candles_of(TRADES)
    assert {symbol: {candle[0]: candle[1:] for candle in shown["candles"]}
            for symbol, shown in data["symbols"].items()} == made
    recorded = {line["timestamp"]: line["price"] for line in TRADES}
    spy = data["symbols"]["SPY"]
    assert [side for _, side, _, _ in spy["fills"]] == ["buy", "sell"]
    for minute, _, qty, price in spy["fills"]:
        assert qty == 10 and minute in made["SPY"]
        assert any(price == at for when, at in recorded.items()
                   if int(datetime.fromisoformat(when).timestamp()) // 60 * 60 == minute)
    assert data["symbols"]["TSLA"]["fills"] == []
    # Equity at each minute's last price of SPY while it is held: the cash left and the 10 shares.
    (bought, _, _, paid), (sold, *_) = spy["fills"]
    held = [(minute, value) for minute, value in data["equity"] if bought < minute < sold]
    assert len(held) >= 2 and held == [(minute, pytest.approx(100_000 + 10 * (made["SPY"][minute][3] - paid)))
                                       for minute, _ in held]
    # From the start's cash at the first minute, to the summary's equity at the last.
    assert data["equity"][0] == [min(made["SPY"]), 100_000] and bought > min(made["SPY"])
    assert data["equity"][-1] == [max(made["SPY"]), float(printed["equity"].replace(",", ""))]


def test_a_backtest_stopped_with_ctrl_c_writes_its_report_with_the_fills_so_far(tmp_path, caplog):
    # Stopped in the first of three batches: the run ends before the recording's end.
    path = tmp_path / "report.html"
    stop: Plan = {**PLAN, 8: lambda client: signal.raise_signal(signal.SIGINT)}
    later = [trade(600 + number, 600.0, 1) for number in range(2 * REPLAY_BATCH)]
    backtest(tmp_path, TRADES + later, stop, options=("--report", str(path)))
    assert "stopping; a second Ctrl+C forces it" in caplog.text
    table = Page(path.read_text(encoding="utf-8")).table
    assert (table["fills"], table["SPY holding"]) == ("1", "10")
    # The span it covered, to the stop (the trades after the 6th minute were not played), said so.
    text = path.read_text(encoding="utf-8")
    assert re.fullmatch(r"recording\.jsonl, Dec 2, 2026 10:00 to 10:0[0-6], New York time", report_data(text)["title"])
    stopped = re.search(r'<p id="stopped">(.*)</p>', text)
    assert stopped and re.fullmatch(r"Stopped \(Ctrl\+C or SIGTERM\) at Dec 2, 2026 10:0[0-6], New York time, the "
                                    r"recording's: the figures are those of the run so far\.", stopped[1])
    assert f"wrote {path} ({path.stat().st_size / 1000:,.0f} KB)" in unwrapped(caplog.text)


def test_a_history_runs_report_is_that_of_its_recording_replayed(tmp_path, capsys):
    span = ["--demo", "SPY", "--history", "2025-12-02T15:00..15:10"]  # 10:00 in New York: regular hours
    assert ws.main([*span, "--json"]) == 0
    recording = tmp_path / "history.jsonl"
    recording.write_text(capsys.readouterr().out, encoding="utf-8")
    plan: Plan = {3: lambda client: client.submit_order(market(1)), 40: lambda client: client.submit_order(
        market(1, "sell"))}
    history, replayed = tmp_path / "history.html", tmp_path / "replayed.html"
    assert ws.main([*span, "--quiet", "--report", str(history)], handlers=Bot(plan).handlers) == 0
    assert ws.main(["--replay", str(recording), "--quiet", "--report", str(replayed)], handlers=Bot(plan).handlers) == 0
    (played, page), (again, page_again) = ((report_data(text), Page(text)) for text in (
        history.read_text(encoding="utf-8"), replayed.read_text(encoding="utf-8")))
    assert played["title"] == "history, Dec 2, 2025 10:00 to 10:10, New York time"  # as asked, in the charts' time
    assert again["title"] == "history.jsonl, Dec 2, 2025 10:00 to 10:09, New York time"  # the messages' span
    assert 'id="stopped"' not in history.read_text(encoding="utf-8")
    assert len(played["symbols"]["SPY"]["fills"]) == 2 and len(played["equity"]) > 2
    assert {**played, "title": ""} == {**again, "title": ""} and page.table == page_again.table


def test_a_history_stopped_before_its_end_gives_the_span_it_covered_and_says_where_it_stopped(tmp_path):
    path = tmp_path / "report.html"
    asked = (datetime(2026, 6, 1, 8, tzinfo=WHEN.tzinfo), datetime(2026, 12, 5, 1, tzinfo=WHEN.tzinfo))
    report = Report(str(path), "history", lambda: WHEN + timedelta(minutes=12), asked)
    run(report.wrap({})["trade"](trade_record(0, 600.0, 1)))
    report.write(None, stopped=True)
    text = path.read_text(encoding="utf-8")
    assert report_data(text)["title"] == "history, Dec 2, 2026 10:00 to 10:12, New York time"
    assert ('<p id="stopped">Stopped (Ctrl+C or SIGTERM) at Dec 2, 2026 10:12, New York time, the recording\'s, '
            "of a run asked for Jun 1, 2026 04:00 to Dec 4, 2026 20:00: the figures are those of the run so far.</p>"
            ) in text


def test_an_evening_backtests_report_says_its_orders_wait_for_the_open_and_why_it_has_no_equity(tmp_path, caplog):
    path = tmp_path / "report.html"
    backtest(tmp_path, EVENING, TWO_MARKET_BUYS, options=("--report", str(path)))
    text = path.read_text(encoding="utf-8")
    said = re.findall(r'<p class="said">(.*)</p>', text)
    assert said == ["2 market orders waiting for the open (09:30 New York, 2026-12-08): the recording ends at 19:27 "
                    "New York, outside regular hours; docs/backtest.md",
                    "No order filled: no equity curve (the equity stayed the cash)."]
    assert " ".join(said[0].split()) in unwrapped(caplog.text)  # as the summary printed it
    assert (Page(text).table["fills"], report_data(text)["equity"]) == ("0", [])


def test_a_replay_whose_handlers_place_no_order_has_its_prices_and_says_there_was_no_order(tmp_path, caplog):
    path = tmp_path / "report.html"
    backtest(tmp_path, TRADES, {}, options=("--report", str(path)))
    text = path.read_text(encoding="utf-8")
    assert "The handlers placed no order" in text
    assert report_data(text)["equity"] == [] and len(report_data(text)["symbols"]["SPY"]["candles"]) == 7


def test_a_long_run_has_coarser_candles_never_more_than_the_live_pages_and_the_same_prices():
    # 3 trades a minute for 10,000 minutes: past 5,000, 5-minute candles.
    report = Report("unused.html", "", lambda: WHEN)
    handlers = report.wrap({})
    trades = [trade_record(20 * number, 100 + number % 17, 1 + number % 5) for number in range(30_000)]

    async def fed() -> None:
        for record in trades:
            await handlers["trade"](record)

    run(fed())
    candles = report.symbols["SPY"].candles
    assert candles.step == 300 and len(candles.values) <= CANDLES_KEPT
    made = candles_of([{"symbol": "SPY", "price": record["p"], "size": record["s"], "timestamp":
                        (record["t"] - timedelta(seconds=record["t"].timestamp() % 300)).isoformat()}
                       for record in trades])["SPY"]
    assert candles.values == made


def test_a_symbols_price_is_its_quotes_midpoints_until_a_trade_comes_then_its_trades_until_a_bar_comes():
    report = Report("unused.html", "", lambda: WHEN)
    handlers = report.wrap({})

    def quote(seconds: float, bid: float, ask: float) -> Quote:
        return Quote({"T": "q", "S": "SPY", "t": WHEN + timedelta(seconds=seconds), "bp": bid, "bs": 1, "ap": ask,
                      "as": 1})

    async def fed(kind: str, *records: Record) -> dict[int, list[float]]:
        for record in records:
            await handlers[kind](record)
        return dict(report.symbols["SPY"].candles.values)

    minute = int(WHEN.timestamp())
    bar = Bar({"T": "b", "S": "SPY", "t": WHEN, "o": 10.0, "h": 10.6, "l": 9.9, "c": 10.2, "v": 300})
    assert run(fed("quote", quote(1, 10.0, 10.2), quote(2, 0.0, 10.4), quote(70, 10.4, 10.6))) == {
        minute: [10.1, 10.1, 10.1, 10.1, 0.0], minute + 60: [10.5, 10.5, 10.5, 10.5, 0.0]}  # one-sided: none
    assert run(fed("trade", trade_record(80, 10.3, 5))) == {minute + 60: [10.3, 10.3, 10.3, 10.3, 5]}
    assert run(fed("quote", quote(90, 11.0, 11.2))) == {minute + 60: [10.3, 10.3, 10.3, 10.3, 5]}
    assert run(fed("bar", bar)) == {minute: [10.0, 10.6, 9.9, 10.2, 300]}
    assert run(fed("trade", trade_record(130, 12.0, 1))) == {minute: [10.0, 10.6, 9.9, 10.2, 300]}


@pytest.mark.parametrize(("argv", "says"), [
    (["--demo", "--report", "r.html"], "--report goes with --replay FILE or --history SPAN: the report of its "
                                       "backtest"),
    (["SPY", "--report", "r.html"], "--report goes with --replay FILE or --history SPAN"),
    (["--replay", "s.jsonl", "--report", "no-such-folder/r.html"], "--report no-such-folder/r.html: there is no "
                                                                   "folder no-such-folder"),
    (["--replay", "s.jsonl", "--report", "."], "--report . is a folder: name the file to write, as report.html"),
    (["--replay", "s.jsonl", "--report", "s.jsonl"], "--report s.jsonl is --replay's file: it would be overwritten"),
])
def test_a_report_without_a_backtest_or_where_it_cannot_be_written_exits_2_naming_it(argv, says, capsys):
    with pytest.raises(SystemExit) as exited:
        parse_args(argv)
    assert exited.value.code == EXIT_USAGE
    lines = capsys.readouterr().err.splitlines()
    assert says in " ".join(line.strip() for line in lines)
    assert [line for line in lines if len(line) > 80] == []


def test_a_report_in_a_folder_that_may_not_be_written_to_exits_2_naming_it(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != tmp_path)
    with pytest.raises(SystemExit) as exited:
        parse_args(["--replay", "s.jsonl", "--report", str(tmp_path / "r.html")])
    assert exited.value.code == EXIT_USAGE
    assert f"--report: cannot write {tmp_path / 'r.html'}: permission denied" in unwrapped(capsys.readouterr().err)


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="no /proc: Linux's")
def test_a_report_the_system_refuses_though_its_folder_is_writable_exits_2_before_the_run(capsys):
    with pytest.raises(SystemExit) as exited:
        parse_args(["--replay", "s.jsonl", "--report", "/proc/x.html"])  # /proc: root may write, none may make
    assert exited.value.code == EXIT_USAGE
    assert "--report: cannot write /proc/x.html: No such file or directory" in unwrapped(capsys.readouterr().err)


def test_a_reports_trial_before_the_run_leaves_no_file_and_an_old_one_as_it_was(tmp_path):
    new, old = tmp_path / "new.html", tmp_path / "old.html"
    old.write_text("the last run's", encoding="utf-8")
    for path in (new, old):
        parse_args(["--replay", "s.jsonl", "--report", str(path)])
    assert not new.exists() and old.read_text(encoding="utf-8") == "the last run's"


def test_a_report_that_cannot_be_written_at_the_end_exits_2_saying_why_after_the_summary(tmp_path, caplog):
    path = tmp_path / "report.html"
    recording = tmp_path / "recording.jsonl"
    recording.write_text("".join(json.dumps(line) + "\n" for line in TRADES), encoding="utf-8")
    plan = {**PLAN, 8: lambda client: path.mkdir()}  # where the file was to go, a folder now
    bot = Bot(plan)
    assert ws.main(["--replay", str(recording), "--quiet", "--report", str(path)], handlers=bot.handlers) == EXIT_USAGE
    said = " ".join(caplog.text.split())
    assert f"--report: cannot write {path}: " in said  # and why, in the system's words
    assert said.index("backtest: orders 2, fills 2") < said.index("--report: cannot write")
    assert "Traceback" not in said


def test_help_names_report(capsys):
    with pytest.raises(SystemExit):
        ws.main(["--help"])
    assert "--report FILE.html" in capsys.readouterr().out
