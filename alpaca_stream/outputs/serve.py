"""--serve: Alpaca's stream protocol, with this script's data, to more bots (any Alpaca client,
unmodified), through the relay of server/relay.py; their subscriptions join the script's own
on its one connection to each market."""

from __future__ import annotations

import errno
import ipaddress
import logging
import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from alpaca_stream.errors import ConfigError
from alpaca_stream.keys import Keys
from alpaca_stream.session import Session
from alpaca_stream.subscriptions import Subscriptions

if TYPE_CHECKING:
    from alpaca_stream.server.relay import MarketClients, Relay

log = logging.getLogger("alpaca_stream")


@asynccontextmanager
async def serving(host: str, port: int, served: Mapping[str, Subscriptions], session: Session, *,
                  keys: Keys | None) -> AsyncIterator[Relay]:
    """A relay on host:port, serving each of these paths (/v2/iex, /v1beta3/crypto/us, ...) to
    clients that log in with these keys (None: any will do, as with --demo or --source, which
    have no keys of Alpaca's to check); what they subscribe to at a path joins the
    subscriptions of the script's stream there."""
    # Imported here, not with the module, as in sources/demo.py: the server's code is for
    # the runs that serve.
    from alpaca_stream.server.relay import AllMarkets, Relay

    relay = Relay(host=host, port=port, changed={path: subscriptions.update for path, subscriptions in served.items()},
                  keys=(keys.key, keys.secret) if keys else None)
    try:
        await relay.start()
    except OSError as error:
        raise cannot_listen("--serve", host, port, error) from None
    log.info("serving Alpaca's stream to more bots, at\n%s (%s)", "\n".join(map(relay.url_of, served)),
             "they log in with this script's keys" if keys else "any keys will do")
    if not is_loopback(host):
        log.warning("clients on other machines send the keys\nunencrypted (ws://): serve them only on "
                    "a network\nyou trust, or through an SSH tunnel")
    markets: dict[int, dict[str, MarketClients]] = {}  # each stream's markets: one, or several (NATS)
    for path, subscriptions in served.items():
        markets.setdefault(id(subscriptions), {})[relay.endpoints[path].market] = relay.at(path)
    for subscriptions in served.values():
        theirs = markets[id(subscriptions)]
        subscriptions.relay = next(iter(theirs.values())) if len(theirs) == 1 else AllMarkets(theirs)
    session.served = 0
    try:
        yield relay
    finally:
        for subscriptions in served.values():
            subscriptions.relay = None
        session.served, session.slow_clients = relay.served, relay.slow
        await relay.stop()


def cannot_listen(option: str, host: str, port: int, error: OSError) -> ConfigError:
    """The usage error of a server of ours that cannot listen (a port in use, say)."""
    # Python 3.13 skips an address it cannot assign (taken for an IP version not enabled) and,
    # with none left, says only this, with no errno.
    if error.errno == errno.EADDRNOTAVAIL or (
            error.errno is None and str(error).startswith("could not bind on any address")):
        return ConfigError(f"{option}: cannot listen on {host}:{port}:\n{os.strerror(errno.EADDRNOTAVAIL)}: "
                           f"{host} is not an address of this machine; 127.0.0.1 for it alone, 0.0.0.0 for "
                           "all its networks")
    # asyncio's strerror is a sentence with the address in it: the system's is enough.
    reason = os.strerror(error.errno) if error.errno else str(error)
    return ConfigError(f"{option}: cannot listen on {host}:{port}:\n{reason}; another port? (0 picks a free one)")


def is_loopback(host: str) -> bool:
    """Whether only this machine reaches this address; ValueError if it is not an address."""
    return host == "localhost" or ipaddress.ip_address(host).is_loopback
