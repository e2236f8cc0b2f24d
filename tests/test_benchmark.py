"""The benchmark's command line: what it offers, and what it refuses (before it writes anything)."""

from __future__ import annotations

import subprocess
import sys

from conftest import ROOT

BENCH = ROOT / "benchmarks" / "stream_bench.py"


def test_help_describes_the_benchmark_in_full_and_names_every_figure():
    printed = subprocess.run([sys.executable, str(BENCH), "--help"], capture_output=True, text=True, timeout=30)
    help_text = " ".join(printed.stdout.split())  # as argparse wrapped it, unwrapped
    assert ("Benchmark: websocket_stream.py side by side with what a user would otherwise write, in one run on "
            "one machine, against the local server, each client in turn, round after round.") in help_text
    for figure in ("trades", "quotes", "handlers", "latency", "exit", "recovery", "memory"):
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
