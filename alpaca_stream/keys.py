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
# What config.example.py ships; a tuple, as config.py's values, of any type, are looked up in it.
PLACEHOLDERS = ("your_api_key_here", "your_secret_key_here")
# The shapes people type for "put your key here": YOUR_KEY, <secret>, xxxxxxxx, PASTE_IT_HERE.
# Alpaca's keys are random letters and digits: one of these shapes by chance is vanishingly rare.
PLACEHOLDER_SHAPE = re.compile(r"(?i)your.*|<.*>|x{3,}[x\W_]*|.*here")
KEYS_IN_QUOTES = 'Keys go in quotes: API_KEY = "..."'
KEY_CHARACTERS = re.compile(r"[A-Za-z0-9+/=_.-]{10,}")  # anything else plainly is not a key
# What to do, as a value from each source is wrong (the name, where it is wrong, goes before it).
FIX = {"config.py": "Paste your key in place of it, in quotes.",
       ".env": "Put your key in .env, beside the script: {name}=...",
       "the environment": "Set {name} to your key, in the environment."}


def how_to_set_keys(folder: Path) -> str:
    """Where keys go, for a script in folder: a copy of config.example.py in the project's
    folder; in another, where a student copied the script alone, the environment or a .env."""
    if (folder / "config.example.py").exists():
        where = ("Put your Alpaca API keys in config.py, a copy of config.example.py:\n"
                 "    cp config.example.py config.py        (Linux, macOS)\n"
                 "    copy config.example.py config.py      (Windows)\n"
                 f"or set {KEY_ENV} and {SECRET_ENV}\nin the environment or in a .env file beside the script.")
    else:
        where = (f"Set {KEY_ENV} and {SECRET_ENV} in the environment,\n"
                 f"or in a .env file beside the script, a line each:\n    {KEY_ENV}=...\n    {SECRET_ENV}=...")
    return f"{where}\nNo keys yet? See it work with demo data: python websocket_stream.py --demo"


class Keys(NamedTuple):
    """A key id and its secret, and where they came from (for messages: never the keys)."""

    key: str
    secret: str
    source: str  # where they came from, for messages; never the keys themselves


def load_keys(folder: Path) -> Keys:
    """The keys from config.py in `folder`, else the environment, else a .env file there;
    ConfigError, saying where keys go, if none of them has any."""
    config_file = folder / "config.py"
    if config_file.exists():
        environment = {name: os.environ.get(name) for name in (KEY_ENV, SECRET_ENV)}  # before config.py runs
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
        key, secret = config.get("API_KEY", ""), config.get("SECRET_KEY", "")
        # config.example.py's copy reads the environment, or the .env beside it: a wrong key is there,
        # and its placeholder stands for a key missing there.
        for source, values in (("the environment", environment), (".env", dotenv_values(folder / ".env"))):
            if key and key == values.get(KEY_ENV) or secret and secret == values.get(SECRET_ENV):
                key, secret = ("" if value in PLACEHOLDERS else value for value in (key, secret))
                return Keys(key, secret, source)
        return Keys(key, secret, "config.py")
    if os.environ.get(KEY_ENV) or os.environ.get(SECRET_ENV):
        return Keys(os.environ.get(KEY_ENV, ""), os.environ.get(SECRET_ENV, ""), "the environment")
    dotenv = dotenv_values(folder / ".env")
    if not (dotenv.get(KEY_ENV) or dotenv.get(SECRET_ENV)):
        raise ConfigError(f"No Alpaca API keys found: no config.py,\nand no {KEY_ENV} "
                          f"in the environment or in .env.\n{how_to_set_keys(folder)}")
    return Keys(dotenv.get(KEY_ENV) or "", dotenv.get(SECRET_ENV) or "", ".env")


def check_keys(keys: Keys) -> Keys:
    """Refuse, before any connection, keys that cannot work; return them without stray spaces."""
    names = ("API_KEY", "SECRET_KEY") if keys.source == "config.py" else (KEY_ENV, SECRET_ENV)
    key, secret = (str(value or "").strip() for value in (keys.key, keys.secret))
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
        fix = FIX.get(keys.source, "").format(name=name)
        raise ConfigError(f"{name} from {keys.source}\n{problem}.\n{fix}".rstrip())  # a line each: 80 columns
    return Keys(key, secret, keys.source)
