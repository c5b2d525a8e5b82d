// Writes crates/porter-core/tests/vectors/publish_requests.json: signed publish requests as the
// official `pusher` 5 server SDK writes them (run here: `node gen_publish_vectors.mjs > ../../../porter-core/tests/vectors/publish_requests.json`).
import { createRequire } from "module";
const require = createRequire(process.cwd() + "/");
const requests = require("pusher/lib/requests");
const Token = require("pusher/lib/token");
const util = require("pusher/lib/util");
const app = { app_id: "4321", key: "f00dkey", secret: "s3cr3t-beef" };
const token = new Token(app.key, app.secret);
const cases = [];
const bodies = [
  ["events", { name: "my-event", data: JSON.stringify({ hello: "world" }), channels: ["my-channel"] }],
  ["events", { name: "order.updated", data: "{\"id\":7,\"é\":\"ü\"}", channels: ["private-order@7", "presence-stream@42"], socket_id: "123.456" }],
  ["batch_events", { batch: [
    { channel: "private-stream@42", name: "stream.online", data: "{\"online\":true}" },
    { channel: "my-channel", name: "e2", data: "x", socket_id: "1.2", info: "subscription_count" },
  ] }],
];
let t = 1700000000;
for (const [kind, body] of bodies) {
  const text = JSON.stringify(body);
  const path = `/apps/${app.app_id}/${kind}`;
  Date.now = () => t * 1000 + 345;
  const query = requests.createSignedQueryString(token, { method: "POST", path, body: text });
  cases.push({ kind, path, timestamp: t, body: text, body_md5: util.getMD5(text), query });
  t += 77;
}
console.log(JSON.stringify({ sdk: "pusher (Node) " + require("pusher/package.json").version, app, cases }, null, 2));
