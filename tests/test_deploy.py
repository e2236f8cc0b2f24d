"""24/7 on a server: the systemd unit in deploy/, the heartbeat, and a log for collectors."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from configparser import ConfigParser
from datetime import datetime, timezone
from pathlib import Path

import pytest
from conftest import FAKE_KEY, FAKE_SECRET, POSIX_ONLY, ROOT, script_env, within

from alpaca_stream.calendar import market_open
from alpaca_stream.handlers import deliver, routes_for
from alpaca_stream.records import crypto_types
from alpaca_stream.server import Faults
from alpaca_stream.session import Session, heartbeat

UNIT = ROOT / "deploy" / "websocket-stream.service"
NATS_UNIT = ROOT / "deploy" / "nats-node.service"  # a node of the bots' NATS cluster (docs/many-bots.md)


def unit(path: Path = UNIT) -> ConfigParser:
    parser = ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # systemd's keys are case-sensitive
    parser.read(path)
    return parser


def test_the_unit_restarts_on_failure_after_alpacas_hold_but_not_for_wrong_keys_or_plan():
    service = unit()["Service"]
    assert service["Restart"] == "on-failure"
    assert int(service["RestartSec"]) >= 90  # Alpaca holds a dropped connection about 90 s
    assert set(service["RestartPreventExitStatus"].split()) == {"2", "3"}
    assert re.fullmatch(r"\S+/\.venv/bin/python websocket_stream\.py .*--heartbeat \d+", service["ExecStart"])
    assert service["EnvironmentFile"] and service["User"]
    assert unit()["Install"]["WantedBy"] == "multi-user.target"  # started at boot once enabled


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
@pytest.mark.parametrize("path", [UNIT, NATS_UNIT], ids=lambda path: path.name)
def test_systemd_verifies_the_unit_without_a_warning(path, tmp_path):
    # The unit's paths made real here: verify checks that the program exists.
    text = path.read_text()
    service = unit(path)["Service"]
    text = text.replace(service["ExecStart"].split()[0], sys.executable)
    if "EnvironmentFile" in service:
        text = text.replace(service["EnvironmentFile"], str(tmp_path / "env"))
    text = text.replace(service["WorkingDirectory"], str(tmp_path))
    (tmp_path / "env").write_text("")
    (tmp_path / path.name).write_text(text.replace(f"User={service['User']}", "User=root"))
    verified = subprocess.run(["systemd-analyze", "verify", str(tmp_path / path.name)],
                              capture_output=True, text=True, timeout=60)
    assert verified.returncode == 0 and verified.stdout + verified.stderr == "", verified.stderr


@POSIX_ONLY
def test_started_as_the_unit_starts_it_then_stopped_by_sigterm_it_exits_0_with_the_summary_last(
        server, start_script, copy_script):
    service = unit()["Service"]
    folder = copy_script()
    env_file = folder / "websocket-stream.env"
    env_file.write_text(f"APCA_API_KEY_ID={FAKE_KEY}\nAPCA_API_SECRET_KEY={FAKE_SECRET}\n")
    # What systemd does with EnvironmentFile: KEY=VALUE lines into the environment.
    keys = dict(line.split("=", 1) for line in env_file.read_text().splitlines())
    args = service["ExecStart"].split()[2:]  # after the venv's python and websocket_stream.py
    script = start_script(*args, "--url", server.url,
                          env=script_env(APCA_API_KEY_ID=None, APCA_API_SECRET_KEY=None) | keys)
    script.wait_for_stderr("subscribed to trades")
    script.wait_for(lambda: len(server.connections[0].trade_ids) >= 20, what="20 trades sent")
    code, took = script.stop(signal.SIGTERM)
    assert code == 0 and took < 3
    assert re.search(r"Z received [\d,]+ trades[^Z]* in [\d.]+ s; reconnects: 0$", "\n".join(script.err_lines[-3:]))


@POSIX_ONLY
def test_heartbeat_lines_count_what_arrived_since_the_last_one_and_how_long_ago_the_last_came(make_server,
                                                                                             start_script):
    # 50 messages, then a stream that answers pings and sends nothing: beats that count what
    # came, then beats that count nothing, the last message further back at each.
    server = make_server(rate=200, seed=1)
    server.plan(Faults(mute_after=50))
    script = start_script("--url", server.url, "--heartbeat", "1", "--log-format", "json", bot=True)
    def beats_after_the_50() -> list[str]:
        beats = [line for line in script.err_lines if '"alive: ' in line]
        counting = [n for n, beat in enumerate(beats) if '"alive: nothing' not in beat]
        return beats[counting[-1] + 1:] if counting and len(script.out_lines) >= 50 else []

    script.wait_for(lambda: len(beats_after_the_50()) >= 2, what="two heartbeats of nothing after the 50")
    assert script.stop(signal.SIGTERM)[0] == 0
    log = [json.loads(line) for line in script.err_lines]
    beats = [entry for entry in log if entry["message"].startswith("alive: ")]
    summary = log[-1]
    assert summary["message"].startswith("received ") and sum(summary["received"].values()) == 50
    counted = Counter()
    for beat in beats:
        counted.update(beat["received"])
    assert counted == summary["received"] and counted["trade"] == sum('"trade"' in line for line in script.out_lines)
    for beat in beats:
        assert beat["seconds"] == 1 and beat["reconnects"] == 0 and beat["market"] in ("open", "closed")
        assert re.fullmatch(r"alive: (nothing|[\d,]+.*) in 1 s; last \d+\.\d s ago; reconnects 0; market (open|closed)",
                            beat["message"])
        assert f"; last {beat['last_message_age']:.1f} s ago;" in beat["message"] and beat["last_message_age"] >= 0
    last_counting = max(n for n, beat in enumerate(beats) if beat["received"])
    quiet = beats[last_counting + 1:]
    assert len(quiet) >= 2 and not any(beat["received"] for beat in quiet)
    for before, after in zip(quiet, quiet[1:]):  # a beat later, the last message is a beat further back
        assert after["last_message_age"] - before["last_message_age"] >= 0.99


@pytest.mark.parametrize(("open_now", "said"), [(True, "open"), (False, "closed")])
def test_the_heartbeat_says_whether_new_yorks_market_is_open_now(open_now, said, monkeypatch, caplog):
    monkeypatch.setattr("alpaca_stream.session.market_open", lambda now=None: open_now)

    async def two_beats() -> None:
        beating = asyncio.create_task(heartbeat(Session(), 0.05))
        while caplog.text.count("alive: ") < 2:
            await asyncio.sleep(0.01)
        beating.cancel()

    caplog.set_level(logging.INFO, logger="alpaca_stream")
    asyncio.run(asyncio.wait_for(two_beats(), 10))
    assert caplog.text.count(f"; market {said}") == caplog.text.count("alive: ")



def test_the_heartbeat_counts_by_market_when_a_run_has_more_than_one_and_shows_a_quiet_one(caplog):
    # Stocks and crypto streamed together: the stock market closed, its stream quiet beside a
    # busy crypto stream. The beat must say so, not just the sum.
    session = Session(markets=Counter({"stocks": 0, "crypto": 0}))
    routes = routes_for({}, crypto_types())
    trades = [{"T": "t", "S": "BTC/USD", "p": 90000.0, "s": 0.01, "t": "2026-12-05T06:00:00Z", "i": n, "tks": "B"}
              for n in range(3)]

    async def one_beat() -> None:
        beating = asyncio.create_task(heartbeat(session, 0.2))
        await asyncio.sleep(0)  # the heartbeat has taken its first count
        await deliver(trades, routes, session)
        while "alive: " not in caplog.text:
            await asyncio.sleep(0.01)
        beating.cancel()

    caplog.set_level(logging.INFO, logger="alpaca_stream")
    within(one_beat(), 10)
    beat = next(record for record in caplog.records if record.getMessage().startswith("alive: "))
    assert beat.getMessage().startswith("alive: 3 trades in 0 s (stocks 0, crypto 3); last ")
    assert beat.fields["by_market"] == {"stocks": 0, "crypto": 3}  # type: ignore[attr-defined]


def test_the_heartbeat_of_one_market_does_not_name_it(caplog):
    async def one_beat() -> None:
        beating = asyncio.create_task(heartbeat(Session(markets=Counter({"stocks": 0})), 0.05))
        while "alive: " not in caplog.text:
            await asyncio.sleep(0.01)
        beating.cancel()

    caplog.set_level(logging.INFO, logger="alpaca_stream")
    within(one_beat(), 10)
    assert "alive: nothing in 0 s; last" in caplog.text and "stocks" not in caplog.text

@POSIX_ONLY
def test_every_line_of_the_json_log_parses_and_never_holds_a_key(make_server, start_script):
    server = make_server(rate=100)
    server.plan(Faults(auth_error=406), Faults(drop_after=20))
    script = start_script("--url", server.url, "--log-format", "json", "-v", "--heartbeat", "0.5", bot=True)
    script.wait_for(lambda: len(server.connections) >= 3 and '"alive: ' in script.stderr, what="a reconnect")
    script.stop(signal.SIGINT)
    entries = [json.loads(line) for line in script.err_lines]  # every line is one object
    assert {"time", "level", "message"} <= set(entries[0]) and len(entries) > 10
    assert {entry["level"] for entry in entries} >= {"debug", "info", "warning"}
    assert FAKE_KEY not in script.stderr and FAKE_SECRET not in script.stderr
    datetime.fromisoformat(entries[0]["time"])


@pytest.mark.parametrize(("when", "is_open"), [
    ("2026-11-24T14:30:00+00:00", True),  # 9:30 in New York, a Tuesday
    ("2026-11-24T14:29:59+00:00", False),
    ("2026-11-24T21:00:00+00:00", False),  # 16:00
    ("2026-11-28T15:00:00+00:00", False),  # a Saturday
    ("2026-07-01T13:30:00+00:00", True),  # 9:30 in summer time
])
def test_the_market_is_open_on_weekdays_from_9_30_to_16_new_york_time(when, is_open):
    assert market_open(datetime.fromisoformat(when).astimezone(timezone.utc)) is is_open


def test_docs_server_tells_the_way_from_a_fresh_server_to_the_service():
    section = (ROOT / "docs" / "server.md").read_text(encoding="utf-8")
    for step in ("python3 -m venv .venv", "pip install -r requirements.txt", "install -m 600",
                 "deploy/websocket-stream.service", "systemctl enable --now websocket-stream",
                 "journalctl -u websocket-stream"):
        assert step in section, step
    assert Path(UNIT).name in section
