"""Configuration and arguments: where the keys come from, what is refused before any connection,
and what each bad argument says."""

from __future__ import annotations

import logging
import shlex
import shutil
import socket
import subprocess
import sys
from datetime import date

import pytest
from conftest import FAKE_KEY, FAKE_SECRET, ROOT, unwrapped

import websocket_stream as ws
from alpaca_stream.channels import OptionSymbol, option_symbol
from alpaca_stream.errors import EXIT_USAGE, ConfigError
from alpaca_stream.keys import KEY_ENV, SECRET_ENV, Keys, check_keys, load_keys
from alpaca_stream.options import parse_args, settings_from


@pytest.fixture
def clean_env(monkeypatch):
    for name in (KEY_ENV, SECRET_ENV):
        monkeypatch.delenv(name, raising=False)


# -- the keys ------------------------------------------------------------------------------------


def test_config_py_wins_over_the_environment(tmp_path, monkeypatch):
    (tmp_path / "config.py").write_text(f'API_KEY = "{FAKE_KEY}"\nSECRET_KEY = "{FAKE_SECRET}"\n')
    monkeypatch.setenv(KEY_ENV, "ENV-KEY-ID-0000000")
    assert check_keys(load_keys(tmp_path)) == (FAKE_KEY, FAKE_SECRET, "config.py")


def test_config_example_copied_as_is_reads_the_environment(tmp_path, monkeypatch):
    (tmp_path / "config.py").write_text((ROOT / "config.example.py").read_text())
    monkeypatch.setenv(KEY_ENV, FAKE_KEY)
    monkeypatch.setenv(SECRET_ENV, FAKE_SECRET)
    assert check_keys(load_keys(tmp_path)) == (FAKE_KEY, FAKE_SECRET, "the environment")  # read by config.py


@pytest.mark.parametrize(("config_py", "env", "dotenv", "said"), [
    (True, {}, {KEY_ENV: "YOUR_KEY_HERE", SECRET_ENV: FAKE_SECRET},
     f"{KEY_ENV} from .env\nlooks like a placeholder, not a key\n(YOUR_..., <...>, xxx..., ...HERE).\n"
     f"Put your key in .env, beside the script: {KEY_ENV}=..."),
    (False, {}, {KEY_ENV: "YOUR_KEY_HERE", SECRET_ENV: FAKE_SECRET}, f"{KEY_ENV} from .env\nlooks like a placeholder"),
    (True, {KEY_ENV: "xxxxxxxxxxxx", SECRET_ENV: FAKE_SECRET}, {},
     f"{KEY_ENV} from the environment\nlooks like a placeholder, not a key\n(YOUR_..., <...>, xxx..., ...HERE).\n"
     f"Set {KEY_ENV} to your key, in the environment."),
    (True, {KEY_ENV: FAKE_KEY}, {},  # config.example.py's placeholder stands for the secret not set
     f"{SECRET_ENV} from the environment\nis missing or empty.\nSet {SECRET_ENV} to your key, in the environment."),
])
def test_a_wrong_key_is_said_to_be_where_it_is_even_read_through_config_py(config_py, env, dotenv, said, tmp_path,
                                                                          clean_env, monkeypatch):
    if config_py:
        (tmp_path / "config.py").write_text((ROOT / "config.example.py").read_text())
    for name in (KEY_ENV, SECRET_ENV):
        monkeypatch.setenv(name, env.get(name, ""))  # noted, so that what config.py's load_dotenv() sets is undone
        if name not in env:
            monkeypatch.delenv(name)
    (tmp_path / ".env").write_text("".join(f"{name}={value}\n" for name, value in dotenv.items()))
    with pytest.raises(ConfigError) as refused:
        check_keys(load_keys(tmp_path))
    assert str(refused.value).startswith(said)


@pytest.mark.parametrize(("typed", "problem"), [
    ("YOUR_KEY_HERE", "looks like a placeholder, not a key"), ("your-secret-key", "looks like a placeholder"),
    ("xxxxxxxxxxxx", "looks like a placeholder"), ("XXXX-XXXX-XXXX", "looks like a placeholder"),
    ("PASTE_YOUR_KEY_HERE", "looks like a placeholder"), ("<your key>", "does not look like a key"),
    ("<SECRET_KEY>", "does not look like a key"),
])
def test_a_placeholder_a_person_typed_is_refused_before_any_connection_without_printing_it(typed, problem,
                                                                                           monkeypatch, tmp_path):
    monkeypatch.setenv(KEY_ENV, FAKE_KEY)
    monkeypatch.setenv(SECRET_ENV, typed)
    with pytest.raises(ConfigError) as refused:
        check_keys(load_keys(tmp_path))
    assert str(refused.value).startswith(f"{SECRET_ENV} from the environment\n{problem}")
    assert typed not in str(refused.value)


@pytest.mark.parametrize("key", ["FAKE-HERE-IN-THE-MIDDLE-0001", "FAKE-YOURS-0001", "FAKE-XXX-0001"])
def test_a_key_that_merely_contains_a_placeholders_letters_is_taken(key, monkeypatch, tmp_path):
    monkeypatch.setenv(KEY_ENV, key)
    monkeypatch.setenv(SECRET_ENV, FAKE_SECRET)
    assert check_keys(load_keys(tmp_path)).key == key


def test_a_placeholder_left_in_config_py_says_to_paste_the_key_there(tmp_path, clean_env):
    (tmp_path / "config.py").write_text((ROOT / "config.example.py").read_text())
    with pytest.raises(ConfigError) as refused:
        check_keys(load_keys(tmp_path))
    assert str(refused.value) == ("API_KEY from config.py\nis still the placeholder 'your_api_key_here'.\n"
                                  "Paste your key in place of it, in quotes.")


def test_without_config_py_the_environment_is_used(tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, f"  {FAKE_KEY}\n")  # pasted with spaces around
    monkeypatch.setenv(SECRET_ENV, FAKE_SECRET)
    assert check_keys(load_keys(tmp_path)) == (FAKE_KEY, FAKE_SECRET, "the environment")


def test_without_config_py_or_environment_a_dotenv_file_is_used(tmp_path, clean_env):
    (tmp_path / ".env").write_text(f"{KEY_ENV}={FAKE_KEY}\n{SECRET_ENV}={FAKE_SECRET}\n")
    assert check_keys(load_keys(tmp_path)) == (FAKE_KEY, FAKE_SECRET, ".env")


def test_no_keys_anywhere_says_how_to_set_them_on_linux_macos_and_windows(tmp_path, clean_env):
    shutil.copy(ROOT / "config.example.py", tmp_path)  # as in the project's folder
    with pytest.raises(ConfigError) as refused:
        check_keys(load_keys(tmp_path))
    message = str(refused.value)
    assert message.startswith("No Alpaca API keys found")
    assert "cp config.example.py config.py" in message and "copy config.example.py config.py" in message
    assert "--demo" in message


@pytest.mark.parametrize(("key", "secret", "problem"), [
    ("", FAKE_SECRET, "API_KEY from config.py\nis missing or empty"),
    (FAKE_KEY, "   ", "SECRET_KEY from config.py\nis missing or empty"),
    ("your_api_key_here", FAKE_SECRET, "still the placeholder"),
    (FAKE_KEY, "your_secret_key_here", "still the placeholder"),
    ('"PKQUOTED0000000"', FAKE_SECRET, "does not look like a key"),
    (FAKE_KEY, "two words here", "does not look like a key"),
    ("abc", FAKE_SECRET, "does not look like a key"),
])
def test_keys_that_cannot_work_are_refused_before_connecting_in_80_columns(key, secret, problem):
    with pytest.raises(ConfigError, match=problem):
        check_keys(Keys(key, secret, "config.py"))
    with pytest.raises(ConfigError) as refused:  # the longest names: APCA_API_SECRET_KEY from the environment
        check_keys(Keys(key, secret, "the environment"))
    first, *rest = str(refused.value).splitlines()
    assert len(f"2026-11-24 23:00:53Z error: {first}") <= 80 and all(len(f"  {line}") <= 80 for line in rest)


def test_a_key_pasted_without_quotes_is_explained_without_printing_it(tmp_path):
    (tmp_path / "config.py").write_text("# keys\nAPI_KEY = PKUNQUOTED12345678\nSECRET_KEY = 'x'\n")
    with pytest.raises(ConfigError) as refused:
        load_keys(tmp_path)
    assert str(refused.value) == ("config.py line 2 uses a name Python does not know.\n"
                                  'Keys go in quotes: API_KEY = "..."')


def test_a_key_with_a_space_pasted_without_quotes_gets_the_hint_about_quotes(tmp_path):
    (tmp_path / "config.py").write_text("API_KEY = PKUNQUOTED 12345678\nSECRET_KEY = 'x'\n")
    with pytest.raises(ConfigError) as refused:
        load_keys(tmp_path)
    assert str(refused.value).startswith("config.py has a syntax error on line 1: ")
    assert str(refused.value).endswith('\nKeys go in quotes: API_KEY = "..."')
    assert "PKUNQUOTED" not in str(refused.value)


def test_a_syntax_error_in_config_py_is_reported_as_one_without_the_keys_hint(tmp_path):
    (tmp_path / "config.py").write_text('API_KEY = "PKSECRET000000000"\nif True\n    pass\n')
    with pytest.raises(ConfigError) as refused:
        load_keys(tmp_path)
    assert str(refused.value) == "config.py has a syntax error on line 2: expected ':'"
    assert "PKSECRET" not in str(refused.value)


def test_a_config_py_failing_for_another_reason_says_why(tmp_path):
    (tmp_path / "config.py").write_text("import no_such_module_here\n")
    with pytest.raises(ConfigError, match="config.py failed on line 1: ModuleNotFoundError: No module named "
                                             "'no_such_module_here'"):
        load_keys(tmp_path)


def test_main_returns_2_for_missing_keys_with_no_summary(tmp_path, clean_env, monkeypatch, caplog):
    monkeypatch.setattr(ws, "__file__", str(tmp_path / "websocket_stream.py"))
    caplog.set_level(logging.INFO, logger="alpaca_stream")
    assert ws.main(["--url", "ws://127.0.0.1:9/v2/iex"]) == EXIT_USAGE
    assert [r.levelname for r in caplog.records] == ["ERROR"]
    assert "No Alpaca API keys found" in caplog.text


# -- arguments -------------------------------------------------------------------------------------


def test_symbols_are_upper_cased_and_deduplicated():
    assert parse_args(["spy", "Tsla", "SPY", "brk.b"]).symbols == ["SPY", "TSLA", "BRK.B"]


def test_every_symbol_is_a_quoted_star():
    assert settings_from(parse_args(["*", "--quotes"])).symbols == ["*"]


@pytest.mark.parametrize(("argv", "channels"), [
    ([], ["trades"]),
    (["--quotes"], ["quotes"]),
    (["--trades", "--quotes", "--bars"], ["trades", "quotes", "bars"]),
    (["--statuses", "--updated-bars", "--daily-bars", "--lulds"], ["updatedBars", "dailyBars", "statuses", "lulds"]),
])
def test_channels_are_named_by_options_and_trades_are_the_default(argv, channels):
    assert parse_args(argv).channels == channels


def test_an_option_symbol_is_taken_apart_into_its_stock_expiry_call_or_put_and_strike():
    option = option_symbol("BRKB261218P00487500")
    assert option == OptionSymbol("BRKB", "261218", "P", 487.5) and option.expires() == date(2026, 12, 18)
    assert option_symbol("AAPL1261218C00250000").underlying == "AAPL1"  # an adjusted contract's root
    with pytest.raises(ValueError):
        option_symbol("AAPL261318C00250000").expires()  # month 13
    with pytest.raises(ValueError):
        option_symbol("AAPL")


@pytest.mark.parametrize(("argv", "says"), [
    (["SP Y"], "not a stock symbol, nor a crypto pair as BTC/USD, nor an option as AAPL261218C00250000: SP Y"),
    (["$$$"], "not a stock symbol"),
    (["BTC/"], "not a stock symbol, nor a crypto pair as BTC/USD, nor an option as AAPL261218C00250000: BTC/"),
    (["AAPL261318C00250000"], "AAPL261318C00250000 is not an option: its expiry, 261318, is not a date (yymmdd)"),
    (["AAPL261218C00000000"], "AAPL261218C00000000 is not an option: its strike (the last 8 digits) is 0"),
    (["AAPL261218C00250000", "--bars"], "--bars: not a channel of AAPL261218C00250000; name a stock or a pair to "
                                        "stream it for"),
    (["AAPL261218C00250000", "--orderbooks"], "--orderbooks: not a channel of AAPL261218C00250000; name a pair"),
    (["AAPL261218C00250000", "--news"], "AAPL261218C00250000 would get nothing: news is not an options channel"),
    (["SPY", "AAPL261218C00250000", "--bars"], "AAPL261218C00250000 would get nothing: bars is not an options "
                                               "channel; name an options channel too"),
    (["SPY", "AAPL261218C00250000", "--updated-bars", "--daily-bars"],
     "AAPL261218C00250000 would get nothing: updated bars, daily bars are not options channels"),
    (["AAPL261218C00250000", "--url", "ws://127.0.0.1:1/v2/iex"], "has a path, so it is taken as the stock "
                                                                  "stream's; for AAPL261218C00250000, give the host"),
    (["AAPL261218C00250000", "--source", "nats://127.0.0.1:4222", "--options-feed", "opra"],
     "it has no effect with --demo, --source or --url with a path"),
    (["SPY", "--options-feed", "opra"], "--options-feed picks the options stream's feed, and this run streams no "
                                        "options"),
    (["AAPL261218C00250000", "--demo", "--options-feed", "opra"], "--options-feed picks one of Alpaca's feeds: it "
                                                                  "has no effect with --demo"),
    (["AAPL261218C00250000", "--feed", "sip"], "--feed picks the stock stream's feed, and this run streams no stocks"),
    (["BTC/USD", "--url", "ws://127.0.0.1:1/v2/iex"], "--url ws://127.0.0.1:1/v2/iex has a path, so it is taken as "
                                                      "the stock stream's; for BTC/USD, give the host alone"),
    (["SPY", "BTC/USD", "--lulds", "--statuses"], "BTC/USD would get nothing: statuses, lulds are not crypto "
                                                  "channels; name a crypto channel too, as --trades"),
    (["BTC/USD", "--test-stream"], "--test-stream is Alpaca's test stream of stocks (FAKEPACA): stream BTC/USD "
                                   "without it"),
    (["BTC/USD", "--statuses"], "--statuses: not a channel of BTC/USD; name a stock to stream it for"),
    (["--replay", "session.jsonl", "BTC/USD"], "--replay plays the recording as it is"),
    (["SPY", "--orderbooks"], "--orderbooks is a crypto channel: name a pair, as BTC/USD"),
    (["--news", "--test-stream"], "--test-stream is Alpaca's test stream of stocks (FAKEPACA): stream the news "
                                  "without it"),
    (["SPY", "BTC/USD", "--orderbooks"], "--orderbooks is crypto's alone: name a channel for SPY too, as --trades"),
    (["BTC/USD", "--feed", "sip"], "--feed picks the stock stream's feed, and this run streams no stocks"),
    (["--news", "SPY", "--feed", "sip"], "--feed picks the stock stream's feed, and this run streams no stocks"),
    (["--live", "--replay", "session.jsonl"], "--live says where orders go: --source trades nowhere, and --replay "
                                              "or --history in a backtest of its own"),
    (["--trading-url", "http://127.0.0.1:1", "--source", "nats://127.0.0.1:4222"], "--trading-url says where "
                                                                                    "orders go: --source trades "
                                                                                    "nowhere, and --replay or "
                                                                                    "--history in a backtest of "
                                                                                    "its own"),
    (["--trade-updates", "--source", "nats://127.0.0.1:4222"], "--trade-updates needs your keys and the trading "
                                                              "API: not --source"),
    (["--trade-updates", "--live", "--demo"], "--live is Alpaca's live account: not with --demo"),
    (["SPY", "--trade-updates"], "SPY would get nothing: --trade-updates alone streams the order updates; name a "
                                 "channel too, as --trades"),
    (["spy,tsla", "aapl"], "separate symbols with spaces, not commas: SPY TSLA"),
    (["--feed", "otc"], "invalid choice"),
    (["--demo", "--url", "ws://127.0.0.1:1"], "not allowed with"),
    (["--test-stream", "--demo"], "not allowed with"),
    (["--demo", "--feed", "sip"], "--feed picks one of Alpaca's feeds: it has no effect with --demo"),
    (["--url", "ws://127.0.0.1:1/v2/iex", "--feed", "iex"], "no effect with --demo, --url with a path, "
                                                           "--test-stream or --source"),
    (["--source", "nats://127.0.0.1:4222", "--feed", "sip"], "no effect with --demo, --url with a path"),
    (["--source", "nats://127.0.0.1:4222", "--demo"], "not allowed with"),
    (["--publish", "nats://127.0.0.1:4222", "--source", "nats://127.0.0.1:4222"], "one feeder publishes"),
    (["--durable", "bot-1"], "--durable NAME goes with --source"),
    (["--fills", "fills.csv"], "--fills goes with --replay FILE or --history SPAN: the fills of its backtest"),
    (["--source", "nats://127.0.0.1:4222", "--durable", "my.bot"], "--durable takes a name of letters, digits"),
    (["--log-format", "xml"], "argument --log-format: invalid choice: 'xml' (choose from 'text', 'json')"),
    (["--serve", "192.0.2.1:8765", "--demo"], "--serve 192.0.2.1:8765: with --demo or --source, clients need no "
                                              "keys, so only this machine may connect: use 127.0.0.1"),
    (["--replay", "session.jsonl", "--quotes"], "--replay plays the recording as it is: symbols, channel options"),
])
def test_bad_arguments_exit_2_saying_what_is_wrong_within_80_columns(argv, says, capsys):
    with pytest.raises(SystemExit) as exited:
        parse_args(argv)
    assert exited.value.code == EXIT_USAGE
    lines = capsys.readouterr().err.splitlines()
    assert says in " ".join(line.strip() for line in lines)  # the lines after the first indented
    assert [line for line in lines if len(line) > 80] == []


# Each URL option, the command line that gives it, its scheme; and what a bad URL there is told.
URL_OPTIONS = [(["--url"], "ws"), (["--trade-updates", "--trading-url"], "http"),
               (["--demo", "--publish"], "nats"), (["--source"], "nats")]
BAD_URLS = [("[::1", "an IPv6 address goes whole in brackets, as [::1]"),
            ("[abc]:1", "an IPv6 address goes whole in brackets, as [::1]"),
            ("", "it has no host: {scheme}://HOST:PORT"),
            ("127.0.0.1:abc", "its port is not a number from 0 to 65535"),
            ("127.0.0.1:99999", "its port is not a number from 0 to 65535"),
            ("127.0.0.1:0", "its port is 0: a server's port is a number from 1 to 65535"),
            ("a b:1", "it has a space"),
            ("a<b:1", "its host, a<b, is not a name or an address"),
            ("127.0.0.1:1/v2/iex#here", "it has a #fragment, which means nothing to a server")]


@pytest.fixture
def connections(monkeypatch) -> list:
    """Every connection this process's sockets try: noted, and refused."""
    tried = []

    def connect(sock, address):
        tried.append(address)
        raise ConnectionRefusedError

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect)
    return tried


def exits_2_before_connecting(argv, says, capsys, connections):
    """main(argv) ends at once with exit status 2 and says this, in 80 columns, no traceback."""
    with pytest.raises(SystemExit) as exited:
        ws.main(argv)
    assert exited.value.code == EXIT_USAGE
    err = capsys.readouterr().err
    assert f"error: {says}\n" in unwrapped(err)
    assert "Traceback" not in err and [line for line in err.splitlines() if len(line) > 80] == []
    assert connections == []


@pytest.mark.parametrize(("given", "scheme"), URL_OPTIONS)
@pytest.mark.parametrize(("form", "fault"), BAD_URLS)
def test_a_url_that_cannot_be_connected_to_exits_2_saying_what_is_wrong(given, scheme, form, fault, capsys,
                                                                       connections):
    url = f"{scheme}://{form}"
    says = f"{given[-1]} {shlex.quote(url)}: {fault.format(scheme=scheme)}"
    exits_2_before_connecting([*given, url], says, capsys, connections)


@pytest.mark.parametrize(("argv", "says"), [
    (["--url", "http://example.invalid"], "--url http://example.invalid: it must start with ws:// or wss://"),
    (["--url", "example.invalid:80"], "--url example.invalid:80: it must start with ws:// or wss://"),
    (["--trade-updates", "--trading-url", "ws://127.0.0.1:1/stream"],
     "--trading-url ws://127.0.0.1:1/stream: it must start with http:// or https://"),
    (["--trade-updates", "--trading-url", "http://127.0.0.1:1/v2"],
     "--trading-url http://127.0.0.1:1/v2: the server alone, as http://HOST:PORT: no path after it"),
    (["--demo", "--publish", "http://127.0.0.1:4222"],
     "--publish http://127.0.0.1:4222: it must start with nats:// or tls://"),
    (["--source", "127.0.0.1:4222"], "--source 127.0.0.1:4222: it must start with nats:// or tls://"),
    (["--source", "nats://127.0.0.1:4222/bots"],
     "--source nats://127.0.0.1:4222/bots: the server alone, as nats://HOST:PORT: no path after it"),
])
def test_a_url_of_another_scheme_or_with_a_path_where_none_goes_exits_2(argv, says, capsys, connections):
    exits_2_before_connecting(argv, says, capsys, connections)


@pytest.mark.parametrize(("address", "says"), [
    ("[::1:8765", "--serve '[::1:8765': an IPv6 address goes whole in brackets, as [::1]"),
    ("127.0.0.1:abc", "--serve 127.0.0.1:abc: its port is not a number from 0 to 65535"),
    ("99999", "--serve 99999: its port is not a number from 0 to 65535"),
    ("a b:8765", "--serve 'a b:8765': it has a space"),
    ("127.0.0.1:", "--serve takes [HOST:]PORT: no port in 127.0.0.1:"),
])
def test_a_serve_address_that_cannot_be_listened_on_exits_2_saying_what_is_wrong(address, says, capsys,
                                                                                 connections):
    exits_2_before_connecting(["--demo", "--serve", address], says, capsys, connections)


@pytest.mark.parametrize("argv", [
    ["--url", "ws://[::1]:8765/v2/iex"], ["--url", "wss://user:password@example.com/v2/iex?x=1"],
    ["--url", "ws://münchen.example:8765"], ["--url", "ws://my_proxy:8765/"],
    ["--trade-updates", "--trading-url", "http://127.0.0.1:1/"], ["--source", "nats://bot:secret@127.0.0.1:4222"],
    ["--demo", "--publish", "tls://[::1]:4222"], ["--demo", "--serve", "::1:8765"],
    ["--demo", "--serve", "[::1]:0"], ["--demo", "--serve", "localhost:8765"],
])
def test_urls_and_addresses_of_every_form_that_works_are_taken(argv):
    parse_args(argv)


def test_a_star_expanded_by_the_shell_is_recognised(tmp_path, monkeypatch, capsys):
    for name in ("config.example.py", "README.md", "websocket_stream.py"):
        (tmp_path / name).write_text("")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit):
        parse_args(["config.example.py", "README.md", "websocket_stream.py"])  # what `*` became
    assert "the shell expanded * into the file names here: quote it, '*'" in capsys.readouterr().err


@pytest.mark.parametrize(("argv", "shown"), [(["--demo", ""], "''"), (["--demo", "SPY", ""], "''"),
                                             (["SPY", " "], "' '")])
def test_an_empty_symbol_is_said_to_be_empty(argv, shown, capsys):
    with pytest.raises(SystemExit) as exited:
        parse_args(argv)
    assert exited.value.code == EXIT_USAGE
    assert f"error: a symbol is empty ({shown})" in capsys.readouterr().err


@pytest.mark.parametrize(("typed", "meant"), [("--qoutes", "--quotes"), ("--jsno", "--json"),
                                              ("--replay-sped", "--replay-speed")])
def test_a_misspelt_option_is_answered_with_the_one_meant(typed, meant, capsys):
    with pytest.raises(SystemExit) as exited:
        parse_args([typed])
    assert exited.value.code == EXIT_USAGE
    assert f"unrecognized arguments: {typed}; did you mean {meant}?" in unwrapped(capsys.readouterr().err)


def test_help_lists_every_exit_status_and_channel(capsys):
    with pytest.raises(SystemExit):
        ws.main(["--help"])
    help_text = capsys.readouterr().out
    for status in ("0 ", "1 ", "2 ", "3 ", "130 "):
        assert f"\n  {status}" in help_text
    for option in ("--trades", "--quotes", "--bars", "--updated-bars", "--daily-bars", "--statuses", "--lulds"):
        assert option in help_text


@pytest.mark.parametrize(("argv", "url", "symbols"), [
    ([], "wss://stream.data.alpaca.markets/v2/iex", ["SPY", "TSLA"]),
    (["--feed", "sip", "AAPL"], "wss://stream.data.alpaca.markets/v2/sip", ["AAPL"]),
    (["--feed", "delayed_sip"], "wss://stream.data.alpaca.markets/v2/delayed_sip", ["SPY", "TSLA"]),
    (["--test-stream"], "wss://stream.data.alpaca.markets/v2/test", ["FAKEPACA"]),
    (["--url", "ws://127.0.0.1:8765/v2/iex", "qqq"], "ws://127.0.0.1:8765/v2/iex", ["QQQ"]),
    (["--source", "nats://127.0.0.1:4222"], "", ["SPY", "TSLA"]),  # no Alpaca URL: the broker's
])
def test_feeds_and_endpoints(argv, url, symbols):
    settings = settings_from(parse_args(argv))
    assert (settings.url, settings.symbols) == (url, symbols)


@pytest.mark.parametrize(("argv", "url", "symbols", "crypto_url", "pairs"), [
    (["SPY", "btc/usd"], "wss://stream.data.alpaca.markets/v2/iex", ["SPY"],
     "wss://stream.data.alpaca.markets/v1beta3/crypto/us", ["BTC/USD"]),
    (["ETH/USD"], "wss://stream.data.alpaca.markets/v2/iex", [],  # crypto alone: no stock stream
     "wss://stream.data.alpaca.markets/v1beta3/crypto/us", ["ETH/USD"]),
    (["--url", "ws://127.0.0.1:8765", "--feed", "sip", "AAPL", "BTC/USD"], "ws://127.0.0.1:8765/v2/sip", ["AAPL"],
     "ws://127.0.0.1:8765/v1beta3/crypto/us", ["BTC/USD"]),
    (["--url", "ws://127.0.0.1:8765/"], "ws://127.0.0.1:8765/v2/iex", ["SPY", "TSLA"],  # a host: Alpaca's paths
     "ws://127.0.0.1:8765/v1beta3/crypto/us", []),
])
def test_symbols_say_the_market_and_a_url_without_a_path_is_a_host_for_each_stream(argv, url, symbols, crypto_url,
                                                                                 pairs):
    settings = settings_from(parse_args(argv))
    assert (settings.url, settings.symbols, settings.crypto_url, settings.pairs) == (url, symbols, crypto_url, pairs)


def test_the_script_copied_alone_into_a_folder_of_its_own_runs_on_the_installed_package(tmp_path):
    # As a student who copies it to start a bot of their own: requirements.txt installed the package.
    shutil.copy(ROOT / "websocket_stream.py", tmp_path)
    done = subprocess.run([sys.executable, "websocket_stream.py", "--replay", str(ROOT / "tests/data/session.jsonl")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    # The summary, not the printout: it holds whatever the student's handlers print.
    assert "received 55 trades, 2 corrections, 3 cancels" in done.stderr


def test_without_the_package_the_script_says_in_one_line_what_to_install(tmp_path):
    shutil.copy(ROOT / "websocket_stream.py", tmp_path)
    # -S: no site-packages, as in an environment where requirements.txt was never installed.
    done = subprocess.run([sys.executable, "-S", "websocket_stream.py", "--demo"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == EXIT_USAGE
    assert done.stderr == ("alpaca_stream is missing: activate your venv, or in the project's\n"
                           "folder: pip install -r requirements.txt\n")


@pytest.mark.parametrize(("argv", "option"), [
    (["--demo", "--publish", "nats://127.0.0.1:1"], "--publish"),
    (["--source", "nats://127.0.0.1:1"], "--source"),
])
def test_the_broker_options_without_nats_py_exit_2_saying_what_to_install(monkeypatch, caplog, argv, option):
    monkeypatch.setitem(sys.modules, "nats", None)  # as if nats-py were not installed
    for module in ("alpaca_stream.nats_common", "alpaca_stream.outputs.nats", "alpaca_stream.sources.nats"):
        monkeypatch.delitem(sys.modules, module, raising=False)
    caplog.set_level(logging.INFO, logger="alpaca_stream")
    assert ws.main(argv) == EXIT_USAGE
    assert caplog.records[-1].getMessage() == f"{option} needs nats-py and orjson: pip install -r requirements.txt"


@pytest.mark.parametrize(("argv", "warned"), [
    (["BTCUSD"], ["BTCUSD is taken as a stock symbol, and no stock has it: the crypto pair is BTC/USD"]),
    (["SPY", "ETHUSDT", "--quotes"], ["ETHUSDT is taken as a stock symbol, and no stock has it: "
                                      "the crypto pair is ETH/USDT"]),
    (["BTCUSD", "--news"], []),  # the news names BTC/USD so
    (["SPY", "FAKEPACA", "AAPL"], []),
    (["AAPL200117C00250000"], ["AAPL200117C00250000 expired on 2020-01-17: Alpaca sends no trades or quotes for it"]),
    (["AAPL200117C00250000", "--demo"],  # the demo makes it up all the same, but the student goes live next
     ["AAPL200117C00250000 expired on 2020-01-17: Alpaca sends no trades or quotes for it"]),
])
def test_a_pair_written_without_its_slash_and_an_expired_option_are_warned_of(argv, warned, caplog):
    assert warnings_of(argv, caplog) == warned


@pytest.mark.parametrize(("argv", "warned"), [
    (["--demo", "APPL", "SPY", "APPL261218C00250000", "AAPL261218C00250000"],
     ["the demo does not know APPL, APPL261218C00250000: it makes the data up all the same, but live, a symbol "
      "Alpaca does not have gets nothing. The demo's stocks: SPY, TSLA, AAPL, NVDA, QQQ, AMZN, MSFT, FAKEPACA"]),
    (["--demo", "BTC/USD", "LINK/USD", "--news"],
     ["the demo does not know LINK/USD: it makes the data up all the same, but live, a symbol Alpaca does not "
      "have gets nothing. The demo's pairs: BTC/USD, ETH/USD, SOL/USD, DOGE/USD, BTC/USDT, ETH/USDT, ETH/BTC"]),
    (["--demo", "*", "BTC/USD", "--quotes"], []),
    (["--demo"], []),  # SPY and TSLA
    (["APPL"], []),  # live: a symbol that gets nothing for a while is named as it goes
])
def test_the_demo_says_once_which_symbols_it_does_not_know(argv, warned, caplog):
    assert warnings_of(argv, caplog) == warned


def test_a_data_timeout_for_channels_that_can_be_silent_all_day_is_off_saying_them_as_the_options_do(caplog):
    caplog.set_level(logging.INFO, logger="alpaca_stream")
    assert settings_from(parse_args(["--updated-bars", "--statuses", "--data-timeout", "5"])).data_timeout == 0
    assert caplog.records[-1].getMessage() == "--data-timeout is off: updated bars, statuses can be silent all day"


def warnings_of(argv, caplog) -> list[str]:
    """The warnings of the log as the command line's settings are made."""
    caplog.set_level(logging.INFO, logger="alpaca_stream")
    settings_from(parse_args(argv))
    return [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]
