"""Orders from a handler: trading_client() gives alpaca-py's TradingClient, pointed where this
run trades and logged in with its keys: Alpaca's paper API (the default), the live one
(--live), another trading API (--trading-url), the local server's paper broker (--demo), or a
backtest's, filled at a recording's prices (--replay). So a handler's orders go where the
run's order updates come from, with the same code in all.

alpaca-py's REST client blocks, with no timeout: call it in a thread through in_background(),
so that the stream goes on while the order is on its way (the README's example):

    in_background(asyncio.to_thread(trading_client().submit_order, order))
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from alpaca_stream.keys import Keys

if TYPE_CHECKING:
    from alpaca.trading.client import TradingClient

log = logging.getLogger("alpaca_stream")

PAPER_API, LIVE_API = "https://paper-api.alpaca.markets", "https://api.alpaca.markets"
PAPER_CASH = 100_000.0  # dollars a new paper account of Alpaca's starts with


@dataclass(frozen=True)
class Costs:
    """What a backtest's account starts with and what its orders cost beyond their price:
    --cash, --latency, --slippage and --fee-bps."""

    cash: float = PAPER_CASH  # dollars
    latency: float = 0.0  # seconds of the recording's time an order takes to reach the market
    slippage_bps: float = 0.0  # basis points a fill is worse than the recording's price
    fee_bps: float = 0.0  # basis points of a fill's notional taken from the cash


def number(value: float) -> str:
    """A number as the trading API writes it: a string, with no exponent and no needless
    zeros (100, 0.5). Beside the orders, not in the server, so that a backtest's result has it
    without importing the server (result.py)."""
    return f"{value:.10f}".rstrip("0").rstrip(".")


def is_live(url: str) -> bool:
    """Whether a trading API's base URL is the live account's: real money."""
    return urlsplit(url).hostname == urlsplit(LIVE_API).hostname


class Account:
    """Where this run trades: the trading API's base URL and the keys, once the run knows; or
    what opens an account at the first call, and gives them (a backtest's broker)."""

    url: str | None = None
    keys: Keys | None = None
    client: Any = None  # made at the first call
    opens: Callable[[], tuple[str, Keys]] | None = None


account = Account()


def trade_at(url: str, keys: Keys) -> None:
    """Set by the run: where its orders go (the demo's broker, once it listens)."""
    account.url, account.keys, account.client, account.opens = url, keys, None, None


def trade_on_demand(opens: Callable[[], tuple[str, Keys]] | None) -> None:
    """Set by the run (--replay): opens() starts the account at the first call of
    trading_client(), and gives its URL and keys; None: no account again."""
    account.url = account.keys = account.client = None
    account.opens = opens


def trading_client() -> TradingClient:
    """alpaca-py's TradingClient for this run's account: the same one for every call."""
    if account.client is None:
        if account.url is None and account.opens is not None:
            account.url, account.keys = account.opens()
        if account.url is None or account.keys is None:
            raise RuntimeError("trading_client(): this run has no account to trade in "
                               "(--source reads data only; in a test, give "
                               "run_handlers(..., trading=...) one)")
        from alpaca.trading.client import TradingClient

        account.client = TradingClient(account.keys.key, account.keys.secret, url_override=account.url)
        if is_live(account.url):
            log.warning("trading_client()'s orders go to\n%s: the LIVE account, real money", account.url)
        else:
            log.info("trading_client()'s orders go to\n%s%s", account.url,
                     " (--trading-url for another)" if account.url == PAPER_API else "")
    return account.client  # type: ignore[no-any-return]


@contextlib.contextmanager
def trading_through(client: object) -> Iterator[None]:
    """trading_client() gives this client meanwhile (run_handlers(..., trading=client))."""
    before = account.client
    account.client = client
    try:
        yield
    finally:
        account.client = before
