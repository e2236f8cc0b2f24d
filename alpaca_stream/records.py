"""What each kind of message holds: a record for each, with the fields of alpaca-py's models
(trade.symbol, trade.price, quote.bid_price, bar.close, ...), so that code written against them
works on alpaca-py's models too; print(record) shows them all. Each record is the message as
Alpaca sent it, a dict of its wire keys ("S", "p", ...), and the form --json prints it in,
converted back here for --replay, --source and run_handlers()."""

from __future__ import annotations

import contextlib
import functools
import json
from collections.abc import Callable
from datetime import datetime
from operator import itemgetter
from typing import Any, ClassVar, NamedTuple
from uuid import UUID

from alpaca_stream.books import Book
from alpaca_stream.channels import market_of_symbol
from alpaca_stream.times import rfc3339


class Record(dict):
    """A message as Alpaca sent it (a dict of its wire keys: "S", "p", ...), whose attributes
    have the names of alpaca-py's models: trade.price is trade["p"]. So code written against
    them works on alpaca-py's models too. A record is the received dict, copied in one step:
    about half the cost of building a tuple field by field, and that matters on a busy stream
    (see the benchmark)."""

    __slots__ = ()
    fields: ClassVar[dict[str, Wire]] = {}  # attribute name -> where it is on the wire, in order
    market: ClassVar[str] = "stocks"  # the stream it came from: "stocks", "crypto", "options", "news", "trading"
    symbol: str  # every kind has these two; each kind's wire() fields read them
    timestamp: datetime

    def __init_subclass__(cls) -> None:
        cls.fields = {**cls.fields, **{name: value for name, value in vars(cls).items() if isinstance(value, Wire)}}

    def named(self) -> dict[str, Any]:
        """Every field Alpaca sent, by name: the record's fields in order, then any key Alpaca
        added that has no name here (as "tks", the taker side), under its wire key."""
        named = {name: self[wire.key] for name, wire in self.fields.items() if wire.key in self}
        if len(named) < len(self) - 1:  # more than "T" and the known keys: keep them too
            known = {wire.key for wire in self.fields.values()}
            named.update((key, value) for key, value in self.items() if key not in known and key != "T")
        return named

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={value!r}" for name, value in self.named().items())
        return f"{type(self).__name__}({shown})"


class Wire(property):
    """A record's attribute: the value Alpaca sent under `key` (None if optional and left out)."""

    def __init__(self, key: str, optional: bool) -> None:
        super().__init__(itemgetter(key) if not optional else lambda record: record.get(key))
        self.key, self.optional = key, optional


def wire(key: str, optional: bool = False) -> Any:  # Any: mypy takes the type annotated beside it
    return Wire(key, optional)


class Trade(Record):
    """A trade: a size at a price, on an exchange."""

    symbol: str = wire("S")
    price: float = wire("p")
    size: int = wire("s")
    timestamp: datetime = wire("t")  # when the exchange printed it, UTC
    exchange: str = wire("x")
    conditions: list[str] | None = wire("c", optional=True)
    id: int = wire("i")
    tape: str | None = wire("z", optional=True)


class Quote(Record):
    """The best bid and ask. Sizes are in shares (in round lots before November 3, 2025)."""

    symbol: str = wire("S")
    timestamp: datetime = wire("t")
    bid_price: float = wire("bp")
    bid_size: int = wire("bs")
    bid_exchange: str | None = wire("bx", optional=True)
    ask_price: float = wire("ap")
    ask_size: int = wire("as")
    ask_exchange: str | None = wire("ax", optional=True)
    conditions: list[str] | None = wire("c", optional=True)
    tape: str | None = wire("z", optional=True)


class Bar(Record):
    """A minute's prices and volume; timestamp is the minute's start."""

    symbol: str = wire("S")
    timestamp: datetime = wire("t")
    open: float = wire("o")
    high: float = wire("h")
    low: float = wire("l")
    close: float = wire("c")
    volume: int = wire("v")
    trade_count: int | None = wire("n", optional=True)
    vwap: float | None = wire("vw", optional=True)


class UpdatedBar(Bar):
    """A minute bar sent again, because trades arrived late for its minute."""


class DailyBar(Bar):
    """The day's bar so far, sent every minute while the market is open."""


class TradingStatus(Record):
    """A trading halt or resumption, with its reason (codes in Alpaca's documentation)."""

    symbol: str = wire("S")
    timestamp: datetime = wire("t")
    status_code: str = wire("sc")
    status_message: str = wire("sm")
    reason_code: str = wire("rc")
    reason_message: str = wire("rm")
    tape: str | None = wire("z", optional=True)


class Luld(Record):
    """The limit up / limit down price band: trades outside it pause trading."""

    symbol: str = wire("S")
    timestamp: datetime = wire("t")
    limit_up_price: float = wire("u")
    limit_down_price: float = wire("d")
    indicator: str = wire("i")
    tape: str | None = wire("z", optional=True)


class TradeCorrection(Record):
    """A trade sent earlier was wrong: original_id names it; the corrected_ fields replace it."""

    symbol: str = wire("S")
    timestamp: datetime = wire("t")
    exchange: str = wire("x")
    original_id: int = wire("oi")
    original_price: float = wire("op")
    original_size: int = wire("os")
    original_conditions: list[str] = wire("oc")
    corrected_id: int = wire("ci")
    corrected_price: float = wire("cp")
    corrected_size: int = wire("cs")
    corrected_conditions: list[str] = wire("cc")
    tape: str | None = wire("z", optional=True)


class OrderImbalance(Record):
    """An order imbalance, mostly before the opening and closing auctions and around halts."""

    symbol: str = wire("S")
    timestamp: datetime = wire("t")
    price: float = wire("p")
    tape: str | None = wire("z", optional=True)


class TradeCancel(Record):
    """A trade sent earlier was cancelled (action "C") or was an error ("E"); id names it."""

    symbol: str = wire("S")
    timestamp: datetime = wire("t")
    exchange: str = wire("x")
    price: float = wire("p")
    size: int = wire("s")
    id: int = wire("i")
    action: str = wire("a")
    tape: str | None = wire("z", optional=True)


# The crypto stream's records: alpaca-py gives a crypto trade, quote or bar the same model as a
# stock's, with no exchange, conditions or tape, and fractional sizes; these have only the
# fields the crypto stream sends, typed as it sends them. A trade's taker side, "tks" ("B" or
# "S"), which alpaca-py's model drops, is kept under its wire key, as the stock records keep it.


class CryptoTrade(Record):
    """A trade of a pair (BTC/USD): a size in coins, fractional, at a price."""

    market = "crypto"
    symbol: str = wire("S")
    price: float = wire("p")
    size: float = wire("s")
    timestamp: datetime = wire("t")
    id: int = wire("i")


class CryptoQuote(Record):
    """A pair's best bid and ask, sizes in coins."""

    market = "crypto"
    symbol: str = wire("S")
    timestamp: datetime = wire("t")
    bid_price: float = wire("bp")
    bid_size: float = wire("bs")
    ask_price: float = wire("ap")
    ask_size: float = wire("as")


class CryptoBar(Record):
    """A pair's minute: prices and volume in coins; timestamp is the minute's start."""

    market = "crypto"
    symbol: str = wire("S")
    timestamp: datetime = wire("t")
    open: float = wire("o")
    high: float = wire("h")
    low: float = wire("l")
    close: float = wire("c")
    volume: float = wire("v")
    trade_count: int | None = wire("n", optional=True)
    vwap: float | None = wire("vw", optional=True)


class CryptoUpdatedBar(CryptoBar):
    """A pair's minute bar sent again, because trades arrived late for its minute."""


class CryptoDailyBar(CryptoBar):
    """A pair's day so far, sent every minute: the crypto market never closes."""


class OrderbookLevel(Record):
    """One price level of an order book: a size in coins at a price; size 0 takes the level
    away (alpaca-py's OrderbookQuote)."""

    price: float = wire("p")
    size: float = wire("s")


class Orderbook(Record):
    """A pair's order book message, as Alpaca sent it (alpaca-py's Orderbook): the levels that
    changed, or the whole book when reset is true (the first after subscribing). Beside it,
    book: the book as it stands after this message (orderbook.book.best_bid), the same object
    from one message to the next: copy what you keep."""

    __slots__ = ("book",)
    market = "crypto"
    symbol: str = wire("S")
    timestamp: datetime = wire("t")
    bids: list[dict[str, float]] = wire("b")
    asks: list[dict[str, float]] = wire("a")
    reset: bool | None = wire("r", optional=True)
    book: Book

    @property
    def bid_levels(self) -> list[OrderbookLevel]:
        """The bids of this message, each with price and size as alpaca-py names them."""
        return [OrderbookLevel(level) for level in self.bids]

    @property
    def ask_levels(self) -> list[OrderbookLevel]:
        return [OrderbookLevel(level) for level in self.asks]


class OrderBooks:
    """Each pair's Book, for the Orderbook records of one stream (or one recording): a record
    comes with its pair's book, this message applied."""

    def __init__(self) -> None:
        self.books: dict[str, Book] = {}

    def __call__(self, message: dict[str, Any]) -> Orderbook:
        record = Orderbook(message)
        record.book = self.books.setdefault(record.symbol, Book())
        record.book.apply(message)
        return record


# The options stream's records: alpaca-py gives them its stock Trade and Quote models; these have
# the fields the options stream sends, typed as it sends them: sizes in contracts, and the
# condition one string (alpaca-py's model takes a list or a string), not a list.


class OptionTrade(Record):
    """A trade of an option contract (AAPL250117C00200000): a number of contracts at a price
    per share (a contract is usually 100 shares), on an exchange."""

    market = "options"
    symbol: str = wire("S")
    price: float = wire("p")
    size: int = wire("s")
    timestamp: datetime = wire("t")
    exchange: str = wire("x")
    conditions: str | None = wire("c", optional=True)


class OptionQuote(Record):
    """A contract's best bid and ask, sizes in contracts, each with its exchange."""

    market = "options"
    symbol: str = wire("S")
    timestamp: datetime = wire("t")
    bid_price: float = wire("bp")
    bid_size: int = wire("bs")
    bid_exchange: str = wire("bx")
    ask_price: float = wire("ap")
    ask_size: int = wire("as")
    ask_exchange: str = wire("ax")
    conditions: str | None = wire("c", optional=True)


class News(Record):
    """A news article (alpaca-py's News): its headline, summary and author, the symbols it is
    about (a crypto pair without its slash: BTCUSD), its source and url, when it was created
    and updated; content is its HTML, which can be large (kept, not printed)."""

    market = "news"
    id: int = wire("id")
    headline: str = wire("headline")
    summary: str = wire("summary")
    author: str = wire("author")
    created_at: datetime = wire("created_at")
    updated_at: datetime = wire("updated_at")
    url: str | None = wire("url", optional=True)
    content: str = wire("content")
    symbols: list[str] = wire("symbols")
    source: str = wire("source")


# The trading API's stream: the account's order updates. Its JSON has times and ids as text and
# every number as text; alpaca-py's models make the times datetimes, the ids UUIDs, an update's
# price, qty and position_qty floats, and keep an order's quantities and prices text: so do
# these, when a record is made. What cannot be read so (an order with a field missing, a new
# kind of event) is kept as it came: never dropped.


def converted(record: dict, convert: Callable[[Any], Any], *keys: str) -> None:
    """These keys' values converted in place, where they are there and can be."""
    for key in keys:
        if record.get(key) is not None:
            with contextlib.suppress(ValueError, TypeError, AttributeError):  # else kept as it came
                record[key] = convert(record[key])


class Order(Record):
    """An order (alpaca-py's Order): qty, filled_qty, filled_avg_price, limit_price and
    stop_price are text, as alpaca-py keeps them (float(order.qty) for a number); the times
    are datetimes (UTC), id and asset_id UUIDs."""

    market = "trading"
    id: UUID = wire("id")
    client_order_id: str = wire("client_order_id")
    created_at: datetime = wire("created_at")
    updated_at: datetime | None = wire("updated_at", optional=True)
    submitted_at: datetime | None = wire("submitted_at", optional=True)
    filled_at: datetime | None = wire("filled_at", optional=True)
    expired_at: datetime | None = wire("expired_at", optional=True)
    canceled_at: datetime | None = wire("canceled_at", optional=True)
    failed_at: datetime | None = wire("failed_at", optional=True)
    replaced_at: datetime | None = wire("replaced_at", optional=True)
    replaced_by: UUID | None = wire("replaced_by", optional=True)
    replaces: UUID | None = wire("replaces", optional=True)
    asset_id: UUID | None = wire("asset_id", optional=True)
    symbol: str = wire("symbol")
    asset_class: str | None = wire("asset_class", optional=True)
    notional: str | None = wire("notional", optional=True)
    qty: str | None = wire("qty", optional=True)
    filled_qty: str | None = wire("filled_qty", optional=True)
    filled_avg_price: str | None = wire("filled_avg_price", optional=True)
    order_class: str | None = wire("order_class", optional=True)
    order_type: str | None = wire("order_type", optional=True)
    type: str | None = wire("type", optional=True)
    side: str | None = wire("side", optional=True)
    time_in_force: str | None = wire("time_in_force", optional=True)
    limit_price: str | None = wire("limit_price", optional=True)
    stop_price: str | None = wire("stop_price", optional=True)
    status: str = wire("status")
    extended_hours: bool | None = wire("extended_hours", optional=True)
    legs: list | None = wire("legs", optional=True)
    trail_percent: str | None = wire("trail_percent", optional=True)
    trail_price: str | None = wire("trail_price", optional=True)
    hwm: str | None = wire("hwm", optional=True)

    def __init__(self, order: dict[str, Any]) -> None:
        super().__init__(order)
        converted(self, as_time, "created_at", "updated_at", "submitted_at", "filled_at", "expired_at",
                  "canceled_at", "failed_at", "replaced_at")
        converted(self, as_uuid, "id", "asset_id", "replaced_by", "replaces")


class TradeUpdate(Record):
    """An event of one of the account's orders (alpaca-py's TradeUpdate): event ("new",
    "fill", "partial_fill", "canceled", ... or one no SDK knows yet), the order as it now
    stands, when; for a fill, its price and qty and the position after it (position_qty),
    numbers. recovered: True for an update made from the order's state after a reconnect,
    since the stream sends nothing again (the trading API's REST has every order's state)."""

    market = "trading"
    event: str = wire("event")
    execution_id: UUID | None = wire("execution_id", optional=True)
    order: Order = wire("order")
    timestamp: datetime = wire("timestamp")
    position_qty: float | None = wire("position_qty", optional=True)
    price: float | None = wire("price", optional=True)
    qty: float | None = wire("qty", optional=True)
    recovered: bool | None = wire("recovered", optional=True)

    def __init__(self, update: dict[str, Any]) -> None:
        super().__init__(update)
        converted(self, as_time, "timestamp")
        converted(self, float, "price", "qty", "position_qty")
        converted(self, as_uuid, "execution_id")
        converted(self, Order, "order")

    @property
    def symbol(self) -> str:  # type: ignore[override]  # the order's, for the lines and subjects
        order = self.get("order")
        return str(order.get("symbol", "")) if isinstance(order, dict) else ""


def as_time(value: Any) -> datetime:
    return value if isinstance(value, datetime) else rfc3339(value)


def as_uuid(value: Any) -> UUID:
    return value if isinstance(value, UUID) else UUID(value)


# Alpaca's "T" for each kind of message: the kind's name (handlers and --json go by it), and
# its record; for each stream.
MESSAGE_TYPES: dict[str, tuple[str, type[Record]]] = {
    "t": ("trade", Trade), "q": ("quote", Quote), "b": ("bar", Bar), "u": ("updated_bar", UpdatedBar),
    "d": ("daily_bar", DailyBar), "s": ("status", TradingStatus), "l": ("luld", Luld),
    "i": ("imbalance", OrderImbalance), "c": ("correction", TradeCorrection), "x": ("cancel", TradeCancel),
}
CRYPTO_TYPES: dict[str, tuple[str, type[Record]]] = {
    "t": ("trade", CryptoTrade), "q": ("quote", CryptoQuote), "b": ("bar", CryptoBar),
    "u": ("updated_bar", CryptoUpdatedBar), "d": ("daily_bar", CryptoDailyBar),
}
OPTION_TYPES: dict[str, tuple[str, type[Record]]] = {"t": ("trade", OptionTrade), "q": ("quote", OptionQuote)}
NEWS_TYPES: dict[str, tuple[str, type[Record]]] = {"n": ("news", News)}
# The trading stream's updates have no "T": the source gives them this one.
TRADING_TYPES: dict[str, tuple[str, type[Record]]] = {"trade_update": ("trade_update", TradeUpdate)}
KIND = {record: kind for types in (MESSAGE_TYPES, CRYPTO_TYPES, OPTION_TYPES, NEWS_TYPES, TRADING_TYPES)
        for kind, record in types.values()}
KIND[Orderbook] = "orderbook"
RecordType = Callable[[dict[str, Any]], Record]  # a record class, by_market(), or OrderBooks


def crypto_types() -> dict[str, tuple[str, RecordType]]:
    """The crypto stream's record table, with order books of its own (a stream's books are its
    own: another stream's, or a later run's, start empty)."""
    return {**CRYPTO_TYPES, "o": ("orderbook", OrderBooks())}


# Each "T" of a market's message -> its record in each market (the record of the stock's kind
# where a market has no such kind: a pair's status, an option's bar), for a recording of them all.
RECORD_IN_MARKET: dict[str, dict[str, type[Record]]] = {
    wire_type: {"stocks": record, "crypto": CRYPTO_TYPES.get(wire_type, (kind, record))[1],
                "options": OPTION_TYPES.get(wire_type, (kind, record))[1]}
    for wire_type, (kind, record) in {**MESSAGE_TYPES, **NEWS_TYPES, **TRADING_TYPES}.items()}


@functools.lru_cache(maxsize=4096)  # a replay's hot loop: a recording holds a few symbols
def record_in_market(wire_type: str, symbol: str) -> type[Record]:
    """The record of a message of every market in one table (a recording, run_handlers()):
    crypto's for a pair's message (its symbol has a slash: BTC/USD), an option's for an
    option's (AAPL250117C00200000: digits after its root), the stock's for the rest."""
    return RECORD_IN_MARKET[wire_type][market_of_symbol(symbol)]


def by_market(message: dict[str, Any]) -> Record:
    return record_in_market(message["T"], str(message.get("S", "")))(message)


def either_market_types() -> dict[str, tuple[str, RecordType]]:
    """The record table of messages of every market (a recording, run_handlers()), with order
    books of its own."""
    return {**{wire_type: (kind, by_market) for wire_type, (kind, _) in {**MESSAGE_TYPES, **NEWS_TYPES,
                                                                         **TRADING_TYPES}.items()},
            "o": ("orderbook", OrderBooks())}

# --json's "type" -> Alpaca's "T", and the kind's field names -> their wire keys.
JSON_TYPES: dict[str, tuple[str, type[Record]]] = {**MESSAGE_TYPES, "o": ("orderbook", Orderbook), **NEWS_TYPES,
                                                   **TRADING_TYPES}
WIRE_NAMES = {kind: (wire_type, {name: wire.key for name, wire in record.fields.items()})
              for wire_type, (kind, record) in JSON_TYPES.items()}
# The wire keys of times: the exchange's, when Alpaca received the message, and a news article's.
TIMES = ("t", "r", "created_at", "updated_at")


class Layout(NamedTuple):
    """How a --json line of one kind, its fields in one order, becomes the message Alpaca sent:
    its "T", the wire key of each field in the line's order ("T" for "type"), those of times."""

    wire_type: str
    keys: tuple[str, ...]
    times: tuple[str, ...]


# The layouts of the --json lines read so far, by kind and field names; a file (or a feeder)
# holds a few, one for each kind and its optional fields. Bounded, for a file of many.
LAYOUTS: dict[tuple[str, tuple[str, ...]], Layout] = {}
MOST_LAYOUTS = 1000


def layout_of(kind: str, names: tuple[str, ...]) -> Layout:
    wire_type, keys = WIRE_NAMES[kind]
    wire_keys = tuple("T" if name == "type" else keys.get(name, name) for name in names)
    layout = Layout(wire_type, wire_keys, tuple(key for key in wire_keys if key in TIMES))
    if len(LAYOUTS) < MOST_LAYOUTS:
        LAYOUTS[kind, names] = layout
    return layout


def from_json(fields: dict[str, Any]) -> dict[str, Any]:
    """A message as --json prints it (and --publish sends it) back as Alpaca sent it: "T", the
    wire keys, times as datetimes, and a field the records do not name ("tks") under its own
    key; its record already (the one of its market), but for an order book's (OrderBooks makes
    that, with the pair's book). KeyError, TypeError or ValueError for an object that is not
    one. (A replay's hot loop: the line's layout is looked up, not worked out each time.)"""
    kind, names = fields["type"], tuple(fields)
    wire_type, keys, times = LAYOUTS.get((kind, names)) or layout_of(kind, names)
    values = zip(keys, fields.values())
    message = dict(values) if wire_type == "o" else record_in_market(wire_type, str(fields.get("symbol", "")))(values)
    message["T"] = wire_type
    for key in times:
        if isinstance(when := message[key], str):  # an order book's "r" is its reset, not a time
            try:
                message[key] = datetime.fromisoformat(when)
            except ValueError:  # a Z, which Python 3.10 does not read: a message a student wrote
                message[key] = rfc3339(when)
    return message


def from_json_line(line: str | bytes) -> dict[str, Any] | None:
    """A line of --json (of a --replay file, a NATS payload) as Alpaca sent it; None if not one."""
    try:
        return from_json(json.loads(line))
    except (ValueError, KeyError, TypeError):
        return None


def as_json(value: object) -> str:
    """For json.dumps, what JSON has no type for: a time (msgpack's Timestamps arrive as
    datetimes) in ISO 8601 to the microsecond; anything else as its text, not dropped."""
    return value.isoformat(timespec="microseconds") if isinstance(value, datetime) else str(value)


