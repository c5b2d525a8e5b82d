//! No password of a broker or Redis URL reaches the output of `porter gateway` or `porter
//! worker`, whatever the URL (issue 10, finding 12): malformed URLs are refused at start-up
//! with exit code 2 and one line naming the variable, and the processes that do run, against
//! backends that refuse them, log their reconnect errors and serve `/metrics` and error
//! bodies without the password. Logs are read at debug level, so lapin's own lines count too.

mod common;

use std::process::ExitStatus;
use std::time::{Duration, Instant};

use common::*;

/// The passwords of the URLs below; none may appear anywhere.
const SECRETS: [&str; 4] = ["SECRETPW", "OTHERPW", "REDISPW", "VHOSTPW"];

fn assert_no_secret(what: &str, text: &str) {
    for secret in SECRETS {
        assert!(
            !text.contains(secret),
            "{what} shows the password {secret}:\n{text}"
        );
    }
}

fn deployment(test: &str, env: &[(&str, &str)]) -> Deployment {
    let mut deployment = Deployment::new(test)
        .capture_logs()
        .with_env("RUST_LOG", "debug");
    for (name, value) in env {
        deployment = deployment.with_env(name, value);
    }
    deployment
}

/// The exit status, once the process has exited (at most `timeout` from now).
fn exit_within(process: &mut Proc, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = process.child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

/// The lines a process wrote, without the harness's file headers.
fn output_lines(deployment: &Deployment) -> Vec<String> {
    deployment
        .captured_logs()
        .lines()
        .filter(|l| !l.starts_with("==> ") && !l.trim().is_empty())
        .map(str::to_owned)
        .collect()
}

#[test]
fn malformed_urls_are_refused_at_start_up_in_one_line_without_the_password() {
    let cases: [(&str, &str, &str); 5] = [
        // A list of nodes whose second is not a URL: named by its place, never quoted.
        (
            "AMQP_URL",
            "amqp://u:SECRETPW@127.0.0.1:1/x,amqp:v:OTHERPW@h:2",
            "node 2 of 2 is not a valid AMQP URL",
        ),
        // The same with a first node that reaches the broker, and an empty third.
        (
            "AMQP_URL",
            "amqp://guest:guest@127.0.0.1:5672/x,amqp://v:OTHERPW@h:2,",
            "node 3 of 3 is empty",
        ),
        ("AMQP_URL", "amqp://u:SECRETPW@[::1", "not a valid AMQP URL"),
        ("AMQP_URL", "amqp:u:SECRETPW@h", "not a valid AMQP URL"),
        (
            "REDIS_URL",
            "redis://:REDISPW@[::1",
            "not a usable Redis URL",
        ),
    ];
    for (variable, url, reason) in cases {
        for role in ["gateway", "worker"] {
            let deployment = deployment(
                &format!("redaction-start-{role}"),
                // Later settings win: the case's own URL replaces this Redis URL.
                &[
                    ("REDIS_URL", "redis://:REDISPW@127.0.0.1:1/"),
                    (variable, url),
                ],
            );
            let mut process = match role {
                "gateway" => deployment.gateway(),
                _ => deployment.worker(),
            };
            let status = exit_within(&mut process, Duration::from_secs(20));
            let lines = output_lines(&deployment);
            let what = format!("porter {role} with {variable}={url}");
            assert_eq!(
                status.and_then(|s| s.code()),
                Some(2),
                "{what} must exit with code 2: {lines:#?}"
            );
            assert_eq!(lines.len(), 1, "{what} prints one line: {lines:#?}");
            assert!(
                lines[0].starts_with("porter: ") && lines[0].contains(variable),
                "{what} names the variable: {}",
                lines[0]
            );
            assert!(lines[0].contains(reason), "{what}: {}", lines[0]);
            assert_no_secret(&what, &lines[0]);
        }
    }
}

#[tokio::test]
async fn unreachable_backends_are_reported_without_the_password() {
    // Port 1 refuses connections: both processes run, retry and log every failure.
    let deployment = deployment(
        "redaction-unreachable",
        &[
            ("AMQP_URL", "amqp://u:SECRETPW@127.0.0.1:1/%2f"),
            ("REDIS_URL", "redis://:REDISPW@127.0.0.1:1/"),
        ],
    );
    let mut gateway = deployment.gateway();
    let mut worker = deployment.worker();
    let client = reqwest::Client::new();
    let started = Instant::now();
    let mut bodies = String::new();
    let urls = [
        deployment.url("/metrics"),
        deployment.url("/readyz"),
        deployment.batch_url("123.456", &["private-stream@42"]),
    ];
    while started.elapsed() < Duration::from_secs(3) {
        for url in &urls {
            if let Ok(response) = client.get(url).bearer_auth(token("7", &[])).send().await {
                bodies.push_str(&response.text().await.unwrap_or_default());
                bodies.push('\n');
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    gateway.kill();
    worker.kill();
    let logs = deployment.captured_logs();
    assert!(
        logs.contains("cannot connect to the broker"),
        "the gateway logged its reconnects: {logs}"
    );
    assert!(
        logs.contains("worker cannot connect to the broker"),
        "the worker logged its reconnects: {logs}"
    );
    assert!(
        bodies.contains("porter_channels_total"),
        "/metrics answered while the backends were down: {bodies}"
    );
    assert_no_secret("the logs", &logs);
    assert_no_secret("the HTTP bodies", &bodies);
}

#[test]
fn what_the_broker_echoes_back_is_masked_in_lapins_own_log_lines() {
    // The vhost `amqp://v:VHOSTPW@h` does not exist: RabbitMQ refuses it by name, and lapin
    // logs that refusal itself, at ERROR, before Porter sees the error.
    let deployment = deployment(
        "redaction-echo",
        &[(
            "AMQP_URL",
            "amqp://guest:guest@127.0.0.1:5672/amqp:%2F%2Fv:VHOSTPW@h",
        )],
    );
    let mut gateway = deployment.gateway();
    let mut worker = deployment.worker();
    let deadline = Instant::now() + Duration::from_secs(20);
    let refusals = |logs: &str| logs.matches("not found").count();
    while refusals(&deployment.captured_logs()) < 4 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    gateway.kill();
    worker.kill();
    let logs = deployment.captured_logs();
    assert!(
        logs.contains("lapin") && refusals(&logs) >= 4,
        "RabbitMQ refused the vhost and lapin logged it: {logs}"
    );
    assert!(logs.contains("vhost amqp://***@h not found"), "{logs}");
    assert_no_secret("the logs", &logs);
}
