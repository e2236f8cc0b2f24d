// Alpaca's own TypeScript SDK (@alpacahq/alpaca-trade-api, unmodified) as a client of a trading
// API's stream of order updates, for tests/test_paper_broker.py:
//     node ts_sdk_trade_updates.js URL COUNT
// Listens to the account's trade updates at URL (ws://HOST:PORT/stream) with the keys in
// APCA_API_KEY_ID and APCA_API_SECRET_KEY, prints "listening" once it does, then each update as
// one JSON line (the SDK's fields), and exits 0 after COUNT of them; 1 on an error it reports.
const { Alpaca } = require("@alpacahq/alpaca-trade-api");

const [url, count] = process.argv.slice(2);
// The SDK reads the keys from the environment; url is how its users point it elsewhere.
const stream = new Alpaca().trading.stream({ url, reconnect: false });
let left = Number(count);

stream.on("subscription", () => console.log("listening"));
stream.onTradeUpdate((update) => {
  console.log(JSON.stringify(update));
  if (--left === 0) process.exit(0);
});
stream.on("error", (error) => {
  console.error(`error: ${error}`);
  process.exit(1);
});
stream.subscribeTradeUpdates();
stream.connect();
