"""Your Alpaca API keys. Copy this file to config.py, which git ignores:

    cp config.example.py config.py        (Windows: copy config.example.py config.py)

As it is, it takes the keys from the environment (APCA_API_KEY_ID and APCA_API_SECRET_KEY)
or from a .env file beside it. Or paste them below, in quotes, in place of the placeholders.
Paper and live accounts have different keys; either works for market data.
"""

import os
from pathlib import Path

from dotenv import load_dotenv

load_dotenv(Path(__file__).with_name(".env"))  # fills in what the environment does not set

API_KEY = os.getenv("APCA_API_KEY_ID") or "your_api_key_here"
SECRET_KEY = os.getenv("APCA_API_SECRET_KEY") or "your_secret_key_here"
