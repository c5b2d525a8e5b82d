// A stand-in for a Pusher-protocol realtime server (Pusher, sockudo, soketi), enough for
// pusher-js's user authentication: it greets each connection with
// `pusher:connection_established` and a fresh socket id, and on `pusher:signin` checks the
// signature over `socket_id::user::user_data` with the app secret, as those servers do,
// answering `pusher:signin_success` or a `pusher:error`. Subscriptions (pusher-js subscribes to
// `#server-to-user-{id}` after a sign-in) succeed; pings are answered.
//
// Usage: APP_KEY=… APP_SECRET=… node realtime-stand-in.mjs
// Prints one JSON line `{"listening": port}`, then one `{"signin": {…}}` line per sign-in.
import { createHmac, timingSafeEqual } from "node:crypto";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const { WebSocketServer } = require("ws");

const key = process.env.APP_KEY;
const secret = process.env.APP_SECRET;
if (!key || !secret) {
  console.error("APP_KEY and APP_SECRET are required");
  process.exit(2);
}

const print = (line) => process.stdout.write(JSON.stringify(line) + "\n");
const send = (socket, event, data, channel) =>
  socket.send(JSON.stringify({ event, data: JSON.stringify(data), ...(channel ? { channel } : {}) }));

/** Whether `auth` is `key:hex(HMAC-SHA256(secret, socket_id::user::user_data))`. */
function verifies(socketId, auth, userData) {
  if (typeof auth !== "string" || typeof userData !== "string") return false;
  const [givenKey, signature = ""] = auth.split(":");
  const expected = createHmac("sha256", secret)
    .update(`${socketId}::user::${userData}`)
    .digest("hex");
  const a = Buffer.from(signature);
  const b = Buffer.from(expected);
  return givenKey === key && a.length === b.length && timingSafeEqual(a, b);
}

const server = new WebSocketServer({ host: "127.0.0.1", port: 0 });
server.on("listening", () => print({ listening: server.address().port }));
server.on("connection", (socket, request) => {
  if (!request.url.startsWith(`/app/${key}`)) {
    send(socket, "pusher:error", { code: 4001, message: "unknown app key" });
    socket.close();
    return;
  }
  const socketId = `${1 + Math.floor(Math.random() * 1e6)}.${1 + Math.floor(Math.random() * 1e9)}`;
  send(socket, "pusher:connection_established", { socket_id: socketId, activity_timeout: 120 });
  socket.on("message", (raw) => {
    let message;
    try {
      message = JSON.parse(raw.toString());
    } catch {
      return;
    }
    // pusher-js sends `data` as an object for its own events.
    const data = typeof message.data === "string" ? JSON.parse(message.data) : message.data || {};
    switch (message.event) {
      case "pusher:ping":
        send(socket, "pusher:pong", {});
        break;
      case "pusher:signin": {
        const accepted = verifies(socketId, data.auth, data.user_data);
        let userData = null;
        try {
          userData = JSON.parse(data.user_data);
        } catch {}
        const valid = accepted && userData && typeof userData.id === "string" && userData.id !== "";
        print({ signin: { socket_id: socketId, accepted: Boolean(valid), user_data: data.user_data ?? null } });
        if (valid) {
          send(socket, "pusher:signin_success", { user_data: data.user_data });
        } else {
          send(socket, "pusher:error", { code: 4009, message: "invalid signin signature" });
        }
        break;
      }
      case "pusher:subscribe":
        send(socket, "pusher_internal:subscription_succeeded", {}, data.channel);
        break;
      default:
        break;
    }
  });
});
process.on("SIGTERM", () => server.close(() => process.exit(0)));
