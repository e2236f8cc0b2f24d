"""Made-up market data for the local server: a random walk per symbol, and what comes of it on
every stock channel, as lively as a real session (Market); events on cue for the tests."""

from __future__ import annotations

import asyncio
import itertools
import math
import random
import time
from collections import deque
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

import msgpack

# What "*" (every symbol) streams here.
WILDCARD_SYMBOLS = ("SPY", "TSLA", "AAPL", "NVDA", "QQQ", "AMZN")
START_PRICES = {"SPY": 600.0, "TSLA": 350.0, "AAPL": 230.0, "NVDA": 180.0, "QQQ": 520.0,
                "AMZN": 220.0, "MSFT": 510.0, "FAKEPACA": 100.0}
# SPY and QQQ print on tape B (NYSE Arca listings), Nasdaq listings on tape C.
TAPES = {"SPY": "B", "QQQ": "B"}
EXCHANGES = "VVVPPKQQQZNDDDDXBJYAHUM"  # IEX (V), Nasdaq (Q) and the FINRA TRF (D) print most
CONDITIONS = (["@"], ["@"], ["@", "I"], ["@", "F"], ["@", "F", "I"], ["@", "T"])
BLOCK_SIZE = 10_000  # shares: a block trade
BLOCK_EVERY = 4.9  # seconds: a trade stream sees a block at least this often (the clock's, within 0.05 s)
FIRST_BLOCK_AFTER = 1.0  # seconds from the start: the README's block examples print at once, not in 5 s
# Halts as Alpaca reports them, by tape: CTA (A, B) and UTP (C) use different codes.
HALTS = {
    "B": [("2", "Trading Halt", "M", "Limit Up-Limit Down (LULD) Trading Pause", "3", "Resume"),
          ("2", "Trading Halt", "P", "News Pending", "3", "Resume")],
    "C": [("P", "Volatility Trading Pause", "LUDP", "Volatility Trading Pause", "T", "Trading Resumption"),
          ("H", "Trading Halt", "T1", "Halt News Pending", "T", "Trading Resumption")],
}
HALT_SECONDS = (5.0, 20.0)  # how long a random halt lasts
HALTS_PER_MINUTE = 1.0  # random halts, over the symbols subscribed to statuses
IMBALANCES_PER_MINUTE = 3.0  # random imbalances, over the symbols subscribed to imbalances; halts bring more
LULD_PERCENT = 5.0  # band around the reference price (tier 1 stocks over $3)
NEW_YORK = ZoneInfo("America/New_York")  # the daily bar starts at midnight there
# Keys Alpaca adds that a client may not know: "r" (when Alpaca received it) on some trades and
# quotes, "tks" (taker side) on some trades.
RECEIVED_SHARE = 1 / 3
TAKER_SIDE_SHARE = 1 / 3
BIG_FRAME_TRADES = 30_000  # well over websockets' default max_size of 1 MiB, packed
CUES = ("block", "correction", "cancel", "halt", "resume", "luld", "bar", "updated_bar", "daily_bar",
        "imbalance", "big_frame")


def start_price(symbol: str) -> float:
    """A plausible price for any symbol, the same every run."""
    return START_PRICES.get(symbol) or random.Random(symbol).uniform(20, 400)


def round_lot(price: float) -> int:
    """Shares in a round lot since November 2025 (SEC Regulation NMS tiers): quote sizes, in
    shares, are multiples of it."""
    return 100 if price <= 250 else 40 if price <= 1000 else 10 if price <= 10_000 else 1


def timestamp(seconds: float | None = None) -> msgpack.Timestamp:
    return msgpack.Timestamp.from_unix_nano(time.time_ns() if seconds is None else int(seconds * 1e9))


@dataclass
class BarBuilder:
    """One symbol's open, high, low, close and volume over a minute or a day. Sizes are whole
    shares for stocks, fractions of a coin for crypto."""

    start: float  # seconds since the epoch
    open: float = 0.0
    high: float = 0.0
    low: float = math.inf
    close: float = 0.0
    volume: float = 0  # stays an int while the sizes are
    trade_count: int = 0
    value: float = 0.0  # sum of price x size, for the VWAP

    def add(self, price: float, size: float) -> None:
        if not self.trade_count:
            self.open = price
        self.high, self.low, self.close = max(self.high, price), min(self.low, price), price
        self.volume += size
        self.trade_count += 1
        self.value += price * size

    def message(self, kind: str, symbol: str) -> dict:
        return {"T": kind, "S": symbol, "o": self.open, "h": self.high, "l": self.low, "c": self.close,
                # Fractional sizes add up with float noise (0.1 + 0.2): rounded off; an int stays one.
                "v": round(self.volume, 9), "n": self.trade_count, "vw": round(self.value / self.volume, 4),
                "t": timestamp(self.start)}


def subscribed(symbol: str, symbols: list[str]) -> bool:
    return symbol in symbols or "*" in symbols


class Market:
    """The market one connection watches: a random walk per symbol, and what comes of it.

    Trades (now and then a block, a correction or a cancel of a trade already sent), quotes
    around the price with the bid below the ask, minute bars built from its trades at each
    minute mark, late trades and the updated bars they cause at the next half-minute, daily bars,
    halts and resumptions, and LULD bands. Every method returns the messages to send.
    """

    wildcard: tuple[str, ...] = WILDCARD_SYMBOLS  # what "*" streams
    booked: tuple[str, ...] = ()  # channels whose symbols tick besides those of trades, bars and quotes

    def __init__(self, rng: random.Random, prices: dict[str, float], ids: itertools.count,
                 subscriptions: dict[str, list[str]]) -> None:
        self.rng = rng
        self.prices = prices  # shared by the server's connections, so a reconnect carries on
        self.ids = ids
        self.subscriptions = subscriptions  # channel -> symbols, updated as the client asks
        now = time.time()
        self.minute = int(now // 60)  # the minute the bars are being built for
        self.bars: dict[str, BarBuilder] = {}
        self.days: dict[str, BarBuilder] = {}
        self.closed: dict[str, BarBuilder] = {}  # each symbol's latest finished minute
        self.updates_due: dict[str, float] = {}  # symbol -> when its updated bar is sent
        self.halted: dict[str, tuple[float, tuple[str, ...]]] = {}  # symbol -> (resume at, halt)
        self.bands: dict[str, float] = {}  # symbol -> LULD reference price
        self.recent: deque[dict] = deque(maxlen=50)  # trades sent, for corrections and cancels
        self.last_block = now - BLOCK_EVERY + FIRST_BLOCK_AFTER
        self.last_clock = now
        self.pool: list[tuple[list[dict], bytes]] = []
        self.pool_key: tuple = ()

    def symbols(self, *channels: str) -> list[str]:
        """The symbols subscribed on these channels ("*" stands for self.wildcard)."""
        found: dict[str, None] = {}
        for channel in channels:
            for symbol in self.subscriptions.get(channel, []):
                for one in (self.wildcard if symbol == "*" else (symbol,)):
                    found[one] = None
        return list(found)

    def subscriptions_changed(self) -> None:
        """Told when the client has changed its subscriptions (they are read as the market
        goes): a stock market has nothing to do then."""

    def last_price(self, symbol: str) -> float:
        return self.prices.get(symbol) or start_price(symbol)

    def step(self, symbol: str) -> float:
        price = self.last_price(symbol)
        price = max(0.01, price * math.exp(self.rng.gauss(0, 0.0002)))
        self.prices[symbol] = price
        return price

    # -- what the client sees as it streams: trades and quotes ---------------------------------

    def ticks(self, count: int) -> list[dict]:
        """`count` ticks of random symbols (see tick())."""
        traded = self.symbols("trades", "bars", "updatedBars", "dailyBars")
        quoted = self.symbols("quotes")
        active = [s for s in dict.fromkeys(traded + quoted + self.symbols(*self.booked)) if s not in self.halted]
        messages: list[dict] = []
        for _ in range(count if active else 0):
            symbol = self.rng.choice(active)
            messages.extend(self.tick(symbol, traded=symbol in traded, quoted=symbol in quoted))
        return messages

    def tick(self, symbol: str, *, traded: bool, quoted: bool) -> list[dict]:
        """One tick of a symbol: a trade where trades or bars are subscribed, a quote where
        quotes are."""
        messages = self.trade(symbol) if traded else []
        if quoted:  # around the price just traded, if it traded
            messages.append(self.quote(symbol, step=not traded))
        return messages

    async def replay(self, count: int) -> tuple[list[dict], bytes]:
        """For the benchmark: frames of `count` trades and quotes, made and packed once, then
        sent again and again (so ids repeat, and timestamps are old), so that a benchmark
        measures the client, not this server: packing costs about as much as unpacking. 1024
        frames: one comes again after 0.15 s at 140,000 messages a second, past JetStream's
        shortest duplicate window (0.1 s), so each is stored. Made in a thread: 1024 frames of
        20 took 1.1 s, measured, and the server's other connections (a client's crypto stream
        beside its stocks) would have waited that long for an answer."""
        key = (count, self.symbols("trades"), self.symbols("quotes"))
        if self.pool_key != key:
            self.pool = await asyncio.to_thread(self.frames, count)
            self.pool_key = key
        self.pool.append(self.pool.pop(0))
        return self.pool[-1]

    def frames(self, count: int) -> list[tuple[list[dict], bytes]]:
        """1024 frames of `count` trades and quotes, each with its bytes."""
        ticks = (message for _ in itertools.count() for message in self.ticks(1))
        plain = (message for message in ticks if message["T"] in "tq")  # no corrections
        return [(frame, msgpack.packb(frame)) for frame in (list(itertools.islice(plain, count)) for _ in range(1024))]

    def trade(self, symbol: str, *, size: float | None = None, at: float | None = None,
              bar: BarBuilder | None = None) -> list[dict]:
        """A trade, counted in the bars (of this minute unless `bar` is given); [] if the client
        does not watch this symbol's trades. Now and then a correction or a cancel of a recent
        trade comes with it."""
        rng = self.rng
        price = round(self.step(symbol), 2)
        if size is None:
            if rng.random() < 0.005:
                size = rng.randrange(BLOCK_SIZE, 5 * BLOCK_SIZE, 100)
            elif rng.random() < 0.6:  # round lots, many odd lots
                size = rng.choice((100, 100, 200, 300, 500, 1000, 5000))
            else:
                size = self.small_size()
        if size >= BLOCK_SIZE:
            self.last_block = time.time()
        self.count(symbol, price, size, bar)
        if not subscribed(symbol, self.subscriptions.get("trades", [])):
            return []
        trade = {"T": "t", "S": symbol, "i": next(self.ids), "x": rng.choice(EXCHANGES), "p": price, "s": size,
                 "c": rng.choice(CONDITIONS), "t": timestamp(at), "z": TAPES.get(symbol, "C")}
        if rng.random() < TAKER_SIDE_SHARE:
            trade["tks"] = rng.choice("BS")
        messages = [self.received(trade)]
        if self.recent and rng.random() < 0.005:
            messages.extend(self.correction())
        elif self.recent and rng.random() < 0.005:
            messages.extend(self.cancel())
        self.recent.append(trade)
        return messages

    def small_size(self) -> float:
        """An odd lot: a late trade's size, and many others'."""
        return self.rng.randint(1, 99)

    def count(self, symbol: str, price: float, size: float, bar: BarBuilder | None = None) -> None:
        """Count a trade in its bars: of this minute unless `bar` is given, and of the day."""
        # get() first: a builder (and the day's start) is made once a symbol, not for each trade.
        (bar or self.bars.get(symbol) or self.bars.setdefault(symbol, BarBuilder(self.minute * 60))).add(price, size)
        (self.days.get(symbol) or self.days.setdefault(symbol, BarBuilder(start_of_day()))).add(price, size)

    def quote(self, symbol: str, *, step: bool = True, at: float | None = None) -> dict:
        """A quote around the price (moved a step first, unless `step` is false), of now or at
        `at` (seconds since the epoch)."""
        rng = self.rng
        price = self.step(symbol) if step else self.prices[symbol]
        spread = 0.01 * rng.choice((1, 1, 1, 2, 2, 3))
        bid = math.floor((price - spread / 2) * 100) / 100
        lot = round_lot(price)
        quote = {"T": "q", "S": symbol, "bx": rng.choice(EXCHANGES), "bp": bid, "bs": lot * rng.randint(1, 12),
                 "ax": rng.choice(EXCHANGES), "ap": round(bid + spread, 2), "as": lot * rng.randint(1, 12),
                 "c": ["R"], "t": timestamp(at), "z": TAPES.get(symbol, "C")}
        return self.received(quote)

    def received(self, message: dict) -> dict:
        """Now and then "r", as Alpaca adds it: when it received the message, just after "t"."""
        if self.rng.random() < RECEIVED_SHARE:
            delay = self.rng.randint(3_000, 1_000_000)  # ns: a few microseconds to a millisecond
            message["r"] = msgpack.Timestamp.from_unix_nano(message["t"].to_unix_nano() + delay)
        return message

    def correction(self) -> list[dict]:
        """A correction of a recent trade: its price or its size was wrong."""
        original = self.rng.choice(self.recent)
        self.recent.remove(original)
        price, size = original["p"], original["s"]
        if self.rng.random() < 0.5:
            price = round(price + self.rng.choice((-0.01, 0.01)), 2)
        else:
            size = max(1, size + self.rng.choice((-100, 100)))
        return [{"T": "c", "S": original["S"], "x": original["x"], "oi": original["i"], "op": original["p"],
                 "os": original["s"], "oc": original["c"], "ci": next(self.ids), "cp": price, "cs": size,
                 "cc": original["c"], "t": timestamp(), "z": original["z"]}]

    def cancel(self) -> list[dict]:
        original = self.rng.choice(self.recent)
        self.recent.remove(original)
        return [{"T": "x", "S": original["S"], "i": original["i"], "x": original["x"], "p": original["p"],
                 "s": original["s"], "a": "C", "t": timestamp(), "z": original["z"]}]

    # -- what the clock brings ----------------------------------------------------------------

    def clock(self) -> list[dict]:
        """Minute bars and daily bars at each minute mark, updated bars at the half-minute after
        a late trade, and the events of a stock market (events_due())."""
        now = time.time()
        elapsed, self.last_clock = now - self.last_clock, now
        messages = []
        if int(now // 60) > self.minute:
            messages += self.close_minute(next_minute=int(now // 60))
        for symbol, due in list(self.updates_due.items()):
            if now >= due:
                del self.updates_due[symbol]
                messages += self.updated_bar(symbol)
        return messages + self.events_due(now, elapsed)

    def events_due(self, now: float, elapsed: float) -> list[dict]:
        """A block trade when none came for BLOCK_EVERY seconds, random halts and their
        resumptions, random imbalances, and new LULD bands; elapsed: seconds since the last."""
        messages = []
        for symbol, (resume_at, _) in list(self.halted.items()):
            if now >= resume_at:
                messages += self.resume(symbol)
        traded = [s for s in self.symbols("trades") if s not in self.halted]
        if traded and now - self.last_block >= BLOCK_EVERY:  # on the clock: a pause after a burst cannot delay it
            size = self.rng.randrange(BLOCK_SIZE, 5 * BLOCK_SIZE, 100)
            messages += self.trade(self.rng.choice(traded), size=size)
        watched = [s for s in self.symbols("statuses") if s not in self.halted]
        if watched and self.rng.random() < elapsed * HALTS_PER_MINUTE / 60:
            messages += self.halt(self.rng.choice(watched), lasting=self.rng.uniform(*HALT_SECONDS))
        imbalanced = self.symbols("imbalances")
        if imbalanced and self.rng.random() < elapsed * IMBALANCES_PER_MINUTE / 60:
            messages += self.imbalance(self.rng.choice(imbalanced))
        for symbol in self.symbols("lulds"):
            reference = self.last_price(symbol)
            if symbol not in self.bands or abs(reference / self.bands[symbol] - 1) >= 0.01:
                messages += self.luld(symbol)
        return messages

    def close_minute(self, next_minute: int | None = None) -> list[dict]:
        """The minute's bars (only symbols that traded), and the daily bars so far. Now and then
        a trade of the closed minute arrives late: it comes now, and its updated bar in 30 s."""
        messages = []
        for symbol, bar in self.bars.items():
            if subscribed(symbol, self.subscriptions.get("bars", [])):
                messages.append(bar.message("b", symbol))
            self.closed[symbol] = bar
            if self.rng.random() < 0.2:
                messages += self.late_trade(symbol)
        for symbol in self.symbols("dailyBars"):
            if symbol in self.days:
                messages.append(self.days[symbol].message("d", symbol))
        self.bars = {}
        self.minute = next_minute if next_minute is not None else self.minute + 1
        return messages

    def late_trade(self, symbol: str) -> list[dict]:
        """A trade timestamped in the closed minute, arriving after it: that bar changes, and
        its updated bar is due after the next half-minute mark."""
        bar = self.closed[symbol]
        self.updates_due[symbol] = bar.start + 90
        return self.trade(symbol, size=self.small_size(), at=bar.start + 59.99, bar=bar)

    def updated_bar(self, symbol: str) -> list[dict]:
        if not subscribed(symbol, self.subscriptions.get("updatedBars", [])) or symbol not in self.closed:
            return []
        return [self.closed[symbol].message("u", symbol)]

    def halt(self, symbol: str, lasting: float = math.inf) -> list[dict]:
        tape = TAPES.get(symbol, "C")
        halt = self.rng.choice(HALTS["C" if tape == "C" else "B"])
        self.halted[symbol] = (time.time() + lasting, halt)
        return self.status(symbol, *halt[:4]) + self.imbalance(symbol)  # a halt draws orders to its reopening

    def resume(self, symbol: str) -> list[dict]:
        _, halt = self.halted.pop(symbol)
        return self.status(symbol, halt[4], halt[5], halt[2], halt[3])

    def status(self, symbol: str, code: str, message: str, reason_code: str, reason: str) -> list[dict]:
        if not subscribed(symbol, self.subscriptions.get("statuses", [])):
            return []
        return [{"T": "s", "S": symbol, "sc": code, "sm": message, "rc": reason_code, "rm": reason,
                 "t": timestamp(), "z": TAPES.get(symbol, "C")}]

    def imbalance(self, symbol: str) -> list[dict]:
        if not subscribed(symbol, self.subscriptions.get("imbalances", [])):
            return []
        return [{"T": "i", "S": symbol, "p": round(self.last_price(symbol) * (1 + self.rng.gauss(0, 0.002)), 2),
                 "z": TAPES.get(symbol, "C"), "t": timestamp()}]

    def luld(self, symbol: str) -> list[dict]:
        reference = self.last_price(symbol)
        self.bands[symbol] = reference
        return [{"T": "l", "S": symbol, "u": round(reference * (1 + LULD_PERCENT / 100), 2),
                 "d": round(reference * (1 - LULD_PERCENT / 100), 2), "i": "B", "t": timestamp(),
                 "z": TAPES.get(symbol, "C")}]

    # -- on cue, for the tests ------------------------------------------------------------------

    def cue(self, event: str) -> list[dict]:
        """One event now, on a symbol the client watches for it (see CUES)."""
        traded = self.symbols("trades") or [self.wildcard[0]]
        if event == "block":
            return self.trade(self.rng.choice(traded), size=BLOCK_SIZE * self.rng.randint(1, 5))
        if event in ("correction", "cancel"):
            messages = [] if self.recent else self.trade(self.rng.choice(traded))
            return messages + (self.correction() if event == "correction" else self.cancel())
        if event == "halt":
            watched = [s for s in self.symbols("statuses") if s not in self.halted]
            return self.halt(self.rng.choice(watched)) if watched else []
        if event == "resume":
            return self.resume(next(iter(self.halted))) if self.halted else []
        if event == "luld":
            return [message for symbol in self.symbols("lulds") for message in self.luld(symbol)]
        if event == "imbalance":
            return [message for symbol in self.symbols("imbalances") for message in self.imbalance(symbol)]
        if event == "big_frame":
            return [message for _ in range(BIG_FRAME_TRADES) for message in self.trade(self.rng.choice(traded))]
        if event not in ("bar", "daily_bar", "updated_bar"):
            raise ValueError(f"no such cue: {event} (one of {', '.join(CUES)})")
        barred = self.symbols("bars", "updatedBars", "dailyBars") or traded
        messages = []
        if event != "updated_bar" or not any(symbol in self.closed for symbol in barred):
            if not any(symbol in self.bars for symbol in barred):
                messages += self.trade(barred[0])  # a bar needs a trade in its minute
            messages += self.close_minute()
        if event == "updated_bar":
            symbol = next(s for s in barred if s in self.closed)
            messages += self.late_trade(symbol)
            del self.updates_due[symbol]  # sent now, not at the half-minute
            messages += self.updated_bar(symbol)
        return messages


def start_of_day() -> float:
    """Midnight in New York, where Alpaca's daily bars start, as seconds since the epoch."""
    now = datetime.now(NEW_YORK)
    return now.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()


