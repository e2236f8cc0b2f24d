// Alpaca's own TypeScript SDK (@alpacahq/alpaca-trade-api, unmodified) as a client of a server
// that speaks Alpaca's stream protocol, for tests/test_server.py:
//     node ts_sdk_client.js URL COUNT
// Subscribes to the trades and imbalances of SPY and TSLA with the keys in APCA_API_KEY_ID and
// APCA_API_SECRET_KEY, prints each message it gets as one JSON line (its kind and the SDK's
// fields), and exits 0 after COUNT of them; 1 on an error the SDK reports.
const { Alpaca } = require("@alpacahq/alpaca-trade-api");

const [url, count] = process.argv.slice(2);
// The SDK reads the keys from the environment; url is how its users point it elsewhere.
const stream = new Alpaca().marketData.stockStream({ url, reconnect: false });
let left = Number(count);

function print(kind) {
  return (message) => {
    console.log(JSON.stringify({ kind, ...message }));
    if (--left === 0) process.exit(0);
  };
}

stream.onTrade(print("trade"));
stream.onImbalance(print("imbalance"));
stream.on("error", (error) => {
  console.error(`error: ${error}`);
  process.exit(1);
});
stream.subscribeForTrades(["SPY", "TSLA"]);
stream.subscribeForImbalances(["SPY", "TSLA"]);
stream.connect();
