//! Pusher user authentication end to end over the real RabbitMQ and Redis: `porter gateway`
//! and `porter worker` processes, the user's info and watchlist set through the admin API, and
//! the official pusher-js 8 (`tests/js/signin.mjs`) calling `signin()` against a Pusher-protocol
//! stand-in (`tests/js/realtime-stand-in.mjs`) that verifies the signature over
//! `socket_id::user::user_data` with the app secret, as Pusher, sockudo and soketi do.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{ChildStdout, Stdio};

use common::{Deployment, Proc, SECRET, js};
use serde_json::{Value, json};

const ADMIN_TOKEN: &str = "user-auth-admin";

/// The policy: the built-in one, whose `[signin]` signs in authenticated users with their
/// stored info and watchlist.
fn deployment() -> Deployment {
    Deployment::new("user_auth").with_env("PORTER_ADMIN_TOKEN", ADMIN_TOKEN)
}

/// The realtime stand-in, its port, and its output (one JSON line per sign-in).
fn stand_in() -> (Proc, u16, BufReader<ChildStdout>) {
    let mut child = js::node(
        "realtime-stand-in.mjs",
        &[
            ("APP_KEY", common::KEY.to_owned()),
            ("APP_SECRET", SECRET.to_owned()),
        ],
    )
    .stdout(Stdio::piped())
    .spawn()
    .expect("start the realtime stand-in");
    let mut lines = BufReader::new(child.stdout.take().expect("its stdout"));
    let first = next_line(&mut lines);
    let port = first["listening"]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .unwrap_or_else(|| panic!("the stand-in did not say its port: {first}"));
    let proc = Proc {
        child,
        name: "realtime-stand-in".into(),
    };
    (proc, port, lines)
}

fn next_line(lines: &mut BufReader<ChildStdout>) -> Value {
    let mut line = String::new();
    lines.read_line(&mut line).expect("read the stand-in");
    serde_json::from_str(&line).unwrap_or_else(|_| panic!("not a JSON line: {line:?}"))
}

/// Runs pusher-js's `signin()` through Porter with these credentials; its outcome line.
async fn pusher_js_signin(
    deployment: &Deployment,
    ws_port: u16,
    credentials: &[(&str, String)],
) -> Value {
    let mut vars = vec![
        ("APP_KEY", common::KEY.to_owned()),
        ("WS_PORT", ws_port.to_string()),
        ("USER_AUTH_ENDPOINT", deployment.url("/pusher/user-auth")),
    ];
    vars.extend(credentials.iter().cloned());
    let mut command = js::node("signin.mjs", &vars);
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("the node runner")
        .expect("run signin.mjs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(stdout.lines().last().unwrap_or_default()).unwrap_or_else(|_| {
        panic!(
            "signin.mjs printed no outcome: {stdout} / {}",
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

/// HMAC-SHA256 with the app secret, in hex: computed here, apart from the code under test.
fn hmac_hex(text: &str) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(text.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

async fn admin_put(deployment: &Deployment, path: &str, body: Value) {
    let response = reqwest::Client::new()
        .put(deployment.url(path))
        .bearer_auth(ADMIN_TOKEN)
        .json(&body)
        .send()
        .await
        .expect("the admin API answers");
    assert_eq!(response.status(), 200, "{path}");
}

#[tokio::test]
async fn pusher_js_signs_in_through_porter_with_the_stored_info_and_watchlist() {
    let deployment = deployment();
    let _gateway = deployment.gateway();
    let _worker = deployment.worker();
    deployment.wait_ready().await;
    let (_stand_in, ws_port, mut seen) = stand_in();

    admin_put(
        &deployment,
        "/admin/users/alice/info",
        json!({"name": "Alice", "plan": {"tier": 2}}),
    )
    .await;
    admin_put(
        &deployment,
        "/admin/users/alice/watchlist",
        json!(["bob", "carol"]),
    )
    .await;

    let token = common::token("alice", &[("jti", json!("alice-1"))]);
    let outcome = pusher_js_signin(&deployment, ws_port, &[("TOKEN", token.clone())]).await;
    assert_eq!(outcome["outcome"], "signed_in", "{outcome}");
    let expected = json!({
        "id": "alice",
        "user_info": {"name": "Alice", "plan": {"tier": 2}},
        "watchlist": ["bob", "carol"],
    });
    assert_eq!(outcome["user_data"], expected);
    // The stand-in checked the signature over exactly the string Porter returned.
    let signin = next_line(&mut seen);
    assert_eq!(signin["signin"]["accepted"], true, "{signin}");
    let signed: Value =
        serde_json::from_str(signin["signin"]["user_data"].as_str().unwrap()).unwrap();
    assert_eq!(signed, expected);

    // The same user through a session (X-Session-ID) after POST /auth.
    let opened: Value = reqwest::Client::new()
        .post(deployment.url("/auth"))
        .json(&json!({"email": "alice@example.com", "token": common::token("alice", &[("email", json!("alice@example.com"))])}))
        .send()
        .await
        .expect("POST /auth answers")
        .json()
        .await
        .expect("JSON");
    let session = opened["sessionId"]
        .as_str()
        .expect("a session id")
        .to_owned();
    let outcome = pusher_js_signin(&deployment, ws_port, &[("SESSION_ID", session)]).await;
    assert_eq!(outcome["outcome"], "signed_in", "{outcome}");
    assert_eq!(outcome["user_data"]["id"], "alice");
    assert_eq!(next_line(&mut seen)["signin"]["accepted"], true);

    // Refused by Porter: pusher-js reports the status, and the stand-in is never asked.
    let anonymous = pusher_js_signin(&deployment, ws_port, &[]).await;
    assert_eq!(
        (anonymous["outcome"].as_str(), anonymous["status"].as_u64()),
        (Some("signin_error"), Some(403)),
        "{anonymous}"
    );
    let revoked = reqwest::Client::new()
        .post(deployment.url("/admin/tokens/revoke"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"token": token}))
        .send()
        .await
        .expect("revoke answers");
    assert_eq!(revoked.status(), 200);
    let outcome = pusher_js_signin(&deployment, ws_port, &[("TOKEN", token)]).await;
    assert_eq!(
        (outcome["outcome"].as_str(), outcome["status"].as_u64()),
        (Some("signin_error"), Some(401)),
        "{outcome}"
    );
}

/// The wire format without a client library: the form body and the answer's shape, the
/// signature recomputed here, and the refusals of a policy without `[signin]`.
#[tokio::test]
async fn the_endpoint_answers_in_the_sdks_shape_and_refuses_without_a_section() {
    let deployment = deployment();
    let _gateway = deployment.gateway();
    let _worker = deployment.worker();
    deployment.wait_ready().await;
    let client = reqwest::Client::new();
    let token = common::token("dan", &[("name", json!("Dan"))]);
    let response = client
        .post(deployment.url("/pusher/user-auth"))
        .bearer_auth(&token)
        .form(&[("socket_id", "123.456"), ("extra", "param")])
        .send()
        .await
        .expect("user-auth answers");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("JSON");
    let user_data = body["user_data"].as_str().expect("user_data");
    // Nothing stored for dan: the token's name, and an empty watchlist.
    assert_eq!(
        user_data,
        r#"{"id":"dan","user_info":{"name":"Dan"},"watchlist":[]}"#
    );
    assert_eq!(
        body["auth"],
        format!(
            "{}:{}",
            common::KEY,
            hmac_hex(&format!("123.456::user::{user_data}"))
        )
    );
    let response = client
        .post(deployment.url("/pusher/user-auth"))
        .bearer_auth(&token)
        .form(&[("socket_id", "123")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    drop((_gateway, _worker));

    let without = Deployment::new("user_auth_off")
        .with_policy("[[rule]]\nname = \"r\"\npattern = \"private-{x}\"\nallow = \"anyone\"\n");
    let _gateway = without.gateway();
    let _worker = without.worker();
    without.wait_ready().await;
    let response = client
        .post(without.url("/pusher/user-auth"))
        .bearer_auth(&token)
        .form(&[("socket_id", "123.456")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "signin_not_configured");
}
