// Publishes through Porter with the official Node server SDK (`pusher` 5), pointed at it by host
// and port only, and prints one JSON line per call: {"call", "ok": true, "status", "body"} or
// {"call", "ok": false, "status", "body", "message"}.
//
// Environment: PORTER_PORT, APP_ID, KEY, SECRET, and CALLS, a JSON array of
// {"trigger": [channels, event, data, params?]} and {"triggerBatch": [events]} run in order.
import Pusher from "pusher";

const pusher = new Pusher({
  appId: process.env.APP_ID,
  key: process.env.KEY,
  secret: process.env.SECRET,
  host: "127.0.0.1",
  port: process.env.PORTER_PORT,
  useTLS: false,
});

for (const call of JSON.parse(process.env.CALLS)) {
  const [name, args] = Object.entries(call)[0];
  try {
    const response = await pusher[name](...args);
    const body = await response.text();
    console.log(JSON.stringify({ call: name, ok: true, status: response.status, body }));
  } catch (error) {
    console.log(
      JSON.stringify({
        call: name,
        ok: false,
        status: error.status ?? null,
        body: error.body ?? null,
        message: String(error.message),
      }),
    );
  }
}
