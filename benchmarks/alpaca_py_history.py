"""alpaca-py's own way to a day of history: StockHistoricalDataClient.get_stock_trades, every
page read into one list (a TradeSet of pydantic models) before it returns; against the local
server, the keys from the environment.

    python alpaca_py_history.py URL DAY    URL: the server's http://127.0.0.1:PORT
"""

import os
import sys
from datetime import date, datetime, time
from zoneinfo import ZoneInfo

from alpaca.data.historical import StockHistoricalDataClient
from alpaca.data.requests import StockTradesRequest

url, day = sys.argv[1], date.fromisoformat(sys.argv[2])
new_york = ZoneInfo("America/New_York")
client = StockHistoricalDataClient(os.environ["APCA_API_KEY_ID"], os.environ["APCA_API_SECRET_KEY"], url_override=url)
# New York's 4:00 to 20:00, as --history reads a day of stocks
asked = StockTradesRequest(symbol_or_symbols="SPY", start=datetime.combine(day, time(4), new_york),
                           end=datetime.combine(day, time(20), new_york))
trades = client.get_stock_trades(asked)
print(f"read {len(trades['SPY'])} trades", file=sys.stderr)
