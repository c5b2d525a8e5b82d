// Runs pusher-js 8 (its Node build) against a Pusher-protocol server and signs in through
// Porter's `POST /pusher/user-auth` with `userAuthentication` over ajax, as an application
// does, then prints the outcome as one JSON line:
//   {"outcome": "signed_in", "user_data": {…}}            the server accepted the sign-in
//   {"outcome": "signin_error", "status": 403, "error": …} Porter refused
//   {"outcome": "timeout"}                                  nothing within 15 s
//
// Environment: APP_KEY, WS_PORT (the realtime server), USER_AUTH_ENDPOINT (Porter's URL),
// and the caller's credentials: TOKEN (a bearer token) and/or SESSION_ID (X-Session-ID).
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const Pusher = require("pusher-js");

const headers = {};
if (process.env.TOKEN) headers.Authorization = `Bearer ${process.env.TOKEN}`;
if (process.env.SESSION_ID) headers["X-Session-ID"] = process.env.SESSION_ID;

const pusher = new Pusher(process.env.APP_KEY, {
  cluster: "local",
  wsHost: "127.0.0.1",
  wsPort: Number(process.env.WS_PORT),
  forceTLS: false,
  enabledTransports: ["ws"],
  disableStats: true,
  userAuthentication: {
    endpoint: process.env.USER_AUTH_ENDPOINT,
    transport: "ajax",
    params: { app_param: "from-the-app" },
    headers,
  },
});

const done = (line, code = 0) => {
  process.stdout.write(JSON.stringify(line) + "\n");
  pusher.disconnect();
  process.exit(code);
};

setTimeout(() => done({ outcome: "timeout" }, 1), 15000);
pusher.user.bind("pusher:signin_error", (error) =>
  done({ outcome: "signin_error", status: error.status ?? null, error: error.error ?? null }),
);
pusher.connection.bind("error", (error) =>
  done({ outcome: "connection_error", error: String(error?.error?.data?.message ?? error?.type) }, 1),
);
pusher.signin();
// Resolved on a successful sign-in, and on a failed one (then there is no user data).
pusher.user.signinDonePromise.then(() => {
  if (pusher.user.user_data) done({ outcome: "signed_in", user_data: pusher.user.user_data });
});
