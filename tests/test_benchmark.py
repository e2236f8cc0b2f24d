"""The benchmark's command line: what it offers, and what it refuses (before it writes anything)."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

BENCH = ROOT / "benchmarks" / "stream_bench.py"


def test_help_describes_the_benchmark_in_full_and_names_every_figure():
    printed = subprocess.run([sys.executable, str(BENCH), "--help"], capture_output=True, text=True, timeout=30)
    help_text = " ".join(printed.stdout.split())  # as argparse wrapped it, unwrapped
    assert ("Benchmark: websocket_stream.py side by side with what a user would otherwise write, in one run on "
            "one machine, against the local server, each client in turn, round after round.") in help_text
    for figure in ("trades", "quotes", "handlers", "latency", "exit", "recovery", "memory", "backtest", "history",
                   "chart", "cluster"):
        assert figure in help_text.split("--only")[-1]


def test_an_unknown_figure_exits_2_naming_the_choices_and_leaves_the_results_alone():
    results = ROOT / "benchmarks" / "results.json"
    before = results.read_bytes() if results.exists() else None
    done = subprocess.run([sys.executable, str(BENCH), "--only", "nosuch"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert "invalid choice: 'nosuch'" in done.stderr
    for figure in ("trades", "quotes", "handlers", "latency", "exit", "recovery", "memory"):
        assert figure in done.stderr
    assert (results.read_bytes() if results.exists() else None) == before


def prints_rates_peaks_and_targets(figure: str, readers: tuple[str, ...], targets: tuple[str, ...],
                                   *size: str, written: Path) -> None:
    """A figure of rates and peak memories (whole / half), run once at a tiny size: a row for
    each reader, its targets, and the same written to `written`; the benchmark's own results
    left alone."""
    results = ROOT / "benchmarks" / "results.json"
    before = results.read_bytes() if results.exists() else None
    done = subprocess.run([sys.executable, str(BENCH), "--only", figure, "--runs", "1", *size, "--results",
                           str(written)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    for reader in readers:
        row = re.search(rf"{re.escape(reader)} +([\d,]+) / ([\d.]+) / ([\d.]+) ", done.stdout)
        assert row, done.stdout
        rate, peak, half_peak = float(row[1].replace(",", "")), float(row[2]), float(row[3])
        assert rate > 0 and half_peak > 1 and 1 < peak < 1000, row[0]
    for target in targets:
        assert target in done.stdout
    assert set(json.loads(written.read_text())["figures"][figure]) == set(readers)
    assert (results.read_bytes() if results.exists() else None) == before


def test_the_backtest_figure_prints_each_readers_rate_and_peaks_and_the_targets_and_writes_them(tmp_path):
    prints_rates_peaks_and_targets(
        "backtest", ("bare json loop", "ours --replay --quiet", "ours backtest"),
        ("ours --replay --quiet: messages/s at least 1.3x the bare json loop",
         "ours backtest: messages/s at least 0.8x the replay with no order",
         "ours backtest: peak memory flat within 10 MB from half the recording to all of it"),
        "--backtest-messages", "2000", written=tmp_path / "results.json")


def test_the_history_figure_prints_each_readers_rate_and_peaks_and_the_targets_and_writes_them(tmp_path):
    prints_rates_peaks_and_targets(
        "history", ("alpaca-py get_stock_trades", "ours --history", "ours --history cached", "ours --replay --quiet"),
        ("ours --history cached: messages/s at least those of --replay of the same messages",
         "ours --history: peak memory flat within 10 MB from half the day to all of it",
         "ours --history cached: peak memory flat within 10 MB from half the day to all of it"),
        "--history-trades", "2000", written=tmp_path / "results.json")


needs_chromium = pytest.mark.skipif(not shutil.which(os.environ.get("CHROMIUM", "/usr/bin/chromium")),
                                    reason="no Chromium (apt-get install chromium; CHROMIUM=path for another)")


@needs_chromium
def test_the_chart_figures_wait_for_the_last_close_is_false_not_an_error_while_the_page_has_no_candle():
    playwright = pytest.importorskip("playwright.sync_api", reason="no Playwright: pip install -r requirements-dev.txt")
    spec = importlib.util.spec_from_file_location("stream_bench", BENCH)
    assert spec and spec.loader
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    closes_there = bench.last_close_is("SPY", 601.81)
    with playwright.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=os.environ.get("CHROMIUM", "/usr/bin/chromium"),
                                         args=["--no-sandbox"])
        try:
            page = browser.new_page()
            series = "window.charts = {SPY: {candles: {data: () => window.candles}}}"
            assert page.evaluate(closes_there) is False  # no chart yet
            for candles, closed in (([], False), ([{"close": 601.5}], False), ([{"close": 601.81}], True)):
                page.evaluate(f"() => {{ {series}; window.candles = {json.dumps(candles)}; }}")
                assert page.evaluate(closes_there) is closed, candles
        finally:
            browser.close()


@needs_chromium
@pytest.mark.timeout(180)  # a loaded machine's page may take a minute to draw the last trade
def test_the_chart_figure_times_printing_with_a_page_drawing_against_alone_and_checks_the_target(tmp_path):
    pytest.importorskip("playwright.sync_api", reason="no Playwright: pip install -r requirements-dev.txt")
    written = tmp_path / "results.json"
    done = subprocess.run([sys.executable, str(BENCH), "--only", "chart", "--runs", "1", "--chart-trades", "2000",
                           "--results", str(written)], capture_output=True, text=True, timeout=170)
    assert done.returncode == 0, done.stderr  # the page's last candle closed at the last trade printed
    for client in ("ours", "ours --chart"):
        assert re.search(rf"with a chart's page +{re.escape(client)} +[\d,]+ ", done.stdout), done.stdout
    assert "ours --chart: trades/s to a pipe with a page drawing at least 0.8x printing alone" in done.stdout
    assert set(json.loads(written.read_text())["figures"]["chart"]) == {"ours", "ours --chart"}


def test_the_targets_give_issue_36s_three_ratios_printing_a_printing_feeder_and_a_bot_each_met_or_missed():
    spec = importlib.util.spec_from_file_location("stream_bench", BENCH)
    assert spec and spec.loader
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    medians = {"trades": {"bare script": 100.0, "bare f-string": 125.0, "ours": 250.0, "ours --json": 150.0},
               "fanout": {"ours": 1000.0, "ours --publish --quiet": 900.0, "ours --publish": 500.0,
                          "a --source bot": 590.0, "a --durable bot": 300.0, "nats-py floor": 1200.0}}
    checks = {target: (figure, met) for target, figure, met in bench.targets(medians)}
    assert checks["ours: trades to a pipe at least 2x the faster bare script"] == ("2.00x", True)
    assert checks["ours --publish: at least 50% of printing alone's messages/s"] == ("50%", True)
    assert checks["a --source bot: at least 60% of printing alone's messages/s"] == ("59%", False)
