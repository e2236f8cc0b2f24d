"""The default printout: what the handlers of websocket_stream.py print, text and JSON.

These tests check the printing of the unedited script. A student who changes the handlers or
the printing changes or deletes them (a failure here says so); the stream's own promises are
tested elsewhere, with handlers the tests supply."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys

import msgpack
import pytest
from conftest import KINDS, POSIX_ONLY, ROOT, as_received

from alpaca_stream.outputs.terminal import format_json, format_text, money
from alpaca_stream.records import MESSAGE_TYPES, CryptoQuote, CryptoTrade, News, OptionTrade, Record, Trade

WHEN = msgpack.Timestamp.from_unix_nano(1_764_000_000_123_456_789)  # 2025-11-24 16:00:00.123456789 UTC
SAMPLES: dict[str, dict] = {  # one message of each kind, as Alpaca's documentation shows them
    "trade": {"T": "t", "S": "SPY", "i": 52983525029461, "x": "V", "p": 601.23, "s": 100, "c": ["@"], "z": "B"},
    "quote": {"T": "q", "S": "AMD", "bx": "U", "bp": 87.66, "bs": 100, "ax": "Q", "ap": 87.68, "as": 400,
              "c": ["R"], "z": "C"},
    "bar": {"T": "b", "S": "SPY", "o": 388.985, "h": 389.13, "l": 388.975, "c": 389.12, "v": 49378, "n": 461,
            "vw": 389.0621},
    "updated_bar": {"T": "u", "S": "SPY", "o": 388.985, "h": 389.13, "l": 388.975, "c": 389.11, "v": 49410,
                    "n": 462, "vw": 389.0621},
    "daily_bar": {"T": "d", "S": "SPY", "o": 387.5, "h": 390.01, "l": 386.2, "c": 389.12, "v": 37854127,
                  "n": 311402, "vw": 388.4511},
    "status": {"T": "s", "S": "AAPL", "sc": "H", "sm": "Trading Halt", "rc": "T12",
               "rm": "Trading Halted; For information requested by NASDAQ", "z": "C"},
    "luld": {"T": "l", "S": "IONM", "u": 3.24, "d": 2.65, "i": "B", "z": "C"},
    "correction": {"T": "c", "S": "EEM", "x": "M", "oi": 52983525033527, "op": 39.1582, "os": 440000,
                   "oc": [" ", "7"], "ci": 52983525034326, "cp": 39.1809, "cs": 440000, "cc": [" ", "7"], "z": "B"},
    "cancel": {"T": "x", "S": "GOOGL", "i": 465, "x": "D", "p": 105.31, "s": 300, "a": "C", "z": "C"},
    "imbalance": {"T": "i", "S": "NVDA", "p": 180.42, "z": "C"},
}
PREFIX = "16:00:00.123Z "  # the time of day in UTC, to the millisecond
LINES = {
    "trade": "trade       SPY                    100 @    601.23  V",
    "quote": "quote       AMD   bid    87.66 x 100    ask    87.68 x 400",
    "bar": "bar         SPY    388.985   389.13  388.975   389.12 V 49378",
    "updated_bar": "updated_bar SPY    388.985   389.13  388.975   389.11 V 49410",
    "daily_bar": "daily_bar   SPY     387.50   390.01   386.20   389.12 V 37854127",
    "status": "status      AAPL  Trading Halt (H): Trading Halted; For\n"
              "                                information requested by NASDAQ (T12)",
    "luld": "luld        IONM  down     2.65  up     3.24  (B)",
    "correction": "correction  EEM   440000 @ 39.1582 -> 440000 @ 39.1809",
    "cancel": "cancel      GOOGL 300 @ 105.31 cancelled",
    "imbalance": "imbalance   NVDA  at   180.42",
}
WIDTH = 80  # the columns of a terminal: a line printed wider wraps there


def record(kind: str, **changed: object) -> Record:
    message = as_received({**SAMPLES[kind], "t": WHEN, **changed})
    return MESSAGE_TYPES[message["T"]][1](message)


@pytest.mark.parametrize("kind", KINDS)
def test_printout_text_line_of_each_kind(kind):
    assert format_text(record(kind)) == PREFIX + LINES[kind]


# The longest of each kind that Alpaca sends: five-digit prices (NVR, BKNG and AZO trade in
# four), sub-penny prices, 7-character symbols (the column holds 5: GOOGL, BRK.B), blocks of a
# million shares, quote sizes in shares (since November 3, 2025), nine-digit daily volumes,
# 5,000-share corrections, and the longest halt and resumption reasons of Alpaca's list.
LONGEST: dict[str, list[dict]] = {
    "trade": [{"S": "BRK.B", "p": 12345.67, "s": 1_000_000}, {"S": "ABCD.WS", "p": 601.2345, "s": 9_999_999}],
    "quote": [{"S": "ABCD.WS", "bp": 12345.67, "bs": 999_999, "ap": 12345.68, "as": 999_999}],
    "bar": [{"S": "ABCD.WS", "o": 12345.67, "h": 12399.99, "l": 12300.01, "c": 12345.68, "v": 999_999},
            {"S": "GOOGL", "o": 388.985, "h": 389.1234, "l": 388.9751, "c": 389.12, "v": 9_999_999}],
    "updated_bar": [{"S": "ABCD.WS", "o": 12345.67, "h": 12399.99, "l": 12300.01, "c": 12345.68, "v": 999_999}],
    "daily_bar": [{"S": "GOOGL", "o": 388.985, "h": 389.1234, "l": 388.9751, "c": 389.12, "v": 999_999_999},
                  {"S": "ABCD.WS", "o": 12345.67, "h": 12399.99, "l": 12300.01, "c": 12345.68, "v": 99_999_999}],
    "status": [{"S": "ABCD.WS", "sm": "Trading Halt", "sc": "H", "rc": "C11",
                "rm": "Trade Halt Concluded By Other Regulatory Auth,; Quotes/Trades Resume"},
               {"S": "BRK.B", "sm": "Volatility Trading Pause", "sc": "P", "rc": "LUDS",
                "rm": "Volatility Trading Pause - Straddle Condition"}],
    "luld": [{"S": "ABCD.WS", "u": 12962.95, "d": 11728.39}],
    "correction": [{"S": "ABCD.WS", "op": 12345.67, "os": 5000, "cp": 12345.6789, "cs": 50000},
                   {"S": "GOOGL", "op": 601.2345, "os": 440000, "cp": 601.2346, "cs": 440000}],
    "cancel": [{"S": "ABCD.WS", "p": 12345.6789, "s": 1_000_000, "a": "E"}],
    "imbalance": [{"S": "ABCD.WS", "p": 12345.67}],
}


@pytest.mark.parametrize("kind", KINDS)
def test_printout_the_longest_line_of_each_kind_fits_80_columns(kind):
    for longest in LONGEST[kind]:
        lines = format_text(record(kind, **longest)).split("\n")
        assert all(len(line) <= WIDTH for line in lines), "\n".join(f"{len(line)}: {line}" for line in lines)
        # One line a message, but a reason too long for one: it goes on under the details.
        assert len(lines) == 1 or kind == "status"
        assert all(line.startswith(" " * len(PREFIX + f"{kind:<12}{longest['S']:<6}")) for line in lines[1:])
        assert longest["S"] in lines[0]


def test_printout_a_trades_at_sign_stands_in_one_column_for_stocks_pairs_and_options_of_any_length():
    def trade_of(kind: type[Record], **message: object) -> str:
        return format_text(kind(as_received({"T": "t", "t": WHEN, "i": 1, "x": "C", **message})))

    lines = [format_text(record("trade")), format_text(record("trade", S="BRK.B", p=12345.67, s=1_000_000)),
             trade_of(CryptoTrade, S="BTC/USD", p=89971.34, s=0.4549, tks="B"),
             trade_of(CryptoTrade, S="SHIB/USD", p=0.00001234, s=12_345_678.5, tks="S"),
             trade_of(OptionTrade, S="AAPL261218C00250000", p=15.38, s=1, c="I"),
             trade_of(OptionTrade, S="GOOGL1261218C00250000", p=1234.5, s=9999, c="f")]  # OCC's longest
    assert len({line.index(" @ ") for line in lines}) == 1, "\n".join(lines)
    assert all(len(line) <= WIDTH for line in lines), "\n".join(lines)


def test_printout_a_crypto_quote_is_padded_as_a_stocks_its_sides_in_columns_whatever_the_pair():
    def quote_of(pair: str, bid: tuple[float, float], ask: tuple[float, float]) -> str:
        return format_text(CryptoQuote(as_received({"T": "q", "S": pair, "t": WHEN, "bp": bid[0], "bs": bid[1],
                                                    "ap": ask[0], "as": ask[1]})))

    lines = [quote_of("BTC/USD", (89970.0, 0.1142), (89980.0, 0.329)),
             quote_of("SHIB/USD", (0.0000123, 12_345_678), (0.0000124, 5.5)),
             quote_of("ETH/USD", (3012.5, 1.5), (3012.75, 0.012345))]
    for text in ("bid ", "@", "ask "):
        assert len({line.index(text) for line in lines}) == 1, "\n".join(lines)
    assert len({line.rindex("@") for line in lines}) == 1, "\n".join(lines)
    assert all(len(line) <= WIDTH for line in lines), "\n".join(lines)


def test_printout_an_articles_headline_keeps_its_gap_after_a_pair_as_after_a_stock():
    lines = [format_text(News({"T": "n", "id": 1, "created_at": WHEN.to_datetime(), "symbols": [symbol],
                               "headline": f"{symbol} Announces New Product Line"})) for symbol in ("SPY", "SHIBUSD")]
    assert len({line.index(" Announces") - len(symbol) for line, symbol in zip(lines, ("SPY", "SHIBUSD"))}) == 1
    assert "SHIBUSD  SHIBUSD Announces" in lines[1], lines


def test_printout_a_status_with_a_short_reason_is_one_line():
    assert format_text(record("status", rm="Halt News Pending", rc="T1")) == \
        PREFIX + "status      AAPL  Trading Halt (H): Halt News Pending (T1)"


@pytest.mark.parametrize("kind", KINDS)
def test_printout_json_of_each_kind_has_its_type_and_alpaca_py_names(kind):
    message = record(kind)
    printed = json.loads(format_json(message))
    assert printed["type"] == kind
    assert list(printed) == ["type", *message.fields]
    assert printed["timestamp"] == "2025-11-24T16:00:00.123456+00:00"


def test_printout_json_trade_keeps_the_fields_it_had():
    assert json.loads(format_json(record("trade"))) == {
        "type": "trade", "symbol": "SPY", "price": 601.23, "size": 100,
        "timestamp": "2025-11-24T16:00:00.123456+00:00", "exchange": "V", "conditions": ["@"],
        "id": 52983525029461, "tape": "B"}


def test_printout_keeps_a_field_that_alpaca_added_in_json_and_in_the_record():
    received_at = msgpack.Timestamp.from_unix_nano(1_764_000_000_123_999_000)
    message = as_received({**SAMPLES["trade"], "t": WHEN, "tks": "B", "r": received_at})
    trade = Trade(message)
    printed = json.loads(format_json(trade))
    assert printed["tks"] == "B" and printed["r"] == "2025-11-24T16:00:00.123999+00:00"
    assert list(printed) == ["type", *trade.fields, "tks", "r"]
    assert repr(trade).endswith(", tape='B', tks='B', r=datetime.datetime(2025, 11, 24, 16, 0, 0, 123999, "
                                "tzinfo=datetime.timezone.utc))")


def test_printout_a_message_missing_a_field_is_printed_with_what_it_has():
    message = as_received({key: value for key, value in SAMPLES["trade"].items() if key != "p"} | {"t": WHEN})
    printed = json.loads(format_json(Trade(message)))
    assert printed == {"type": "trade", "symbol": "SPY", "size": 100, "timestamp": "2025-11-24T16:00:00.123456+00:00",
                       "exchange": "V", "conditions": ["@"], "id": 52983525029461, "tape": "B"}
    lines = format_text(Trade(message)).split("\n")
    assert lines[0].startswith("trade      (incomplete) {") and all(len(line) <= WIDTH for line in lines)
    text = " ".join(line.strip() for line in lines)
    assert json.loads(text[text.index("{"):]) == printed


def test_printout_an_article_missing_its_headline_is_printed_with_what_it_has():
    article = News({"T": "n", "id": 1, "created_at": "2026-12-05T06:00:00Z", "symbols": ["SPY"]})
    lines = format_text(article).split("\n")
    assert lines[0].startswith("news       (incomplete) {") and all(len(line) <= WIDTH for line in lines)


def test_printout_prices_keep_sub_penny_digits_and_stay_aligned():
    assert [money(p) for p in (601.23, 601.2, 0.4567, 39.1582, 39.158, 1.0)] == \
        ["601.23", "601.20", "0.4567", "39.1582", "39.158", "1.00"]


# -- end to end, the script with its own handlers ---------------------------------------------------


# Each test waits as long as it takes for the server to send what it needs, then briefly for the
# lines: a printout that was changed fails in seconds, not at a deadline.
PRINTED_WITHIN = 3.0


def sent(server) -> list[dict]:
    return [message for connection in server.connections for message in connection.messages]


def wait_for_printed(script, server, count: int) -> None:
    script.wait_for(lambda: len(sent(server)) >= count, what=f"{count} messages sent")
    script.wait_for_lines(count, timeout=PRINTED_WITHIN)


def wait_for_every_kind(script, server) -> None:
    server.cue("block", "correction", "cancel", "halt", "resume", "luld", "bar", "updated_bar", "daily_bar",
               "imbalance")
    script.wait_for(lambda: {message["T"] for message in sent(server)} >= set(MESSAGE_TYPES),
                    what="every kind sent")
    script.wait_for(lambda: all(any(f" {kind} " in line or f'"{kind}"' in line for line in script.out_lines)
                                for kind in KINDS), timeout=PRINTED_WITHIN, what="a line of every kind")


ALL_CHANNELS = ("--trades", "--quotes", "--bars", "--updated-bars", "--daily-bars", "--statuses", "--lulds",
                "--imbalances")


@POSIX_ONLY
def test_printout_every_channel_gives_its_lines_in_text(server, start_script):
    script = start_script("--url", server.url, *ALL_CHANNELS)
    script.wait_for_stderr("subscribed to trades, quotes, bars")
    wait_for_every_kind(script, server)
    assert script.stop(signal.SIGINT)[0] == 0
    pattern = re.compile(r"\d\d:\d\d:\d\d\.\d{3}Z (\w+) +(SPY|TSLA) +\S")
    for line, before in zip(script.out_lines, ["", *script.out_lines]):
        assert len(line) <= WIDTH, line
        if line.startswith(" "):  # a status's reason, on a line of its own under the details
            assert re.match(r" {32}\S", line) and " status " in before, (before, line)
        else:
            assert pattern.match(line) and pattern.match(line).group(1) in KINDS, line


@POSIX_ONLY
def test_printout_every_channel_gives_its_objects_in_json(server, start_script):
    script = start_script("--url", server.url, "--json", *ALL_CHANNELS)
    script.wait_for_stderr("subscribed to trades, quotes, bars")
    wait_for_every_kind(script, server)
    assert script.stop(signal.SIGINT)[0] == 0
    printed = [json.loads(line) for line in script.out_lines]
    assert {message["type"] for message in printed} == set(KINDS)
    assert len(printed) <= len(sent(server))
    for message, wire in zip(printed, sent(server)):  # each line is the message sent at its place
        assert MESSAGE_TYPES[wire["T"]][0] == message["type"] and wire["S"] == message["symbol"]


@POSIX_ONLY
def test_printout_json_has_every_sent_trade_once_in_order(server, start_script):
    script = start_script("aapl", "nvda", "--json", "--url", server.url)
    wait_for_printed(script, server, 300)
    assert script.stop(signal.SIGINT)[0] == 0
    trades = [json.loads(line) for line in script.out_lines if '"trade"' in line]
    assert [trade["id"] for trade in trades] == server.connections[0].trade_ids[: len(trades)]
    assert {trade["symbol"] for trade in trades} == {"AAPL", "NVDA"}


@POSIX_ONLY
def test_printout_quiet_on_the_command_line_prints_no_message_yet_the_handlers_get_them(server, start_script):
    script = start_script("--url", server.url, "--quiet", "--heartbeat", "0.5")
    script.wait_for(lambda: re.search(r"alive: [\d,]+ trades", script.stderr), what="a heartbeat counting trades")
    assert script.stop(signal.SIGINT)[0] == 0
    assert script.out_lines == [] and int(re.search(r"received ([\d,]+) trades", script.stderr)[1].replace(",", "")) > 0


@POSIX_ONLY
def test_printout_default_symbols_are_spy_and_tsla(server, start_script):
    script = start_script("--url", server.url)
    wait_for_printed(script, server, 40)
    assert script.stop(signal.SIGINT)[0] == 0
    assert {line.split()[2] for line in script.out_lines} == {"SPY", "TSLA"}


@POSIX_ONLY
def test_printout_piped_is_real_time_even_when_messages_are_few(make_server, start_script):
    # 4 trades a second: a pipe's 8 KB buffer would hold the first line back for half a minute.
    server = make_server(rate=4)
    script = start_script("--url", server.url)
    script.wait_for(lambda: server.connections and server.connections[0].trade_ids, what="a trade sent")
    # The first trade's own line, not any line: a handler that prints only now and then (a
    # block, say) fails here every time, not when its line happens to come in time.
    script.wait_for(lambda: any(" trade " in line for line in script.out_lines), timeout=PRINTED_WITHIN,
                    what="the line of the trade sent")
    assert script.stop(signal.SIGINT)[0] == 0


@POSIX_ONLY
def test_printout_piped_into_head_exits_0_quietly_when_head_has_its_lines(make_server, start_script):
    server = make_server(rate=2000)
    read_end, write_end = os.pipe()
    head = subprocess.Popen(["head", "-5"], stdin=read_end, stdout=subprocess.PIPE, text=True)
    script = start_script("--url", server.url, stdout=write_end)
    os.close(read_end)
    os.close(write_end)
    script.wait_for(lambda: len(sent(server)) >= 5, what="5 messages sent")
    lines = head.communicate(timeout=PRINTED_WITHIN)[0].splitlines()
    assert len(lines) == 5
    assert script.finish(timeout=10) == 0
    assert "Traceback" not in script.stderr


@pytest.mark.skipif(sys.platform == "win32", reason="stops the demo with SIGINT")
def test_printout_demo_shows_trades_with_no_keys(start_script):
    from conftest import script_env

    script = start_script("--demo", env=script_env(APCA_API_KEY_ID=None, APCA_API_SECRET_KEY=None))
    script.wait_for_stderr("subscribed to trades")
    script.wait_for_lines(5, timeout=PRINTED_WITHIN)  # the demo sends 8 trades a second
    assert script.stop(signal.SIGINT)[0] == 0
    # Trades, and now and then a correction or a cancel of one.
    assert all(re.search(r"Z (trade|correction|cancel) ", line) for line in script.out_lines), script.stdout
    assert any("Z trade " in line for line in script.out_lines)


def test_printout_demo_news_of_a_stock_and_a_crypto_pair_is_a_line_of_80_each_the_pair_named_as_news_names_it(
        start_script):
    from conftest import script_env

    script = start_script("--demo", "AAPL", "BTC/USD", "--news",
                          env=script_env(APCA_API_KEY_ID=None, APCA_API_SECRET_KEY=None))
    script.wait_for_stderr("subscribed to news of AAPL, BTCUSD")  # the start can be slow: not the printing
    script.wait_for(lambda: len(script.out_lines) >= 2, PRINTED_WITHIN + 2, "two articles")  # one every 2 s
    assert script.stop(signal.SIGINT)[0] == 0
    assert all(re.match(r"\d\d:\d\d:\d\d\.\d{3}Z news +(AAPL|BTCUSD) +\S", line) for line in script.out_lines)
    assert max(map(len, script.out_lines)) <= 80 and "<p>" not in script.stdout  # not its HTML


def test_printout_demo_shows_pairs_and_an_option_beside_a_stock_each_trade_and_quote_on_a_line_of_80_aligned(
        start_script):
    from conftest import script_env

    option = "AAPL261218C00250000"
    script = start_script("--demo", "SPY", "BTC/USD", "SHIB/USD", option, "--trades", "--quotes",
                          env=script_env(APCA_API_KEY_ID=None, APCA_API_SECRET_KEY=None))
    script.wait_for_stderr("subscribed to trades, quotes of SPY")  # the start can be slow: not the printing
    script.wait_for_stderr("subscribed to trades, quotes of BTC/USD, SHIB/USD")
    script.wait_for_stderr(f"subscribed to trades, quotes of {option}")
    script.wait_for(lambda: all(sum(f" {symbol} " in line for line in script.out_lines) >= 4
                                for symbol in ("BTC/USD", "SHIB/USD", option))
                    and any(" SPY " in line for line in script.out_lines), PRINTED_WITHIN, "the markets' lines")
    assert script.stop(signal.SIGINT)[0] == 0
    crypto = [line for line in script.out_lines if " BTC/USD " in line]
    # A fraction of a coin at a price, and the taker's side; a quote's sizes in coins.
    assert any(re.search(r"Z trade +BTC/USD +\d+\.\d+ @ +\d+\.\d\d  [BS]$", line) for line in crypto), crypto
    assert any(re.search(r"Z quote +BTC/USD +bid +\d\.\d+@\d+\.\d\d +ask +\d\.\d+@", line) for line in crypto), crypto
    # Contracts at a price, the exchange and the condition; a quote's sizes in contracts.
    options = [line for line in script.out_lines if f" {option} " in line]
    assert any(re.search(rf"Z trade +{option} +\d+ @ +\d+\.\d\d  [A-Z] \w$", line) for line in options), options
    assert any(re.search(rf"Z quote +{option} bid +\d+\.\d\d x \d+ +ask +\d+\.\d\d x \d+$", line)
               for line in options), options
    assert max(map(len, script.out_lines)) <= 80
    # In one stream, a trade's "@" in one column whatever its market; a pair's quotes' in theirs.
    trades = [line for line in script.out_lines if "Z trade " in line]
    assert {line.split()[2] for line in trades} == {"SPY", "BTC/USD", "SHIB/USD", option}, script.stdout
    assert len({line.index(" @ ") for line in trades}) == 1, "\n".join(trades)
    pairs = [line for line in script.out_lines if re.search(r"Z quote +(BTC|SHIB)/USD ", line)]
    assert len({(line.index("@"), line.index(" ask "), line.rindex("@")) for line in pairs}) == 1, "\n".join(pairs)


@pytest.mark.parametrize("columns", ["80", None], ids=["an 80-column terminal", "a pipe"])
def test_printout_help_fits_80_columns_with_its_usage_line(columns):
    # argparse wraps the options' help to the terminal (COLUMNS; 80 in a pipe), but neither
    # the usage of a group of options nor the description and the exit statuses.
    env = {key: value for key, value in os.environ.items() if key != "COLUMNS"}
    env.update({"COLUMNS": columns} if columns else {})
    printed = subprocess.run([sys.executable, str(ROOT / "websocket_stream.py"), "--help"], env=env,
                             capture_output=True, text=True, timeout=30).stdout
    lines = printed.splitlines()
    assert lines[0] == "usage: websocket_stream.py [SYMBOL ...] [options]"
    assert "exit statuses:" in lines and len(lines) > 40
    assert [line for line in lines if len(line) > WIDTH] == []
