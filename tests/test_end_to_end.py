"""The real script, as a subprocess, against the local Alpaca server: every behaviour the
script promises, each fault giving its exit status, message and retry behaviour."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from conftest import FAKE_KEY, FAKE_SECRET, script_env
from local_alpaca_server import Faults

# Stopping the script takes POSIX signals (and pseudo-terminals, and head), which Windows lacks.
pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="sends POSIX signals to the script")


def assert_no_traceback(script) -> None:
    assert "Traceback" not in script.stderr, script.stderr


def json_trades(script) -> list[dict]:
    return [json.loads(line) for line in script.out_lines]


def test_default_symbols_stream_spy_and_tsla_one_line_each(server, start_script):
    script = start_script("--url", server.url)
    script.wait_for_trades(40)
    code, _ = script.stop(signal.SIGINT)
    assert code == 0
    assert server.connections[0].symbols == ["SPY", "TSLA"]
    symbols = {line.split()[2] for line in script.out_lines}
    assert symbols == {"SPY", "TSLA"}
    assert "subscribed to trades: SPY, TSLA" in script.stderr
    assert "received" in script.stderr.splitlines()[-1]  # the summary comes last
    assert_no_traceback(script)


def test_json_output_has_every_sent_trade_once_in_order_and_none_invented(server, start_script):
    script = start_script("aapl", "nvda", "--json", "--url", server.url)
    script.wait_for_trades(300)
    code, _ = script.stop(signal.SIGINT)
    assert code == 0
    trades = json_trades(script)
    sent = server.connections[0].trade_ids
    received = [trade["id"] for trade in trades]
    # Stopped mid-stream: what was received is exactly what was sent, up to where it stopped.
    assert received == sent[: len(received)]
    assert {trade["symbol"] for trade in trades} == {"AAPL", "NVDA"}
    first = trades[0]
    assert set(first) == {"symbol", "price", "size", "timestamp", "exchange", "conditions", "id", "tape"}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00", first["timestamp"])


def test_piped_output_is_real_time_even_when_trades_are_few(make_server, start_script):
    # 4 trades a second: a pipe's 8 KB buffer would hold the first line back for half a minute.
    server = make_server(rate=4)
    script = start_script("--url", server.url)
    script.wait_for(lambda: server.connections and server.connections[0].trade_ids, what="a trade sent")
    script.wait_for_trades(1, timeout=5)
    script.stop(signal.SIGINT)


def test_wrong_keys_exit_3_at_once_naming_where_the_keys_came_from(make_server, start_script):
    server = make_server(keys=("RIGHT-KEY-ID-000001", "RIGHT-SECRET-000001"))
    script = start_script("--url", server.url)
    assert script.finish(timeout=10) == 3
    assert "402 auth failed" in script.stderr and "the environment" in script.stderr
    assert "paper and live" in script.stderr
    assert len(server.server.attempts) == 1  # no retry
    assert_no_traceback(script)


def test_feed_not_in_plan_exits_3_and_suggests_iex(make_server, start_script):
    server = make_server(faults=Faults(auth_error=409))
    script = start_script("--url", server.url)
    assert script.finish(timeout=10) == 3
    assert "409 insufficient subscription" in script.stderr and "--feed iex" in script.stderr
    assert len(server.server.attempts) == 1
    assert_no_traceback(script)


def test_more_than_30_symbols_exits_3_naming_the_free_plan_limit(server, start_script):
    symbols = [f"S{n:02d}" for n in range(31)]
    script = start_script(*symbols, "--url", server.url)
    assert script.finish(timeout=10) == 3
    assert "405 symbol limit exceeded" in script.stderr and "30 symbols" in script.stderr
    assert_no_traceback(script)


def test_connection_limit_is_explained_and_retried_with_growing_backoff(make_server, start_script):
    server = make_server(faults=Faults(auth_error=406))
    script = start_script("--url", server.url)
    script.wait_for(lambda: len(server.server.attempts) >= 4, timeout=20, what="4 connection attempts")
    code, _ = script.stop(signal.SIGINT)
    assert code == 0
    attempts = server.server.attempts
    gaps = [later - earlier for earlier, later in zip(attempts, attempts[1:])]
    # Backoff with equal jitter: 0.5-1 s, then 1-2 s, then 2-4 s.
    assert gaps[0] <= 1.5 and gaps[0] < gaps[1] < gaps[2], gaps
    assert "another connection with these keys is open" in script.stderr
    assert script.stderr.count("reconnecting in") >= 3  # one warning line per attempt
    assert_no_traceback(script)


def test_connection_limit_once_then_trades_flow(server, start_script):
    server.plan(Faults(auth_error=406))
    script = start_script("--url", server.url, "--json")
    script.wait_for_trades(20)
    assert script.stop(signal.SIGINT)[0] == 0
    assert [c.authenticated for c in server.connections] == [False, True]
    assert [t["id"] for t in json_trades(script)] == server.connections[1].trade_ids[: len(script.out_lines)]


def test_backoff_starts_over_once_trades_have_flowed(server, start_script):
    busy = Faults(auth_error=406)
    server.plan(busy, busy, busy, Faults(drop_after=10))
    script = start_script("--url", server.url)
    script.wait_for(lambda: len(server.connections) == 5, timeout=20, what="the connection after the drop")
    assert script.stop(signal.SIGINT)[0] == 0
    attempts = re.findall(r"\(attempt (\d+)\)", script.stderr)
    assert attempts == ["1", "2", "3", "1"], script.stderr
    assert server.connections[4].opened_at - server.connections[3].closed_at < 1.5


def test_dropped_connection_reconnects_resubscribes_and_loses_no_trade_it_was_sent(server, start_script):
    server.plan(Faults(drop_after=50))
    script = start_script("--url", server.url, "--json")
    script.wait_for(lambda: len(server.connections) == 2 and len(script.out_lines) >= 100, what="trades after the drop")
    assert script.stop(signal.SIGINT)[0] == 0
    first, second = server.connections
    assert second.symbols == ["SPY", "TSLA"]  # resubscribed
    received = [trade["id"] for trade in json_trades(script)]
    assert received[:50] == first.trade_ids
    assert received[50:] == second.trade_ids[: len(received) - 50]
    assert "connection lost" in script.stderr and "reconnecting in" in script.stderr
    assert "reconnects: 1" in script.stderr
    assert_no_traceback(script)


def test_server_down_then_back_reconnects(server, start_script):
    script = start_script("--url", server.url)
    script.wait_for_trades(10)
    server.stop()  # connections cut, new ones refused
    script.wait_for(lambda: script.stderr.count("cannot connect") >= 2, what="two refused reconnects")
    lines_while_down = len(script.out_lines)
    server.start()
    script.wait_for_trades(lines_while_down + 20, timeout=20)
    assert script.stop(signal.SIGINT)[0] == 0
    assert_no_traceback(script)


def test_handshake_refused_by_http_503_is_retried(server, start_script):
    server.plan(Faults(refuse=True), Faults(refuse=True))
    script = start_script("--url", server.url)
    script.wait_for_trades(10)
    assert script.stop(signal.SIGINT)[0] == 0
    assert script.stderr.count("reconnecting in") == 2 and "503" in script.stderr
    assert_no_traceback(script)


def test_malformed_frames_and_unknown_messages_are_skipped_and_the_stream_goes_on(server, start_script):
    server.plan(Faults(garbage_after=10))
    script = start_script("--url", server.url, "--json", "-v")
    script.wait_for_trades(40)
    assert script.stop(signal.SIGINT)[0] == 0
    received = [trade["id"] for trade in json_trades(script)]
    # The two good trades around the broken one arrive; the broken one is skipped.
    assert received == server.connections[0].trade_ids[: len(received)]
    assert len(server.connections) == 1
    for skipped in ("not msgpack", "not a list", "unknown type", "does not parse"):
        assert skipped in script.stderr
    assert_no_traceback(script)


def test_peer_that_stops_answering_pings_is_replaced_within_30_s(server, start_script):
    # The default ping settings, as a user runs them.
    server.plan(Faults(dead_after=20))
    script = start_script("--url", server.url)
    script.wait_for_trades(20)
    went_dead = time.monotonic()
    script.wait_for(lambda: len(server.connections) == 2, timeout=35, what="a new connection")
    replaced_after = server.connections[1].opened_at - went_dead
    script.wait_for_trades(40)
    assert script.stop(signal.SIGINT)[0] == 0
    assert replaced_after < 30, replaced_after
    assert "connection lost (keepalive ping timeout)" in script.stderr
    assert_no_traceback(script)


def test_ctrl_c_in_a_terminal_exits_0_with_summary_while_trades_pour_in(make_server, start_script):
    import fcntl, pty, termios  # POSIX only

    server = make_server(rate=10_000)
    controller, terminal = pty.openpty()
    # The script is in a new session with the pty as its controlling terminal, as in a shell,
    # so ^C typed on the pty reaches it as SIGINT from the terminal driver.
    script = start_script("--url", server.url, stdin=terminal, stdout=terminal, start_new_session=True,
                          preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0))
    os.close(terminal)
    seen = b""
    while seen.count(b"\n") < 1000:
        seen += os.read(controller, 65536)
    typed = time.monotonic()
    os.write(controller, b"\x03")
    while script.process.poll() is None:  # keep reading, or the script blocks on a full terminal
        try:
            os.read(controller, 65536)
        except OSError:
            break
    took = time.monotonic() - typed
    os.close(controller)
    assert script.finish() == 0
    assert took < 3, took  # alpaca-py's own loop takes about 10 s
    assert "received" in script.stderr.splitlines()[-1]
    assert_no_traceback(script)


def test_sigterm_while_trades_pour_in_exits_0_with_summary(make_server, start_script):
    server = make_server(rate=10_000)
    script = start_script("--url", server.url)
    script.wait_for_trades(2000)
    code, took = script.stop(signal.SIGTERM)
    assert code == 0 and took < 3, took
    assert "received" in script.stderr.splitlines()[-1]
    assert_no_traceback(script)


def test_ctrl_c_during_reconnect_wait_exits_at_once(make_server, start_script):
    server = make_server(faults=Faults(auth_error=406))
    script = start_script("--url", server.url)
    script.wait_for(lambda: script.stderr.count("reconnecting in") >= 4, timeout=20, what="a long wait")
    code, took = script.stop(signal.SIGINT)
    assert code == 0 and took < 3, took
    assert_no_traceback(script)


def test_piped_into_head_exits_0_quietly_when_head_has_its_lines(make_server, start_script):
    server = make_server(rate=2000)
    read_end, write_end = os.pipe()
    head = subprocess.Popen(["head", "-5"], stdin=read_end, stdout=subprocess.PIPE, text=True)
    script = start_script("--url", server.url, stdout=write_end)
    os.close(read_end)
    os.close(write_end)
    lines = head.communicate(timeout=15)[0].splitlines()
    assert len(lines) == 5
    assert script.finish(timeout=10) == 0
    assert_no_traceback(script)


def test_keys_never_appear_in_any_output_even_verbose(server, start_script):
    script = start_script("--url", server.url, "-v", "--json")
    script.wait_for_trades(20)
    script.stop(signal.SIGINT)
    output = script.stdout + script.stderr
    for secret in (FAKE_KEY, FAKE_SECRET):
        assert secret not in output
        assert secret.encode().hex() not in output.replace(" ", "")


def test_missing_keys_exit_2_before_any_connection(server, start_script):
    script = start_script("--url", server.url, env=script_env(APCA_API_KEY_ID=None, APCA_API_SECRET_KEY=None))
    assert script.finish() == 2
    assert "cp config.example.py config.py" in script.stderr and "copy config.example.py" in script.stderr
    assert server.server.attempts == []
    assert_no_traceback(script)


def test_copied_alone_with_a_config_py_streams(server, start_script, tmp_path):
    (tmp_path / "config.py").write_text(f'API_KEY = "{FAKE_KEY}"\nSECRET_KEY = "{FAKE_SECRET}"\n')
    script = start_script("--url", server.url, files=(), env=script_env(APCA_API_KEY_ID=None, APCA_API_SECRET_KEY=None))
    script.wait_for_trades(10)
    assert script.stop(signal.SIGINT)[0] == 0
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".py") == ["config.py", "websocket_stream.py"]


def test_demo_streams_with_no_keys_and_says_it_is_demo_data(start_script):
    script = start_script("--demo", env=script_env(APCA_API_KEY_ID=None, APCA_API_SECRET_KEY=None))
    script.wait_for_trades(5)
    assert script.stop(signal.SIGINT)[0] == 0
    assert "demo data" in script.stderr
    assert_no_traceback(script)
