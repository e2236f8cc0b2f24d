"""--chart (#34, step 1): a page in the browser with each symbol's 1-minute candles and volume,
the bot's fills marked on them, its position and realized P&L; what came before for a page
opened late, then the changes, at most 10 a second; a page that falls behind is cut. Read here
by a websocket client as a page reads them: the Chart in this process, fed records through the
handlers it wraps, and the script with --demo and with a backtest (--replay)."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import re
import signal
import socket
import time
import warnings
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from conftest import FAKE_KEY, FAKE_SECRET, ROOT, run, until
from test_readme import EXAMPLES, paste, pasted_with_what_it_needs
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.connection import Connection
from websockets.exceptions import ConnectionClosed

import websocket_stream as ws
from alpaca_stream.errors import ConfigError
from alpaca_stream.outputs.chart import REFUSED, TOO_SLOW, Chart
from alpaca_stream.records import Bar, Record, Trade, TradeUpdate
from alpaca_stream.session import Session

pytestmark = pytest.mark.timeout(40)

WHEN = datetime(2026, 12, 2, 15, 0, tzinfo=timezone.utc)  # 10:00 in New York
MINUTE = int(WHEN.timestamp())
SESSION = ROOT / "tests" / "data" / "session.jsonl"


def trade(seconds: float, price: float, size: float, symbol: str = "SPY") -> Trade:
    return Trade({"T": "t", "S": symbol, "p": price, "s": size, "t": WHEN + timedelta(seconds=seconds), "x": "V",
                  "i": int(seconds * 1000)})


def fill(seconds: float, side: str, qty: float, price: float, symbol: str = "SPY") -> TradeUpdate:
    return TradeUpdate({"event": "fill", "price": price, "qty": qty, "timestamp": WHEN + timedelta(seconds=seconds),
                        "order": {"symbol": symbol, "side": side, "status": "filled"}})


async def fed(chart: Chart, records: list[Record]) -> None:
    """Each record through the handlers the chart wraps, as the stream hands them over."""
    handlers = chart.wrap({})
    kinds = {Trade: "trade", Bar: "bar", TradeUpdate: "trade_update"}
    for record in records:
        await handlers[kinds[type(record)]](record)


async def opened(chart: Chart, token: str = "") -> ClientConnection:
    return await connect(f"ws://127.0.0.1:{chart.port}/data" + (f"?token={token}" if token else ""))


async def received(page: Connection) -> dict:
    return json.loads(await asyncio.wait_for(page.recv(), 5))


def candles(message: dict, symbol: str = "SPY") -> list[list[float]]:
    return message["symbols"][symbol]["candles"]


def test_a_page_opened_late_gets_each_minute_with_trades_as_a_candle_the_fills_marked_and_the_pnl():
    records = [trade(1, 10.0, 100), trade(20, 12.0, 50), trade(40, 9.5, 10), trade(59, 11.0, 5),  # minute 0
               trade(61, 11.5, 7),  # minute 1, one trade; minute 2 has none
               fill(62, "buy", 10, 11.5), trade(185, 13.0, 1), fill(186, "sell", 4, 13.0),  # minute 3
               trade(30, 8.0, 2, "TSLA")]

    async def scenario() -> dict:
        async with Chart("127.0.0.1", 0, ["SPY", "TSLA"]) as chart:
            await fed(chart, records)
            async with await opened(chart) as page:
                return await received(page)

    snapshot = run(scenario())
    assert snapshot["type"] == "snapshot"
    assert candles(snapshot) == [[MINUTE, 10.0, 12.0, 9.5, 11.0, 165], [MINUTE + 60, 11.5, 11.5, 11.5, 11.5, 7],
                                 [MINUTE + 180, 13.0, 13.0, 13.0, 13.0, 1]]
    assert candles(snapshot, "TSLA") == [[MINUTE, 8.0, 8.0, 8.0, 8.0, 2]]
    spy = snapshot["symbols"]["SPY"]
    assert [(f["side"], f["price"], f["qty"], f["minute"]) for f in spy["fills"]] == [
        ("buy", 11.5, 10, MINUTE + 60), ("sell", 13.0, 4, MINUTE + 180)]
    assert (spy["position"], spy["realized"]) == (6, 6.0)  # 4 sold 1.50 above the 11.50 paid


def test_the_position_and_pnl_start_from_what_the_account_held_at_the_start_a_pairs_without_its_slash():
    held = [{"symbol": "SPY", "qty": "10", "side": "long", "avg_entry_price": "600"},
            {"symbol": "BTCUSD", "qty": "0.5", "side": "long", "avg_entry_price": "90000"},
            {"symbol": "TSLA", "qty": "-3", "side": "short", "avg_entry_price": "350"}]  # not the run's

    async def scenario() -> dict:
        async with Chart("127.0.0.1", 0, ["SPY", "BTC/USD"]) as chart:
            chart.held(held)
            await fed(chart, [fill(1, "sell", 4, 610.0), fill(2, "buy", 1, 300.0, "TSLA")])
            async with await opened(chart) as page:
                return (await received(page))["symbols"]

    shown = run(scenario())
    assert [(symbol, mine["position"], mine["realized"]) for symbol, mine in shown.items()] == [
        ("SPY", 6, 40.0), ("BTC/USD", 0.5, 0), ("TSLA", -2, 50.0)]


def test_changes_after_the_snapshot_come_coalesced_and_alpacas_bars_replace_the_candles_built_from_trades():
    async def scenario() -> tuple[dict, dict, dict]:
        async with Chart("127.0.0.1", 0, ["SPY"]) as chart:
            await fed(chart, [trade(1, 10.0, 100)])
            async with await opened(chart) as page:
                snapshot = await received(page)
                # a burst, handed over without a pause: one update, with the minute as it ends
                await fed(chart, [trade(2, 10.5, 1), trade(3, 9.0, 1), trade(4, 9.8, 3), fill(5, "buy", 2, 9.8)])
                update = await received(page)
                bar = Bar({"T": "b", "S": "SPY", "t": WHEN, "o": 10.0, "h": 10.6, "l": 8.9, "c": 9.7, "v": 200})
                await fed(chart, [bar, trade(70, 50.0, 1)])  # Alpaca's bars from now on, not the trades
                return snapshot, update, await received(page)

    snapshot, update, bars = run(scenario())
    assert candles(snapshot) == [[MINUTE, 10.0, 10.0, 10.0, 10.0, 100]]
    assert update["type"] == "update" and candles(update) == [[MINUTE, 10.0, 10.5, 9.0, 9.8, 105]]
    assert [(f["side"], f["price"]) for f in update["symbols"]["SPY"]["fills"]] == [("buy", 9.8)]
    assert candles(bars) == [[MINUTE, 10.0, 10.6, 8.9, 9.7, 200]]


def test_a_page_gets_at_most_10_updates_a_second_however_often_the_trades_come():
    async def scenario() -> tuple[int, float]:
        async with Chart("127.0.0.1", 0, ["SPY"]) as chart, await opened(chart) as page:
            await received(page)
            loop = asyncio.get_running_loop()
            started = loop.time()
            for second in range(40):  # a trade every 10 ms or so
                await fed(chart, [trade(second, 10.0 + second, 1)])
                await asyncio.sleep(0.01)
            got: list[dict] = []
            while not got or candles(got[-1])[-1][4] < 40:  # up to the last trade's
                got.append(await received(page))
            return len(got), loop.time() - started

    updates, took = run(scenario())
    assert updates <= 1 + took / 0.1


def test_when_the_run_ends_a_page_gets_the_last_changes_then_the_close_going_away():
    async def scenario() -> tuple[list[dict], int]:
        got: list[dict] = []
        async with Chart("127.0.0.1", 0, ["SPY"]) as chart:
            page = await opened(chart)
            await received(page)
            await fed(chart, [trade(1, 10.0, 100), trade(2, 11.0, 1)])
        await asyncio.wait_for(read_all(page, got), 5)
        return got, page.close_code or 0

    got, code = run(scenario())
    assert [candles(message) for message in got] == [[[MINUTE, 10.0, 11.0, 10.0, 11.0, 101]]]
    assert code == 1001


def test_a_page_that_reads_too_slowly_is_cut_and_the_others_go_on(caplog):
    minutes = 5000  # each round changes every minute kept: an update of about 250 kB

    async def scenario() -> tuple[int, list[float]]:
        async with Chart("127.0.0.1", 0, ["SPY"], buffer=2**20) as chart:
            # the slow page reads nothing: its socket's buffers are kept small, and fill
            slow_socket = socket.socket()
            slow_socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            slow_socket.connect(("127.0.0.1", chart.port))
            slow = await connect(f"ws://127.0.0.1:{chart.port}/data", sock=slow_socket, max_queue=1)
            reader = await opened(chart)
            got: list[dict] = []
            reading = asyncio.create_task(read_all(reader, got))
            for price in range(1, 100):
                await fed(chart, [trade(60 * minute, float(price), 1) for minute in range(minutes)])
                chart.send_changes()  # the coalescing timer's work, at once
                await asyncio.sleep(0)
                if chart.pages_cut:
                    break
            with pytest.raises(ConnectionClosed) as closed:  # noqa: PT012
                while True:
                    await asyncio.wait_for(slow.recv(), 5)
            await chart.__aexit__(None, None, None)
            await asyncio.wait_for(reading, 5)
            return closed.value.rcvd.code if closed.value.rcvd else 0, candles(got[-1])[-1]

    with caplog.at_level(logging.INFO, "alpaca_stream"):
        code, last = run(scenario())
    assert code == TOO_SLOW
    assert "--chart cut a page that read too slowly" in caplog.text
    assert last[0] == MINUTE + 60 * 4999 and last[4] >= 2  # the reader got the last round's


def test_at_the_end_a_socket_that_asked_for_nothing_yet_is_closed_not_waited_for():
    async def scenario() -> bytes:
        chart = Chart("127.0.0.1", 0, ["SPY"])
        async with chart:  # a socket a browser opens ahead of need (Chromium's preconnect)
            reader, writer = await asyncio.open_connection("127.0.0.1", chart.port)
            await until(lambda: chart.opened, "the server's connection")
        try:  # closed by the end, not left open after it (websockets' server waits 10 s for a request)
            return await asyncio.wait_for(reader.read(), 0.5)
        finally:
            writer.close()

    assert run(scenario()) == b""


async def read_all(page: Connection, got: list[dict]) -> None:
    async for message in page:
        got.append(json.loads(message))


def test_served_beyond_this_machine_the_page_must_give_the_token_the_log_prints(caplog):
    async def scenario(chart: Chart) -> tuple[int, dict]:
        async with chart:
            await fed(chart, [trade(1, 10.0, 100)])
            async with await opened(chart, token="wrong") as refused:
                with pytest.raises(ConnectionClosed) as closed:
                    await received(refused)
            async with await opened(chart, token=chart.token) as page:
                return closed.value.rcvd.code if closed.value.rcvd else 0, await received(page)

    with caplog.at_level(logging.INFO, "alpaca_stream"):
        code, snapshot = run(scenario(chart := Chart("0.0.0.0", 0, ["SPY"])))
    assert code == REFUSED
    assert candles(snapshot) == [[MINUTE, 10.0, 10.0, 10.0, 10.0, 100]]
    assert chart.token and f"the page asks for this token:\n{chart.token}" in caplog.text
    # 0.0.0.0 is not an address a browser opens: this machine's own is printed, and where it is served
    assert chart.address == f"http://127.0.0.1:{chart.port}"
    assert f"charting at http://127.0.0.1:{chart.port}, and from other machines at this one's address " \
           "(served on 0.0.0.0)" in caplog.text
    assert not Chart("127.0.0.1", 0).token  # this machine's own: none


# -- the script -------------------------------------------------------------------------------------


def page_of(script: Any) -> str:
    script.wait_for_stderr("charting at http://")
    found = re.search(r"charting at http://([\d.]+:\d+)", script.stderr)
    assert found, script.stderr
    return found.group(1)


OVER = "the run is over; the chart stays at http://"


def stopped_when_over(script: Any) -> None:
    """Ctrl+C once the log says the run is over: its page stays served until then."""
    script.wait_for_stderr(OVER)
    script.process.send_signal(signal.SIGINT)


async def whole_run(address: str, script: Any, stop: bool) -> dict[str, dict]:
    """What a page shows at the end of the run: each symbol's candles by minute and fills by id,
    from the first frame to the script's close (it is stopped once it has sent an update, or,
    not stop, once its run is over)."""
    ending = None if stop else asyncio.create_task(asyncio.to_thread(stopped_when_over, script))
    shown: dict[str, dict] = {}
    async with connect(f"ws://{address}/data") as page:
        async for frame in page:
            message = json.loads(frame)
            for symbol, changed in message["symbols"].items():
                mine = shown.setdefault(symbol, {"candles": {}, "fills": {}})
                mine["candles"].update({values[0]: values[1:] for values in changed["candles"]})
                mine["fills"].update({f["id"]: f for f in changed["fills"]})
                mine.update(position=changed["position"], realized=changed["realized"])
            if stop and message["type"] == "update" and len(script.out_lines) > 5:
                script.process.send_signal(signal.SIGINT)
                stop = False
    if ending:
        await ending
    return shown


def candles_of(trades: list[dict]) -> dict[str, dict[int, list[float]]]:
    """Each symbol's minutes, as open, high, low, close and volume, from these trades in order."""
    made: dict[str, dict[int, list[float]]] = {}
    for line in trades:
        minute = int(datetime.fromisoformat(line["timestamp"]).timestamp()) // 60 * 60
        price, candle = line["price"], made.setdefault(line["symbol"], {}).get(minute)
        if candle is None:
            made[line["symbol"]][minute] = [price, price, price, price, line["size"]]
        else:
            candle[1:] = [max(candle[1], price), min(candle[2], price), price, candle[4] + line["size"]]
    return made


def test_a_demo_runs_page_has_a_candle_for_each_minute_with_trades_up_to_the_last_one(start_script):
    script = start_script("--demo", "--chart", bot=True)
    shown = run(asyncio.wait_for(whole_run(page_of(script), script, stop=True), 20))
    assert script.finish() == 0
    trades = [line for line in map(json.loads, script.out_lines) if line["kind"] == "trade"]
    assert trades
    assert {symbol: mine["candles"] for symbol, mine in shown.items() if mine["candles"]} == {
        symbol: {minute: pytest.approx(values) for minute, values in made.items()}
        for symbol, made in candles_of(trades).items()}


def order_example(script: Path) -> None:
    """docs/handlers.md's order example pasted into a copy of the script, and its fills printed."""
    number = next(number for number, (*_, code) in enumerate(EXAMPLES) if "submit_order" in code)
    for handlers, code in pasted_with_what_it_needs(number + 1):
        paste(script, handlers, code)


def test_a_backtests_page_has_the_fill_at_its_price_and_time_and_the_position(start_script):
    script = start_script("--replay", str(SESSION), "--replay-speed", "2", "--chart", edit=order_example)
    shown = run(asyncio.wait_for(whole_run(page_of(script), script, stop=False), 20))
    assert script.finish() == 0, script.stderr
    assert "filled: bought 1 TSLA at 350.28" in script.stdout
    tsla = shown["TSLA"]
    (marked,) = tsla["fills"].values()
    recorded = [json.loads(line) for line in SESSION.read_text().splitlines()]
    filled = next(line for line in recorded if line["type"] == "trade" and line["symbol"] == "TSLA"
                  and line["price"] == 350.28)  # the next trade after the order's
    assert (marked["side"], marked["price"], marked["qty"]) == ("buy", 350.28, 1)
    assert marked["time"] == datetime.fromisoformat(filled["timestamp"]).timestamp()
    assert (tsla["position"], tsla["realized"]) == (1, 0)
    assert {symbol: mine["candles"] for symbol, mine in shown.items()} == candles_of(
        [line for line in recorded if line["type"] == "trade"])


def test_a_replay_that_ends_keeps_its_page_served_until_ctrl_c_then_says_the_summary(start_script):
    script = start_script("--replay", str(SESSION), "--chart", "--quiet")  # at full speed: over at once
    address = page_of(script)
    script.wait_for_stderr(OVER + address)

    async def opened_after_the_end() -> dict:
        async with connect(f"ws://{address}/data") as page:
            return await received(page)

    snapshot = run(opened_after_the_end())
    recorded = [json.loads(line) for line in SESSION.read_text().splitlines()]
    assert {symbol: {values[0]: values[1:] for values in mine["candles"]}
            for symbol, mine in snapshot["symbols"].items()} == candles_of(
        [line for line in recorded if line["type"] == "trade"])
    assert script.process.poll() is None  # still there
    assert script.stop(signal.SIGINT)[0] == 0
    assert "received 55 trades" in script.said.partition(OVER)[2], script.stderr


def test_the_summary_of_a_run_that_waits_after_its_end_gives_the_runs_time_not_the_waits():
    now = time.monotonic()
    assert "in 2.0 s" in Session(started=now - 10, ended=now - 8).summary()


def test_a_chart_of_an_accounts_fills_starts_from_the_positions_it_held_before_the_run(make_server, start_script):
    server = make_server(rate=50, keys=(FAKE_KEY, FAKE_SECRET))

    async def hold() -> None:  # in the server's own loop
        order = server.server.account.place("SPY", 10)
        server.server.account.update("fill", order["id"], price=600.0, qty=10)

    server.call(hold())
    script = start_script("--url", server.url.rsplit("/v2/", 1)[0], "--trading-url", server.server.trading_url,
                          "SPY", "--trades", "--trade-updates", "--chart", "--quiet")
    address = page_of(script)
    script.wait_for_stderr("listening to the account's order updates")

    async def snapshot() -> dict:
        async with connect(f"ws://{address}/data") as page:
            return (await received(page))["symbols"]["SPY"]

    spy = run(snapshot())
    assert (spy["position"], spy["realized"]) == (10, 0)
    assert script.stop(signal.SIGINT)[0] == 0


@pytest.mark.parametrize(("arguments", "message"), [
    (["--chart", "99999"], "--chart 99999: its port is not a number from 0 to 65535"),
    (["--chart", "here:8765"], "--chart takes an IP address, or localhost: here"),
    (["--chart", "127.0.0.1:"], "--chart takes [HOST:]PORT: no port in 127.0.0.1:"),
    # A symbol after --chart is taken for its address: the message says where symbols go, with
    # the command given, --chart moved last.
    (["--chart", "SPY"], "--chart takes [HOST:]PORT or nothing, not SPY: put the symbols before it, or "
                         "--chart last (python websocket_stream.py --demo SPY --chart)"),
    (["--chart=SPY", "TSLA", "--quotes", "--json"], "(python websocket_stream.py --demo SPY TSLA --quotes --json "
                                                    "--chart)"),
])
def test_a_chart_address_that_is_not_host_port_exits_2_naming_it(arguments, message, capsys):
    with pytest.raises(SystemExit) as exited:
        ws.main(["--demo", *arguments])
    assert exited.value.code == 2
    assert message in capsys.readouterr().err.replace("\n  ", " ")


def test_a_chart_address_not_of_this_machine_is_named_not_the_port():
    with pytest.raises(ConfigError) as refused:
        run(Chart("192.0.2.1", 8050).__aenter__())  # TEST-NET-1: no machine's own
    assert "192.0.2.1 is not an address of this machine; 127.0.0.1 for it alone, 0.0.0.0 for all its " \
           "networks" in str(refused.value)
    assert "another port" not in str(refused.value)


def test_a_chart_port_in_use_exits_2_naming_it(start_script):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        script = start_script("--demo", "--chart", str(port))
        assert script.finish() == 2
    assert f"error: --chart: cannot listen on 127.0.0.1:{port}:\n  Address already in use" in script.stderr
    assert "Traceback" not in script.stderr


def test_a_demos_chart_asks_for_the_order_updates_of_its_account_and_alpacas_only_when_told():
    from alpaca_stream.options import parse_args, settings_from

    assert settings_from(parse_args(["--demo", "--chart"])).trade_updates
    assert not settings_from(parse_args(["--chart"])).trade_updates  # keys may be live ones: --trade-updates


def test_a_replay_stopped_while_starting_serves_no_chart_and_leaves_no_run_unawaited(monkeypatch, caplog):
    from alpaca_stream.sources.recording import Recording

    entered = Recording.__aenter__

    async def stopped_while_entered(self: Recording) -> Recording:  # Ctrl+C while the recording is checked
        signal.raise_signal(signal.SIGINT)
        return await entered(self)

    monkeypatch.setattr(Recording, "__aenter__", stopped_while_entered)
    caplog.set_level(logging.INFO)
    with warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        assert ws.main(["--replay", str(SESSION), "--quiet", "--chart=0"], handlers={}) == 0
        gc.collect()  # where a coroutine never awaited is said
    assert "stopping; a second Ctrl+C forces it" in caplog.text
    assert "charting at" not in caplog.text
    assert [str(warning.message) for warning in warned if "never awaited" in str(warning.message)] == []
