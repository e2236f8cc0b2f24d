"""--serve: the script serves Alpaca's protocol to more bots, on its one connection to Alpaca.

In-process first: the local server stands in for Alpaca, the script's own stream and relay run
in the test's event loop, and raw clients check what each gets against what the server sent.
Then, as users run it: unmodified alpaca-py and TypeScript SDK bots through the script."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, cast

import msgpack
import pytest
from conftest import (
    FAKE_KEY,
    FAKE_SECRET,
    KEYS,
    KINDS,
    ROOT,
    Recorder,
    Script,
    ServerThread,
    run,
    script_env,
    supervised,
    until,
    unwrapped,
)
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

import websocket_stream as ws
from alpaca_stream.books import Book
from alpaca_stream.channels import CRYPTO_PATH
from alpaca_stream.cli import CommandLine
from alpaca_stream.handlers import Handler
from alpaca_stream.options import settings_from
from alpaca_stream.outputs.serve import serving
from alpaca_stream.records import KIND, Quote, Record, Trade
from alpaca_stream.server import AlpacaStreamServer, Relay
from alpaca_stream.server.relay import AllMarkets, MarketClients
from alpaca_stream.session import Session
from alpaca_stream.sources.crypto import CryptoStream
from alpaca_stream.sources.stocks import StockStream
from alpaca_stream.subscriptions import Subscriptions, subscribe, unsubscribe

MSGPACK = {"Content-Type": "application/msgpack"}  # as alpaca-py and the TypeScript SDK ask


@dataclass
class Feeder:
    server: AlpacaStreamServer  # Alpaca's stand-in
    relay: Relay
    recorder: Recorder  # the script's own handlers
    session: Session
    streaming: asyncio.Task

    @property
    def upstream(self) -> dict[str, list[str]]:
        """What the script's one connection to the server is subscribed to."""
        return {c: s for c, s in self.server.connections[-1].subscriptions.items() if s}


@asynccontextmanager
async def feeding(symbols: tuple[str, ...] = ("SPY",), channels: tuple[str, ...] = ("trades",),
                  **server_options: Any) -> AsyncIterator[Feeder]:
    """The script streaming `symbols` from a local server, with --serve on a free port."""
    options: dict[str, Any] = {"rate": 500, "seed": 3, **server_options}
    async with AlpacaStreamServer(**options) as server:
        source = StockStream(symbols, channels, keys=KEYS, url=server.url)
        session, recorder = Session(), Recorder()
        async with serving("127.0.0.1", 0, {"/v2/iex": source.subscriptions}, session, keys=KEYS) as relay, \
                supervised([source], recorder.handlers, session) as streaming:
            feeder = Feeder(server, relay, recorder, session, streaming)
            await until(lambda: feeder.recorder.messages, "the script's own data")
            yield feeder
    assert len(server.connections) == 1, "the script made another connection upstream"


class Bot:
    """A raw client of the relay: it logs in, subscribes, and keeps every frame it gets."""

    def __init__(self, relay: Relay, codec: str = "msgpack") -> None:
        self.relay = relay
        self.codec = codec
        self.frames: list[list[dict]] = []
        self.ws: ClientConnection | None = None
        self.reader: asyncio.Task | None = None

    async def log_in(self, key: str = FAKE_KEY, secret: str = FAKE_SECRET) -> dict:
        self.ws = await connect(self.relay.url, additional_headers=MSGPACK if self.codec == "msgpack" else {})
        assert (await self.receive())[0] == {"T": "success", "msg": "connected"}
        await self.send({"action": "auth", "key": key, "secret": secret})
        return (await self.receive())[0]

    async def send(self, request: dict) -> None:
        assert self.ws
        await self.ws.send(msgpack.packb(request) if self.codec == "msgpack" else json.dumps(request))

    async def receive(self) -> list[dict]:
        assert self.ws
        frame = await asyncio.wait_for(self.ws.recv(), 10)
        assert isinstance(frame, bytes if self.codec == "msgpack" else str), frame
        decoded: list[dict] = msgpack.unpackb(frame) if self.codec == "msgpack" else json.loads(frame)
        return decoded

    async def subscribe(self, action: str = "subscribe", **channels: list[str]) -> dict:
        """Subscribe (or unsubscribe), before reading in the background; the answer."""
        await self.send({"action": action, **channels})
        while True:  # data of what it had may come first
            frame = await self.receive()
            answers = [m for m in frame if m["T"] == "subscription"]
            self.frames.append([m for m in frame if m["T"] != "subscription"])
            if answers:
                return answers[0]

    def read(self) -> None:
        """Keep every frame from now on, in the background."""
        async def reading() -> None:
            with_closed = ConnectionClosed
            try:
                while True:
                    self.frames.append(await self.receive())
            except with_closed:
                pass
        self.reader = asyncio.create_task(reading())

    @property
    def received(self) -> int:
        """How many messages came, without building the list (which a loop polls)."""
        return sum(map(len, self.frames))

    @property
    def data(self) -> list[dict]:
        return [m for frame in self.frames for m in frame if m["T"] not in ("error", "subscription", "success")]

    @property
    def errors(self) -> list[int]:
        return [m["code"] for frame in self.frames for m in frame if m["T"] == "error"]

    async def close(self) -> None:
        if self.reader:
            self.reader.cancel()
        if self.ws:
            await self.ws.close()


def wants(message: dict, channel_symbols: dict[str, list[str]]) -> bool:
    channel = {"t": "trades", "c": "trades", "x": "trades", "q": "quotes"}[message["T"]]
    return message["S"] in channel_symbols.get(channel, [])


def assert_a_run_of_what_was_sent(got: list[dict], sent: list[dict], channel_symbols: dict[str, list[str]]) -> None:
    """got is every message of sent that these subscriptions ask for, from its first to its
    last, in sent's order: none lost, none twice, none extra, times to the nanosecond."""
    assert got, "nothing came"
    assert all(wants(message, channel_symbols) for message in got), "a message it did not ask for"
    mine = [message for message in sent if wants(message, channel_symbols)]
    start = next(index for index, message in enumerate(mine) if message == got[0])
    assert got == mine[start:start + len(got)]


# -- each client gets its own, and the upstream follows them ----------------------------------------


def test_clients_get_exactly_their_own_symbols_every_message_in_order_with_alpacas_times():
    async def scenario() -> None:
        async with feeding(("SPY",), ("trades",)) as feeder:
            spy, tsla = Bot(feeder.relay), Bot(feeder.relay)
            assert await spy.log_in() == {"T": "success", "msg": "authenticated"}
            await tsla.log_in()
            answer = await spy.subscribe(trades=["SPY"])
            assert answer["trades"] == ["SPY"] and answer["quotes"] == []
            await tsla.subscribe(trades=["TSLA"], quotes=["TSLA"])
            spy.read()
            tsla.read()
            await until(lambda: len(spy.data) >= 200 and len(tsla.data) >= 200, "200 messages each")
            assert feeder.upstream == {"trades": ["SPY", "TSLA"], "quotes": ["TSLA"]}
            sent = feeder.server.connections[0].messages  # msgpack Timestamps, to the nanosecond
            assert_a_run_of_what_was_sent(spy.data, sent, {"trades": ["SPY"]})
            assert_a_run_of_what_was_sent(tsla.data, sent, {"trades": ["TSLA"], "quotes": ["TSLA"]})
            assert {m["T"] for m in tsla.data} >= {"t", "q"}
            assert isinstance(tsla.data[0]["t"], msgpack.Timestamp)
            # The script's own handlers get only what it asked for: SPY's trades.
            assert {(m.symbol, KIND[type(m)]) for m in feeder.recorder.messages} <= {
                ("SPY", "trade"), ("SPY", "correction"), ("SPY", "cancel")}
            await spy.close()
            await tsla.close()

    run(scenario())


def test_a_client_subscribing_unsubscribing_and_leaving_changes_the_upstream_on_its_one_connection():
    async def scenario() -> None:
        async with feeding(("SPY",), ("trades",)) as feeder:
            bot = Bot(feeder.relay)
            await bot.log_in()
            await bot.subscribe(trades=["TSLA"])
            await until(lambda: feeder.upstream == {"trades": ["SPY", "TSLA"]}, "TSLA upstream")
            answer = await bot.subscribe(quotes=["AAPL"], trades=["SPY"])
            assert answer["trades"] == ["TSLA", "SPY"] and answer["quotes"] == ["AAPL"]
            await until(lambda: feeder.upstream == {"trades": ["SPY", "TSLA"], "quotes": ["AAPL"]}, "AAPL")
            # Unsubscribing SPY leaves it upstream: the script itself wants it.
            await bot.subscribe("unsubscribe", trades=["SPY", "TSLA"])
            await until(lambda: feeder.upstream == {"trades": ["SPY"], "quotes": ["AAPL"]}, "TSLA gone")
            await bot.close()
            await until(lambda: feeder.upstream == {"trades": ["SPY"]}, "AAPL gone when the client left")
            count = len(feeder.recorder.messages)
            await until(lambda: len(feeder.recorder.messages) > count + 50, "the script streaming on")

    run(scenario())


def test_a_client_asking_over_the_plans_symbol_limit_gets_405_and_the_rest_streams_on():
    async def scenario() -> None:
        async with feeding(("SPY",), ("trades",)) as feeder:
            greedy, other = Bot(feeder.relay), Bot(feeder.relay)
            await greedy.log_in()
            await other.log_in()
            await other.subscribe(trades=["TSLA"])
            other.read()
            await greedy.subscribe(trades=["AAPL"])
            greedy.read()
            # The free plan allows 30 symbols: the local server refuses 40 more, as Alpaca does.
            await greedy.send({"action": "subscribe", "trades": [f"S{n}" for n in range(40)]})
            await until(lambda: greedy.errors, "an error for the greedy client")
            assert greedy.errors == [405]
            assert feeder.upstream == {"trades": ["SPY", "TSLA", "AAPL"]}  # as before
            before = (len(greedy.data), len(other.data), len(feeder.recorder.messages))
            await until(lambda: (len(greedy.data), len(other.data), len(feeder.recorder.messages)) > tuple(
                n + 30 for n in before), "everyone streaming on")
            assert other.errors == []
            assert {m["S"] for m in greedy.data} == {"AAPL"}
            await greedy.close()
            await other.close()

    run(scenario())


def test_wrong_keys_get_402_and_no_data_and_requests_out_of_turn_get_alpacas_errors(caplog):
    async def scenario() -> None:
        async with feeding() as feeder:
            for _ in range(3):  # a bot retrying in a loop: logged once (a minute apart at most)
                wrong = Bot(feeder.relay)
                assert await wrong.log_in(secret="not-the-secret") == {"T": "error", "code": 402,
                                                                       "msg": "auth failed"}
                with pytest.raises(ConnectionClosed):
                    await wrong.receive()
            early = Bot(feeder.relay)
            early.ws = await connect(feeder.relay.url, additional_headers=MSGPACK)
            await early.receive()
            await early.send({"action": "subscribe", "trades": ["SPY"]})
            assert (await early.receive())[0]["code"] == 401
            await early.send({"action": "auth", "key": FAKE_KEY, "secret": FAKE_SECRET})
            await early.receive()
            await early.send({"action": "auth", "key": FAKE_KEY, "secret": FAKE_SECRET})
            assert (await early.receive())[0]["code"] == 403
            await early.send({"action": "subscribe", "trades": ["not a symbol"]})
            assert (await early.receive())[0]["code"] == 400
            await early.close()
            assert feeder.relay.served == 1 and feeder.upstream == {"trades": ["SPY"]}

    run(scenario())
    refusals = [(record.levelname, record.getMessage()) for record in caplog.records
                if "refused a bot" in record.getMessage()]
    assert refusals == [("WARNING", "--serve refused a bot's keys (402): they must be this script's;\n"
                                    "1 refused so far")]
    assert "not-the-secret" not in caplog.text and FAKE_SECRET not in caplog.text


def test_a_json_client_gets_json_frames_with_rfc_3339_times_to_the_nanosecond():
    async def scenario() -> None:
        async with feeding(("SPY",)) as feeder:
            bot = Bot(feeder.relay, codec="json")
            assert await bot.log_in() == {"T": "success", "msg": "authenticated"}
            await bot.subscribe(trades=["SPY"])
            bot.read()
            await until(lambda: len(bot.data) >= 20, "20 trades")
            sent = {m["i"]: m for m in feeder.server.connections[0].messages if m["T"] == "t"}
            for trade in (m for m in bot.data if m["T"] == "t"):
                original = sent[trade["i"]]
                when = original["t"].to_datetime().strftime("%Y-%m-%dT%H:%M:%S")
                nanoseconds = f"{original['t'].nanoseconds:09d}".rstrip("0")
                assert trade["t"] == f"{when}.{nanoseconds}Z", trade
                assert (trade["p"], trade["s"], trade["S"]) == (original["p"], original["s"], original["S"])
            await bot.close()

    run(scenario())


def test_a_client_that_stops_reading_is_cut_with_407_and_costs_the_others_nothing(caplog):
    async def scenario() -> None:
        # 1,000 trades a second: at 5,000, on a busy machine (CI, 4 tests side by side on 2 cores),
        # this one process could not keep up, and the quick client was cut as well.
        async with feeding(("SPY", "TSLA"), rate=1000, batch=50) as feeder:
            feeder.relay.buffer = 100_000  # bytes: some hundred frames, reached in two seconds
            slow, quick = Bot(feeder.relay), Bot(feeder.relay)
            await slow.log_in()
            await quick.log_in()
            await slow.subscribe(trades=["SPY", "TSLA"])
            await quick.subscribe(trades=["SPY", "TSLA"])
            quick.read()
            assert slow.ws and feeder.relay._server
            # Small socket buffers at both ends of the slow client's connection: what piles up
            # in the kernel beside the relay's own buffer is bounded, and so is what the client
            # reads before its close. With the kernel's defaults, megabytes: 12 s to fill, 6 to
            # 8.5 s to read back, and once, on a loaded machine, over the 10 s given.
            relay_side = next(connection for connection in feeder.relay._server.connections
                              if connection.record is feeder.relay.connections[0])  # type: ignore[attr-defined]
            for end, option in ((relay_side.transport, socket.SO_SNDBUF), (slow.ws.transport, socket.SO_RCVBUF)):
                end.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, option, 16_384)
            slow.ws.transport.pause_reading()  # its frames pile up
            await until(lambda: feeder.relay.slow == 1, "the slow client cut", timeout=20)
            slow.ws.transport.resume_reading()
            slow.read()
            await until(lambda: slow.reader and slow.reader.done(), "the slow client's connection closed")
            count = quick.received
            await until(lambda: quick.received > count + 500, "the quick client streaming on")
            # Closed before the comparison: over tens of thousands of messages, it holds the loop
            # long enough on a loaded machine for the local server to send a burst when it resumes,
            # more than the buffer at once (CI saw the quick client cut as slow).
            await quick.close()
            sent = feeder.server.connections[0].messages
            assert_a_run_of_what_was_sent(quick.data, sent, {"trades": ["SPY", "TSLA"]})
            assert quick.errors == []
        assert "cut as too slow: 1" in feeder.session.summary()

    run(scenario())
    assert [record.levelname for record in caplog.records if "read too slowly" in record.getMessage()] == ["WARNING"]



def test_a_client_asking_for_an_order_book_the_script_streams_already_gets_the_whole_book_first():
    # Alpaca sends a pair's whole book ("r": true) once, after the script's own subscription;
    # a client that asks later must get one from the relay, else its book is only changes.
    got: list[dict] = []

    async def scenario() -> None:
        async with AlpacaStreamServer(rate=200, seed=31) as server:
            source = CryptoStream(["BTC/USD"], ["orderbooks"], keys=KEYS, url=server.crypto_url)
            session, recorder = Session(), Recorder()
            async with serving("127.0.0.1", 0, {CRYPTO_PATH: source.subscriptions}, session, keys=KEYS) as relay, \
                    supervised([source], recorder.handlers, session):
                await until(lambda: session.received["orderbook"] >= 5, "the script's own book and changes")
                bot = Bot(relay)
                await bot.log_in()
                assert (await bot.subscribe(orderbooks=["BTC/USD"]))["orderbooks"] == ["BTC/USD"]
                bot.read()
                await until(lambda: len(bot.data) >= 20, "the client's book and its changes")
                await bot.close()
                got.extend(bot.data)
            assert len(server.connections) == 1  # the client's book came from the relay, not a new one

    run(asyncio.wait_for(scenario(), 30))
    books = [message for message in got if message["T"] == "o"]
    assert books[0]["r"] is True and not any(message.get("r") for message in books[1:])
    book = Book()
    for message in books:  # whole after each message: the server keeps 10 levels a side
        book.apply(message)
        assert len(book.bids) == len(book.asks) == 10, message
        assert book.best_bid and book.best_ask and book.best_bid[0] < book.best_ask[0]

def test_clients_get_a_close_frame_when_the_feeder_stops():
    async def scenario() -> int | None:
        async with feeding() as feeder:
            bot = Bot(feeder.relay)
            await bot.log_in()
            await bot.subscribe(trades=["SPY"])
            bot.read()
        assert bot.reader and bot.ws
        await asyncio.wait_for(bot.reader, 5)
        return bot.ws.close_code

    assert run(scenario()) == 1001  # going away: the feeder stopped, not the network


def test_a_client_that_vanishes_mid_stream_costs_only_itself():
    async def scenario() -> None:
        async with feeding(("SPY",), rate=2000) as feeder:
            gone, staying = Bot(feeder.relay), Bot(feeder.relay)
            for bot in (gone, staying):
                await bot.log_in()
            await gone.subscribe(trades=["SPY"], quotes=["NVDA"])
            await staying.subscribe(trades=["SPY"])
            staying.read()
            assert gone.ws
            gone.ws.transport.abort()  # no close frame: the process died, say
            await until(lambda: feeder.upstream == {"trades": ["SPY"]}, "NVDA gone upstream")
            count = staying.received
            await until(lambda: staying.received > count + 200, "the other client streaming on")
            assert_a_run_of_what_was_sent(staying.data, feeder.server.connections[0].messages, {"trades": ["SPY"]})
            assert len(feeder.relay.clients) == 1
            await staying.close()

    run(scenario())


def test_clients_get_their_subscriptions_back_after_the_scripts_connection_is_replaced():
    async def scenario() -> None:
        async with feeding(("SPY",), ("trades",)) as feeder:
            bot = Bot(feeder.relay)
            await bot.log_in()
            await bot.subscribe(trades=["TSLA"])
            bot.read()
            await until(lambda: bot.data, "TSLA's trades")
            feeder.server.plan()  # the next connection is a good one
            for connection in list(feeder.server._server.connections):  # type: ignore[union-attr]
                connection.transport.abort()
            await until(lambda: len(feeder.server.connections) == 2, "the script reconnected", timeout=15)
            count = bot.received
            await until(lambda: bot.received > count + 20, "TSLA's trades on the new connection")
            assert {c: s for c, s in feeder.server.connections[1].subscriptions.items() if s} == {
                "trades": ["SPY", "TSLA"]}
            await bot.close()

    async def replaced() -> None:
        # feeding() asserts one upstream connection; here the test cut it, so it may be two.
        try:
            await scenario()
        except AssertionError as error:
            if "another connection upstream" not in str(error):
                raise

    run(replaced())


def test_serving_other_machines_warns_that_keys_travel_unencrypted_and_still_checks_them(caplog):
    caplog.set_level(logging.INFO, "alpaca_stream")

    async def scenario() -> None:
        async with serving("0.0.0.0", 0, {"/v2/sip": Subscriptions(["trades"], ["SPY"])}, Session(),
                           keys=KEYS) as relay:
            assert relay.url.endswith("/v2/sip")
            bot = Bot(relay)
            assert (await bot.log_in(key="SOMEONE-ELSES-KEY"))["code"] == 402
            await bot.close()

    run(scenario())
    assert "clients on other machines send the keys\nunencrypted" in caplog.text
    assert "they log in with this script's keys" in caplog.text


# -- subscribe() and unsubscribe() in the script's own handlers ---------------------------------------


def test_subscribe_from_a_handler_streams_more_without_reconnecting_and_a_refusal_is_a_warning(caplog):
    async def scenario() -> tuple[AlpacaStreamServer, list[Record]]:
        got: list[Record] = []

        async def on_trade(trade: Trade) -> None:
            got.append(trade)
            if len(got) == 1:
                await subscribe("TSLA", channel="quotes")
                await subscribe(*[f"S{n}" for n in range(40)])  # over the free plan's 30
            elif trade.symbol == "SPY" and any(isinstance(m, Quote) for m in got) and len(got) > 100:
                await unsubscribe("SPY")

        async def on_quote(quote: Quote) -> None:
            got.append(quote)

        async with AlpacaStreamServer(rate=500, seed=5) as server:
            source = StockStream(["SPY"], ["trades"], keys=KEYS, url=server.url)
            handlers: dict[str, Handler] = {**dict.fromkeys(KINDS, on_quote), "trade": on_trade}
            async with supervised([source], handlers, Session()):
                await until(lambda: server.connections and "SPY" not in server.connections[0].subscriptions.get(
                    "trades", ["SPY"]), "SPY unsubscribed")
                quotes = sum(isinstance(m, Quote) for m in got)
                await until(lambda: sum(isinstance(m, Quote) for m in got) > quotes + 50, "quotes streaming on")
        return server, got

    server, got = run(scenario())
    assert len(server.connections) == 1  # no reconnect
    assert {(type(m).__name__, m.symbol) for m in got} <= {("Trade", "SPY"), ("Quote", "TSLA"),
                                                          ("TradeCorrection", "SPY"), ("TradeCancel", "SPY")}
    refusal = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("Alpaca refused"))
    assert " ".join(refusal.split()) == ("Alpaca refused subscribe(" + ", ".join(f"S{n}" for n in range(40))
                                         + ", channel='trades'): symbol limit exceeded (405)")
    assert max(map(len, refusal.splitlines())) <= 50  # 80 columns with the log's time and "warning: "
    assert "unexpected" not in caplog.text




def test_a_bot_asking_for_a_stream_the_script_does_not_run_gets_404_and_the_log_says_so_once(caplog):
    caplog.set_level(logging.INFO, "alpaca_stream")

    async def scenario() -> None:
        async with serving("127.0.0.1", 0, {"/v2/iex": Subscriptions(["trades"], ["SPY"])}, Session(),
                           keys=KEYS) as relay:
            for _ in range(2):  # alpaca-py asks again and again
                with pytest.raises(InvalidStatus) as refused:
                    await connect(relay.url_of("/v1beta3/crypto/us"))
                assert refused.value.response.status_code == 404

    run(asyncio.wait_for(scenario(), 10))
    told = [record.getMessage() for record in caplog.records if "does\nnot run" in record.getMessage()]
    assert told == ["--serve: a bot asked for /v1beta3/crypto/us, a stream this script does\nnot run (HTTP 404): "
                    "name a pair, an option or --news for it"]

def test_a_nats_bot_serves_each_market_it_reads_at_its_path_each_message_to_its_markets_clients():
    run = CommandLine(["--source", "nats://127.0.0.1:4222", "BTC/USD", "AAPL261218C00250000", "--trades", "--news",
                       "--serve", "0"])
    run.settings = settings_from(run.options)
    served = run.served(run.streams(KEYS))
    assert sorted(served) == ["/v1beta1/indicative", "/v1beta1/news", "/v1beta1/opra", "/v1beta3/crypto/us"]
    sent: dict[str, list] = {}
    markets = {}
    for name in ("stocks", "crypto", "options", "news"):
        markets[name] = MarketClients(cast(Relay, None), changed=cast(Any, None))
        markets[name].send = lambda messages, name=name: sent.setdefault(name, []).extend(messages)  # type: ignore
    AllMarkets(markets).send([{"T": "t", "S": "SPY"}, {"T": "t", "S": "BTC/USD"},
                              {"T": "q", "S": "AAPL261218C00250000"}, {"T": "n", "symbols": ["BTCUSD"]},
                              {"T": "o", "S": "ETH/USD"}])
    assert {name: [m.get("S") for m in messages] for name, messages in sent.items()} == {
        "stocks": ["SPY"], "crypto": ["BTC/USD", "ETH/USD"], "options": ["AAPL261218C00250000"], "news": [None]}

@pytest.mark.parametrize(("call", "error"), [
    ("subscribe('SPY', channel='trade')", "no such channel: 'trade'; one of:\ntrades, quotes,"),
    ("subscribe('spy,tsla')", "subscribe() takes stock symbols: 'spy,tsla'"),
    ("unsubscribe()", "unsubscribe() takes stock symbols: none given"),
])
def test_subscribe_with_a_wrong_channel_or_symbol_says_what_is_wrong(call, error):
    with pytest.raises(ValueError) as raised:
        run(eval(call))  # noqa: S307  (the test's own strings)
    assert str(raised.value).startswith(error)


# -- the command line ------------------------------------------------------------------------------


@pytest.mark.parametrize(("arguments", "message"), [
    (["--serve", "99999"], "--serve 99999: its port is not a number from 0 to 65535"),
    (["--serve", "here:8765"], "--serve takes an IP address, or localhost: here"),
    (["--demo", "--serve", "0.0.0.0:8765"], "with --demo or --source, clients need no"),
    (["--replay", "x.jsonl", "--serve", "8765"], "--serve goes with a stream"),
])
def test_a_wrong_serve_address_exits_2_with_what_to_do(arguments, message, capsys):
    with pytest.raises(SystemExit) as exited:
        ws.main(arguments)
    assert exited.value.code == 2
    assert message in unwrapped(capsys.readouterr().err)


def test_a_serve_port_in_use_exits_2_saying_so(start_script):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        script = start_script("--demo", "--serve", str(taken.getsockname()[1]))
        assert script.finish() == 2
    assert re.search(r"error: --serve: cannot listen on 127\.0\.0\.1:\d+:\n"
                     r"  Address already in use; another port\? \(0 picks a free one\)$", script.stderr)
    assert "Traceback" not in script.stderr


# -- unmodified clients of Alpaca's, as users run them ---------------------------------------------

ALPACA_PY_BOT = ROOT / "tests" / "alpaca_py_bot.py"
TS_SDK_CLIENT = ROOT / "tests" / "js" / "ts_sdk_client.js"
NODE = shutil.which("node")


def serving_url(script: Script) -> str:
    found = None

    def said() -> bool:
        nonlocal found
        found = re.search(r"serving Alpaca's stream to more bots, at\n  (ws://\S+)", script.stderr)
        return found is not None

    script.wait_for(said, what="the --serve URL")
    assert found
    return found.group(1)


def start_bot(command: list[str], env: dict[str, str]) -> Script:
    process = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    return Script(process)


def received(bot: Script) -> list[dict]:
    return [json.loads(line) for line in list(bot.out_lines) if line.startswith("{")]


@pytest.mark.parametrize("upstream", ["--demo", "a local server"])
def test_alpaca_pys_crypto_option_and_news_streams_share_the_scripts_connections_through_serve(
        upstream: str, make_server: Callable[..., ServerThread], start_script: Callable[..., Script]) -> None:
    from alpaca.data.live import CryptoDataStream, NewsDataStream, OptionDataStream

    server = make_server(rate=300, seed=8) if upstream != "--demo" else None
    where = ["--url", server.url.rsplit("/v2/", 1)[0]] if server else ["--demo"]
    call, put = "AAPL261218C00250000", "SPY261218P00600000"
    feeder = start_script(*where, "SPY", "BTC/USD", call, "--trades", "--news", "--quiet", "--serve", "0")
    feeder.wait_for(lambda: re.search(r"serving Alpaca's stream to more bots, at\n[^(]+\(", feeder.stderr),
                    what="the --serve URLs")
    urls = feeder.stderr.split("serving Alpaca's stream to more bots, at\n")[1].split("(")[0].split()
    at = {url.rsplit(":", 1)[1].split("/", 1)[1]: url for url in urls}
    assert sorted(at) == ["v1beta1/indicative", "v1beta1/news", "v1beta3/crypto/us", "v2/iex"]
    got: dict[str, list[Any]] = {"crypto": [], "options": [], "news": []}

    def keep(market: str) -> Callable[[Any], Any]:
        async def handler(message: Any) -> None:
            got[market].append(message)
        return handler

    async def scenario() -> None:
        crypto = CryptoDataStream(FAKE_KEY, FAKE_SECRET, url_override=at["v1beta3/crypto/us"])
        crypto.subscribe_trades(keep("crypto"), "ETH/USD")  # a pair the script does not stream
        options = OptionDataStream(FAKE_KEY, FAKE_SECRET, url_override=at["v1beta1/indicative"])
        options.subscribe_quotes(keep("options"), put)
        news = NewsDataStream(FAKE_KEY, FAKE_SECRET, url_override=at["v1beta1/news"])
        news.subscribe_news(keep("news"), "TSLA")  # a symbol of its own: articles name theirs in "symbols"
        streams = (crypto, options, news)
        running = [asyncio.create_task(stream._run_forever()) for stream in streams]
        try:
            await until(lambda: len(got["crypto"]) >= 10 and len(got["options"]) >= 10 and got["news"],
                        "each client's data", 30)
        finally:
            for stream in streams:
                await stream.stop_ws()
            await asyncio.wait_for(asyncio.gather(*running), 10)

    run(asyncio.wait_for(scenario(), 60))
    assert feeder.stop(2)[0] == 0  # SIGINT
    assert {trade.symbol for trade in got["crypto"]} == {"ETH/USD"}
    assert {quote.symbol for quote in got["options"]} == {put}
    assert all(quote.bid_price < quote.ask_price for quote in got["options"])
    assert all(article.headline and article.symbols == ["TSLA"] for article in got["news"])
    assert "served 3 clients" in feeder.stderr
    if server:  # one connection a market upstream, whatever the clients
        assert sorted(connection.market for connection in server.connections) == ["crypto", "news", "options",
                                                                                   "stocks"]


@pytest.mark.skipif(NODE is None or not (TS_SDK_CLIENT.parent / "node_modules").is_dir(),
                    reason="needs node and npm install --prefix tests/js")
def test_two_alpaca_py_bots_and_a_typescript_sdk_bot_share_the_scripts_one_connection(
        make_server: Callable[..., ServerThread], start_script: Callable[..., Script]) -> None:
    server = make_server(rate=300, seed=7)
    feeder = start_script("--url", server.url, "--serve", "0", "SPY", bot=True)
    url = serving_url(feeder)
    env = script_env()
    # One alpaca-py bot streams AAPL, and after 20 trades asks for NVDA's too, while running.
    growing = start_bot([sys.executable, str(ALPACA_PY_BOT), url, "AAPL", "--then", "NVDA", "--count", "120"], env)
    # Another streams TSLA and leaves after 40 trades.
    leaving = start_bot([sys.executable, str(ALPACA_PY_BOT), url, "TSLA", "--count", "40"], env)
    ts = start_bot([str(NODE), str(TS_SDK_CLIENT), url, "30"], env)  # 30 trades of SPY and of TSLA
    for bot in (growing, leaving, ts):
        assert bot.finish(timeout=60) == 0, bot.stderr
    feeder.wait_for(lambda: server.connections[0].subscriptions.get("trades") == ["SPY"],
                    what="every client's symbols gone upstream once they left")
    assert feeder.stop(2)[0] == 0  # SIGINT
    assert len(server.connections) == 1
    sent = [m for m in server.connections[0].messages if m["T"] == "t"]
    for bot, symbols in ((growing, {"AAPL", "NVDA"}), (leaving, {"TSLA"}), (ts, {"SPY", "TSLA"})):
        trades = [m for m in received(bot) if m.get("kind", "trade") == "trade"]
        assert {trade["symbol"] for trade in trades} == symbols, bot.stdout[-500:]
        for symbol in symbols:  # each symbol's trades: a run of the server's, in order, none twice
            ids = [trade["id"] for trade in trades if trade["symbol"] == symbol]
            theirs = [m["i"] for m in sent if m["S"] == symbol]
            start = theirs.index(ids[0])
            assert ids == theirs[start:start + len(ids)], symbol
    # alpaca-py's times are datetimes: Alpaca's, to the microsecond.
    by_id = {m["i"]: m for m in sent}
    for trade in received(growing)[:20]:
        assert trade["timestamp"] == by_id[trade["id"]]["t"].to_datetime().isoformat()
    # The script's own handlers got SPY only.
    assert {json.loads(line)["symbol"] for line in feeder.out_lines} == {"SPY"}
    assert "served 3 clients" in feeder.stderr
    assert "Traceback" not in feeder.stderr
    assert max(map(len, feeder.err_lines)) <= 80, max(feeder.err_lines, key=len)
    assert FAKE_KEY not in feeder.stderr + feeder.stdout and FAKE_SECRET not in feeder.stderr + feeder.stdout



SERVE_DOC = (ROOT / "docs" / "serve.md").read_text(encoding="utf-8")


@pytest.mark.skipif(sys.platform == "win32", reason="stops the feeder with SIGINT")
def test_the_docs_alpaca_py_bot_streams_through_the_docs_demo_command(start_script, tmp_path):
    command = re.search(r"```\n(python websocket_stream\.py --demo --serve 8765)\n```", SERVE_DOC)
    bot = re.search(r"<!-- serve example: an alpaca-py bot -->\n```python\n(.*?)```", SERVE_DOC, re.S)
    assert command and bot
    with socket.socket() as probe:  # the port as written, unless this machine has it taken
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])
    feeder = start_script(*command.group(1).split()[2:-1], port, env=script_env(
        APCA_API_KEY_ID=None, APCA_API_SECRET_KEY=None))
    serving_url(feeder)
    (tmp_path / "my_other_bot.py").write_text(bot.group(1).replace("8765", port), encoding="utf-8")
    # Unbuffered, as in a terminal: piped, its lines would wait in a buffer.
    other = start_bot([sys.executable, str(tmp_path / "my_other_bot.py")], script_env(PYTHONUNBUFFERED="1"))
    try:
        other.wait_for(lambda: len(other.out_lines) >= 3, timeout=30, what="3 of AAPL's trades")
    finally:
        other.kill()
    assert all(re.fullmatch(r"AAPL \d+\.\d+ \d+\.0", line) for line in other.out_lines), other.out_lines
    feeder.wait_for(lambda: feeder.err_lines[-1].endswith("subscribed to trades of SPY, TSLA"),
                    what="AAPL gone upstream once the bot stopped")
    # How to stop was said once, with the first subscription; not with each change after it.
    assert feeder.stderr.count("Ctrl+C to stop") == 1
    assert feeder.err_lines[-2].endswith("subscribed to trades of SPY, TSLA, AAPL")
    assert feeder.stop(2)[0] == 0
    assert "AAPL" not in feeder.stdout


@pytest.mark.skipif(sys.platform == "win32", reason="stops the feeder and the bot with SIGINT")
def test_a_nats_bot_serves_what_it_reads_and_warns_of_a_subscription_it_does_not_read(
        make_server: Callable[..., ServerThread], start_script: Callable[..., Script], tmp_path) -> None:
    from test_broker import NatsServer  # a real nats-server, as there

    broker = NatsServer(tmp_path / "jetstream")
    try:
        server = make_server(rate=300, seed=11)
        bot = start_script("--source", broker.url, "--serve", "0", "SPY", "TSLA", bot=True)
        url = serving_url(bot)
        assert "(any keys will do)" in bot.stderr
        feeder = start_script("--url", server.url, "--publish", broker.url, "--quiet")
        env = script_env()
        spy = start_bot([sys.executable, str(ALPACA_PY_BOT), url, "SPY", "--count", "30"], env)
        aapl = start_bot([sys.executable, str(ALPACA_PY_BOT), url, "AAPL", "--count", "1"], env)
        assert spy.finish(timeout=60) == 0, spy.stderr
        bot.wait_for(lambda: "does not read: trades of AAPL." in " ".join(bot.stderr.split()),
                     what="the warning of AAPL, which the bot does not read")
        aapl.kill()
        assert received(aapl) == []
        for script in (feeder, bot):
            assert script.stop(2)[0] == 0
    finally:
        broker.stop()
    sent = [m["i"] for m in server.connections[0].messages if m["T"] == "t" and m["S"] == "SPY"]
    ids = [trade["id"] for trade in received(spy)]
    assert {trade["symbol"] for trade in received(spy)} == {"SPY"}
    assert ids == sent[sent.index(ids[0]):sent.index(ids[0]) + len(ids)]  # in order, none lost or twice
    assert "served 2 clients" in bot.stderr and "Traceback" not in bot.stderr
    assert max(map(len, bot.err_lines)) <= 80, max(bot.err_lines, key=len)
