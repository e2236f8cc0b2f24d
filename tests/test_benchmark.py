"""The benchmark's command line: what it offers, and what it refuses (before it writes anything)."""

from __future__ import annotations

import json
import re
import subprocess
import sys

from conftest import ROOT

BENCH = ROOT / "benchmarks" / "stream_bench.py"


def test_help_describes_the_benchmark_in_full_and_names_every_figure():
    printed = subprocess.run([sys.executable, str(BENCH), "--help"], capture_output=True, text=True, timeout=30)
    help_text = " ".join(printed.stdout.split())  # as argparse wrapped it, unwrapped
    assert ("Benchmark: websocket_stream.py side by side with what a user would otherwise write, in one run on "
            "one machine, against the local server, each client in turn, round after round.") in help_text
    for figure in ("trades", "quotes", "handlers", "latency", "exit", "recovery", "memory", "backtest", "cluster"):
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


def test_the_backtest_figure_prints_each_readers_rate_and_peaks_and_the_targets_and_writes_them(tmp_path):
    results = ROOT / "benchmarks" / "results.json"
    before = results.read_bytes() if results.exists() else None
    written = tmp_path / "results.json"
    done = subprocess.run([sys.executable, str(BENCH), "--only", "backtest", "--runs", "1", "--backtest-messages",
                           "2000", "--results", str(written)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    for reader in ("bare json loop", "ours --replay --quiet", "ours backtest"):
        row = re.search(rf"{re.escape(reader)} +([\d,]+) / ([\d.]+) / ([\d.]+) ", done.stdout)
        assert row, done.stdout
        rate, peak, half_peak = float(row[1].replace(",", "")), float(row[2]), float(row[3])
        assert rate > 0 and half_peak > 1 and 1 < peak < 1000, row[0]
    for target in ("ours --replay --quiet: messages/s at least 1.3x the bare json loop",
                   "ours backtest: messages/s at least 0.8x the replay with no order",
                   "ours backtest: peak memory flat within 10 MB from half the recording to all of it"):
        assert target in done.stdout
    figures = json.loads(written.read_text())["figures"]["backtest"]
    assert set(figures) == {"bare json loop", "ours --replay --quiet", "ours backtest"}
    assert (results.read_bytes() if results.exists() else None) == before
