"""Your API keys: from config.py beside your script, else the environment, else a .env file
there; checked before any connection, and never printed."""

from __future__ import annotations

import os
import re
import runpy
import traceback
from pathlib import Path
from typing import NamedTuple

from dotenv import dotenv_values

from alpaca_stream.errors import ConfigError

KEY_ENV, SECRET_ENV = "APCA_API_KEY_ID", "APCA_API_SECRET_KEY"
PLACEHOLDERS = {"your_api_key_here", "your_secret_key_here"}  # what config.example.py ships
# The shapes people type for "put your key here": YOUR_KEY, <secret>, xxxxxxxx, PASTE_IT_HERE.
# Alpaca's keys are random letters and digits: one of these shapes by chance is vanishingly rare.
PLACEHOLDER_SHAPE = re.compile(r"(?i)your.*|<.*>|x{3,}[x\W_]*|.*here")
KEYS_IN_QUOTES = 'Keys go in quotes: API_KEY = "..."'
KEY_CHARACTERS = re.compile(r"[A-Za-z0-9+/=_.-]{10,}")  # anything else plainly is not a key
HOW_TO_SET_KEYS = f"""\
Put your Alpaca API keys in config.py, a copy of config.example.py:
    cp config.example.py config.py        (Linux, macOS)
    copy config.example.py config.py      (Windows)
or set {KEY_ENV} and {SECRET_ENV}
in the environment or in a .env file beside the script.
No keys yet? See it work with demo data: python websocket_stream.py --demo"""


class Keys(NamedTuple):
    """A key id and its secret, and where they came from (for messages: never the keys)."""

    key: str
    secret: str
    source: str  # where they came from, for messages; never the keys themselves


def load_keys(folder: Path) -> Keys:
    """The keys from config.py in `folder`, else the environment, else a .env file there."""
    config_file = folder / "config.py"
    if config_file.exists():
        try:
            config = runpy.run_path(str(config_file))
        except SyntaxError as error:
            # Not str(error) or the line: a key pasted without quotes would be printed.
            unquoted = re.match(r"\s*\w+\s*=\s*[^\s\"']", error.text or "")  # API_KEY = PK 12...
            raise ConfigError(f"config.py has a syntax error on line {error.lineno}: {error.msg}"
                              + (f"\n{KEYS_IN_QUOTES}" if unquoted else "")) from None
        except NameError as error:
            raise ConfigError(f"config.py line {traceback.extract_tb(error.__traceback__)[-1].lineno} uses "
                              f"a name Python does not know.\n{KEYS_IN_QUOTES}") from None
        except Exception as error:
            line = traceback.extract_tb(error.__traceback__)[-1].lineno
            raise ConfigError(f"config.py failed on line {line}: {type(error).__name__}: {error}") from None
        return Keys(config.get("API_KEY", ""), config.get("SECRET_KEY", ""), "config.py")
    if os.environ.get(KEY_ENV) or os.environ.get(SECRET_ENV):
        return Keys(os.environ.get(KEY_ENV, ""), os.environ.get(SECRET_ENV, ""), "the environment")
    dotenv = dotenv_values(folder / ".env")
    return Keys(dotenv.get(KEY_ENV) or "", dotenv.get(SECRET_ENV) or "", ".env")


def check_keys(keys: Keys) -> Keys:
    """Refuse, before any connection, keys that cannot work; return them without stray spaces."""
    names = ("API_KEY", "SECRET_KEY") if keys.source == "config.py" else (KEY_ENV, SECRET_ENV)
    key, secret = (str(value or "").strip() for value in (keys.key, keys.secret))
    if keys.source == ".env" and not (key or secret):
        raise ConfigError(f"No Alpaca API keys found: no config.py,\nand no {KEY_ENV} "
                          f"in the environment or in .env.\n{HOW_TO_SET_KEYS}")
    for name, value in zip(names, (key, secret)):
        if not value:
            problem = "is missing or empty"
        elif value in PLACEHOLDERS:
            problem = f"is still the placeholder {value!r}"
        elif not KEY_CHARACTERS.fullmatch(value):  # <your key> among them
            problem = "does not look like a key (too short, or with spaces or quotes)"
        elif PLACEHOLDER_SHAPE.fullmatch(value):  # not printed: it might, just, be a key
            problem = "looks like a placeholder, not a key\n(YOUR_..., <...>, xxx..., ...HERE)"
        else:
            continue
        fix = "Paste your key in place of it, in quotes." if keys.source == "config.py" else HOW_TO_SET_KEYS
        raise ConfigError(f"{name} from {keys.source}\n{problem}.\n{fix}")  # a line each: 80 columns
    return Keys(key, secret, keys.source)
