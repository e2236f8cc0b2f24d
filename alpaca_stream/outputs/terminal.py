"""The terminal: each message on stdout as a line of text (or, with --json, a JSON object),
what show() prints for the default handlers. Every text line fits an 80-column terminal."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Callable
from typing import Any

from alpaca_stream.channels import STATUS_OF_EVENT
from alpaca_stream.logs import WIDTH
from alpaca_stream.records import (
    KIND,
    Bar,
    CryptoBar,
    CryptoDailyBar,
    CryptoQuote,
    CryptoTrade,
    CryptoUpdatedBar,
    DailyBar,
    Luld,
    News,
    OptionQuote,
    OptionTrade,
    Orderbook,
    OrderImbalance,
    Quote,
    Record,
    Trade,
    TradeCancel,
    TradeCorrection,
    TradeUpdate,
    TradingStatus,
    UpdatedBar,
    as_json,
)

OUTPUT = "text"  # what show() prints: "text", "json" with --json, "none" with --quiet; the command line sets it
SYMBOL_COLUMN = len("00:00:00.000Z trade       ")  # where a line's symbol starts, after its time and kind
# Where a trade's "@" stands, in every market: after the longest symbol, an option's (21 characters
# at most, OCC's: a root of 6), and 4 digits of contracts. A stock's size and a pair's have room.
AT_COLUMN = SYMBOL_COLUMN + 21 + 1 + 4 + 1
PAIR = len("SHIB/USD")  # a crypto quote's symbol column: its bid and ask stand where other pairs' do
NEWS_SYMBOLS = len("SHIBUSD")  # an article's symbols' column: the longest pair as the news names it


def show(message: Record) -> None:
    """Print a message on stdout, one line: what the default handlers do. The command line
    decides the form: text, a JSON object with --json, nothing with --quiet."""
    if OUTPUT == "text":
        print(format_text(message))
    elif OUTPUT == "json":
        print(format_json(message))


def format_text(message: Record) -> str:
    """One line: when (UTC, the time of day to the millisecond), what, which symbol, and the
    details of its kind. Only a status's reason can be longer than WIDTH: it goes on, on
    lines of its own, under the details. A message with a field missing, or not as
    documented, is still printed: what it has, on as many lines as it takes."""
    try:
        return LINES.get(type(message), line)(message)
    except (LookupError, TypeError, ValueError, AttributeError):
        return "\n".join(textwrap.wrap(f"{KIND[type(message)]:<10} (incomplete) {format_json(message)}",
                                       WIDTH, subsequent_indent=" " * 11, break_long_words=False))


def line(message: Record, kind: str = "") -> str:
    """The line of a market's message: its time, kind and symbol, then DETAILS of its kind. A
    trade's "@" stands in one column (AT_COLUMN) whatever its market and symbol: its parts
    (TRADES) on each side of it."""
    width = PAIR if isinstance(message, CryptoQuote) else 5
    start = (f"{message.timestamp.strftime('%H:%M:%S.%f')[:12]}Z {kind or KIND[type(message)]:<11} "
             f"{message.symbol:<{width}} ")
    if type(message) in TRADES:
        size, priced = TRADES[type(message)](message)
        details = f"{size.rjust(AT_COLUMN - len(start) - 1)} @ {priced}"
    else:
        details = DETAILS[type(message)](message)
    if len(start) + len(details) <= WIDTH:
        return start + details
    return start + f"\n{' ' * len(start)}".join(textwrap.wrap(details, WIDTH - len(start)))


def format_json(message: Record) -> str:
    """One JSON object: "type" (the kind) and every field Alpaca sent, times in ISO 8601."""
    return json.dumps({"type": KIND[type(message)], **message.named()}, default=as_json)


def money(price: float) -> str:
    """Two decimals, or up to four when there are more: sub-penny prices exist."""
    text = f"{price:.4f}"
    return text[:-2] + text[-2:].rstrip("0")


def coins(size: float, decimals: int = 6) -> str:
    """A crypto size to the sixth decimal at most, without trailing zeros: --json has it whole
    (to the ninth); with more, a BTC/USD quote did not fit one line of 80 columns."""
    return f"{size:.{decimals}f}".rstrip("0").rstrip(".")


def crypto_price(price: float) -> str:
    """A crypto price with the decimals it has (a coin can cost 0.00001234), two at least."""
    text = f"{price:.10f}".rstrip("0")
    return text + "0" * (2 - len(text.partition(".")[2]))


# The end of each kind's line, after its symbol. A trade's in two parts, its size and what follows
# its "@" (the price, right aligned in the same width in every market): line() sets the "@" at AT_COLUMN.

def trade(trade: Trade) -> tuple[str, str]:
    return str(trade.size), f"{money(trade.price):>9}  {trade.exchange}"


def quote(quote: Quote) -> str:
    return (f"bid {money(quote.bid_price):>8} x {quote.bid_size:<6} "
            f"ask {money(quote.ask_price):>8} x {quote.ask_size}")


def option_trade(trade: OptionTrade) -> tuple[str, str]:
    """Contracts at a price per share, the exchange and the condition."""
    return str(trade.size), f"{money(trade.price):>9}  {trade.exchange} {trade.conditions or ''}".rstrip()


def option_quote(quote: OptionQuote) -> str:
    return (f"bid {money(quote.bid_price):>6} x {quote.bid_size:<4} "
            f"ask {money(quote.ask_price):>6} x {quote.ask_size}")


def bar(bar: Bar | CryptoBar) -> str:
    """Open, high, low and close, then the volume: with an O, H, L and C before them, a bar of
    five-digit prices and a volume of 999999 was 84 columns."""
    prices = (bar.open, bar.high, bar.low, bar.close)
    if bar.market == "crypto":
        # The volume to the fourth decimal: to the sixth, BTC/USD's bar was 81 columns.
        return " ".join(crypto_price(price) for price in prices) + f" V {coins(bar.volume, 4)}"
    return " ".join(f"{money(price):>8}" for price in prices) + f" V {bar.volume}"


def crypto_trade(trade: CryptoTrade) -> tuple[str, str]:
    """The size in coins, the price, and the taker's side (B: the buyer took the offer, S:
    the seller hit the bid) when Alpaca gives it."""
    return coins(trade.size), f"{crypto_price(trade.price):>9}  {trade.get('tks', '')}".rstrip()


def orderbook(orderbook: Orderbook) -> str:
    """The best bid and ask of the book as it stands, and how many levels this message changed
    (or that it is the whole book). Without the sizes: with them, BTC/USD's line was 84 columns."""
    best = " ".join(f"{side} {crypto_price(level[0]) if level else 'none'}"
                    for side, level in (("bid", orderbook.book.best_bid), ("ask", orderbook.book.best_ask)))
    changed = len(orderbook.bids) + len(orderbook.asks)
    return f"{best}, " + ("whole book" if orderbook.reset else f"{changed} level{'s' * (changed != 1)} changed")


def news(article: News) -> str:
    """When it was written, the symbols it is about and its headline, cut to fit WIDTH; not
    its content (HTML, kilobytes)."""
    symbols = ",".join(article.symbols)
    # A gap of two after the symbols: after a pair's (SHIBUSD), one was read as the headline's.
    start = f"{article.created_at.strftime('%H:%M:%S.%f')[:12]}Z news        {symbols:<{NEWS_SYMBOLS}}  "
    room = max(WIDTH - len(start), 20)
    return start + (article.headline if len(article.headline) <= room else article.headline[:room - 3] + "...")


def trade_update(update: TradeUpdate) -> str:
    """An order's event (a fill's quantity at its price), then the order: its side, how much
    of it is filled, its limit price if it has one, its state: "fill 100 @ 600.25; buy
    100/100 at 600.50, filled". "order", not "trade_update", in the kind's column (11 wide)."""
    order = update.order
    what = f"{update.event}{' (recovered)' if update.recovered else ''}"
    if update.get("qty") is not None and update.get("price") is not None:
        what += f" {quantity(update.qty)} @ {money(float(update.price or 0))}"
    limit = f" at {money(float(order.limit_price))}" if order.limit_price else ""
    # The order's state when the event does not say it already (a fill: filled), so the line fits.
    state = "" if STATUS_OF_EVENT.get(update.event) == order.status else f", {order.status}"
    # A notional order has no qty: what it is for is its dollars.
    whole = f"/{order.qty}" if order.notional is None else f" of ${float(order.notional):,.2f}"
    return f"{what}; {order.side} {quantity(float(order.filled_qty or 0))}{whole}{limit}{state}"


def quantity(qty: float | None) -> str:
    """A quantity as few digits as it has: 100, 0.5."""
    return f"{qty:.9f}".rstrip("0").rstrip(".") if qty is not None else "?"


def crypto_quote(quote: CryptoQuote) -> str:
    """Size@price, as traders write it: with "x" and spaces, BTC/USD's line with sizes of six
    decimals was 81 columns. Padded as a stock's, each "@" in a column of its own: sizes of 8
    characters and prices of 9 (0.123456@101234.56, 12345678@0.0000123) fill 80 columns; a
    longer one pushes the rest."""
    return (f"bid {coins(quote.bid_size):>8}@{crypto_price(quote.bid_price):<9} "
            f"ask {coins(quote.ask_size):>8}@{crypto_price(quote.ask_price)}")


def status(status: TradingStatus) -> str:
    return f"{status.status_message} ({status.status_code}): {status.reason_message} ({status.reason_code})"


def luld(luld: Luld) -> str:
    return f"down {money(luld.limit_down_price):>8}  up {money(luld.limit_up_price):>8}  ({luld.indicator})"


def correction(correction: TradeCorrection) -> str:
    # Without the ids: a trade's line has none, and with them a line was 81 to 83 columns.
    return (f"{correction.original_size} @ {money(correction.original_price)} -> "
            f"{correction.corrected_size} @ {money(correction.corrected_price)}")


def imbalance(imbalance: OrderImbalance) -> str:
    return f"at {money(imbalance.price):>8}"


def cancel(cancel: TradeCancel) -> str:
    undone = "cancelled" if cancel.action == "C" else "was an error"
    return f"{cancel.size} @ {money(cancel.price)} {undone}"


DETAILS: dict[type[Record], Callable[[Any], str]] = {
    Quote: quote, Bar: bar, UpdatedBar: bar, DailyBar: bar, TradingStatus: status, Luld: luld,
    TradeCorrection: correction, OrderImbalance: imbalance, TradeCancel: cancel,
    CryptoQuote: crypto_quote, CryptoBar: bar, CryptoUpdatedBar: bar, CryptoDailyBar: bar,
    Orderbook: orderbook, OptionQuote: option_quote, TradeUpdate: trade_update,
}
# The kinds whose "@" line() sets at AT_COLUMN, in their two parts.
TRADES: dict[type[Record], Callable[[Any], tuple[str, str]]] = {
    Trade: trade, CryptoTrade: crypto_trade, OptionTrade: option_trade}
# The kinds whose line is not line()'s: an article's, and an order's with "order" for its kind.
LINES: dict[type[Record], Callable[[Any], str]] = {News: news, TradeUpdate: lambda update: line(update, "order")}
