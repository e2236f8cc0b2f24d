// Alpaca's own TypeScript SDK (@alpacahq/alpaca-trade-api, unmodified) as a client of a server
// that speaks Alpaca's stream protocol, for tests/test_serve.py:
//     node ts_sdk_client.js URL COUNT
// Subscribes to the trades and imbalances of SPY and TSLA with the keys in APCA_API_KEY_ID and
// APCA_API_SECRET_KEY, prints each message it gets as one JSON line (its kind and the SDK's
// fields), and exits 0 once it has COUNT trades of each symbol; 1 on an error the SDK reports.
// Of each symbol: SPY's trades may flow before TSLA's subscription has gone upstream.
const { Alpaca } = require("@alpacahq/alpaca-trade-api");

const [url, count] = process.argv.slice(2);
// The SDK reads the keys from the environment; url is how its users point it elsewhere.
const stream = new Alpaca().marketData.stockStream({ url, reconnect: false });
const symbols = ["SPY", "TSLA"];
const trades = new Map(symbols.map((symbol) => [symbol, 0]));

function print(kind, message) {
  console.log(JSON.stringify({ kind, ...message }));
}

stream.onTrade((trade) => {
  print("trade", trade);
  trades.set(trade.symbol, trades.get(trade.symbol) + 1);
  if (symbols.every((symbol) => trades.get(symbol) >= Number(count))) process.exit(0);
});
stream.onImbalance((imbalance) => print("imbalance", imbalance));
stream.on("error", (error) => {
  console.error(`error: ${error}`);
  process.exit(1);
});
stream.subscribeForTrades(symbols);
stream.subscribeForImbalances(symbols);
stream.connect();
