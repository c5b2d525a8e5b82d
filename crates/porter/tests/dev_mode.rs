//! `porter dev`, the README's run command: it starts with nothing installed and the two curl
//! commands it prints work exactly as printed, with signatures an SDK would accept.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::*;
use serde_json::Value;

#[test]
fn porter_dev_prints_commands_that_work_as_printed() {
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_porter"))
        .args(["dev", "--listen", &format!("127.0.0.1:{port}")])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start porter dev");
    let stdout = child.stdout.take().expect("stdout");
    let _dev = Proc {
        child,
        name: "dev".into(),
    };
    let mut commands = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("read porter dev's output");
        if let Some(command) = line.trim().strip_prefix("curl ") {
            commands.push(format!(
                "curl --retry 20 --retry-connrefused --retry-delay 1 {command}"
            ));
            if commands.len() == 2 {
                break;
            }
        }
    }
    assert_eq!(commands.len(), 2, "porter dev prints two curl commands");

    let run = |command: &str| -> Value {
        let output = Command::new("bash")
            .args(["-c", command])
            .output()
            .expect("run curl");
        assert!(output.status.success(), "{command} failed");
        serde_json::from_slice(&output.stdout).expect("curl printed JSON")
    };

    // The batch: a private channel with its retained events, a presence channel signed with
    // its channel_data, an encrypted channel with its shared secret.
    let batch = run(&commands[0]);
    let stream = &batch["private-stream@42"];
    assert_eq!(
        stream["auth"],
        expected_auth("123.456", "private-stream@42", None)
    );
    assert_eq!(stream["events"][0]["event"], "stream.online");
    let presence = &batch["presence-stream@42"];
    let channel_data = presence["channel_data"].as_str().expect("channel_data");
    assert_eq!(
        presence["auth"],
        expected_auth("123.456", "presence-stream@42", Some(channel_data))
    );
    assert_eq!(
        serde_json::from_str::<Value>(channel_data).unwrap()["user_info"]["name"],
        "Ann"
    );
    assert!(batch["private-encrypted-chat@9"]["shared_secret"].is_string());

    // The single-channel request pusher-js sends.
    let single = run(&commands[1]);
    assert_eq!(
        single["auth"],
        expected_auth("123.456", "private-user@7", None)
    );
}
