"""What can end a run, what Alpaca can refuse, and what to tell the user: the one policy every
source follows. A refusal that retrying cannot cure ends the run (exit status 3); every other
fault of the network or the server is retried by the source that met it, alone."""

from __future__ import annotations


class ConfigError(Exception):
    """Bad configuration or usage: exit status 2, with a message that says what to do."""


class AlpacaRefused(Exception):
    """Alpaca answered with an error frame (code and message as in its documentation); advice:
    what to tell the user, for a refusal with no code of its own (the trading API's)."""

    def __init__(self, code: int, message: str, advice: str = "") -> None:
        super().__init__(f"{message} ({code})" if code else message)
        self.code = code
        self.message = message
        self.advice = advice


class CannotConnect(Exception):
    """The connection failed before the websocket opened: what happened, in words."""


class NoData(Exception):
    """Connected, in market hours, but no data for --data-timeout seconds: the stream went mute."""


EXIT_OK, EXIT_UNEXPECTED, EXIT_USAGE, EXIT_REFUSED, EXIT_FORCED = 0, 1, 2, 3, 130


# Refusals that retrying cannot cure (Alpaca's Go SDK gives up on these too): exit status 3.
# Every other code of Alpaca's (400, 401, 403, 404, 406, 407, 500) is retried.
FATAL_ADVICE = {
    402: "Alpaca rejected the API keys (402 auth failed).\nThey came from {source}. "
         "Check both are copied in full and belong\ntogether: paper and live accounts have different keys.",
    405: "Alpaca refused the subscription\n(405 symbol limit exceeded): the free plan allows 30 symbols\n"
         "for trades and quotes, and 10 crypto order books.",
    409: "Your Alpaca plan does not include this feed\n(409 insufficient subscription). "
         "The free plan has IEX (--feed iex)\nand the indicative options feed (--options-feed indicative).",
    410: "Alpaca refused the subscription\n(410 invalid subscribe action for this feed).",
    411: "Alpaca refused the keys (411 insufficient scope).\nThey came from {source}. An OAuth or broker "
         "token needs the\nmarket data scope; the API keys of your dashboard have it.",
    412: "Alpaca's options stream takes msgpack only\n(412 option messages are only available in MsgPack "
         "format):\nthis script asks for it, so a proxy on the way may have dropped the header.",
    413: "Alpaca refused the subscription\n(413 star subscription is not allowed for option quotes):\n"
         "name the contracts.",
}
# The trading API refuses keys with an answer, not a code: exit status 3 too.
TRADING_UNAUTHORIZED = ("The trading API refused the keys (unauthorized).\nThey came from {source}. "
                        "Paper and live accounts have different\nkeys: --live takes the live account's.")
RETRY_ADVICE = {
    406: "Another connection with these keys is open to this feed: Alpaca allows one\n"
         "per endpoint per user (iex and sip are two), shared by every app using them.\n"
         "A dropped one can be held for a while (about 90 s, says Alpaca's forum).",
    407: "The server says we read too slowly.",
}
# A websocket handshake refused with these is a wrong URL, not a passing fault: exit status 2.
PERMANENT_HTTP = {400: "bad request", 401: "unauthorized", 403: "forbidden", 404: "not found"}
