//! The deployment files stay consistent with the CLI: every variable `docker-compose.yml` sets
//! for a Porter service is one that subcommand reads, and workers are never given the secret.
//! (Docker does not run on the development machines, so this is what keeps the files honest.)

use std::collections::BTreeMap;
use std::process::Command;

/// `service name → (command words, environment variable names)` of the compose file's
/// services that run Porter (a small line-based reader: the file is ours and plain).
fn porter_services(compose: &str) -> BTreeMap<String, (Vec<String>, Vec<String>)> {
    let mut services = BTreeMap::new();
    let mut current: Option<String> = None;
    let mut in_environment = false;
    for line in compose.lines() {
        let indent = line.len() - line.trim_start().len();
        let text = line.trim();
        if text.is_empty() || text.starts_with('#') {
            continue;
        }
        if indent == 2 && text.ends_with(':') {
            current = Some(text.trim_end_matches(':').to_owned());
            in_environment = false;
            continue;
        }
        let Some(service) = &current else { continue };
        if indent == 4 {
            in_environment = text == "environment:";
            if let Some(command) = text.strip_prefix("command:") {
                let words: Vec<String> = command
                    .trim()
                    .trim_matches(|c| c == '[' || c == ']')
                    .split(',')
                    .map(|w| w.trim().trim_matches('"').to_owned())
                    .collect();
                services
                    .entry(service.clone())
                    .or_insert_with(|| (Vec::new(), Vec::new()))
                    .0 = words;
            }
        } else if indent == 6
            && in_environment
            && let Some((name, _)) = text.split_once(':')
        {
            services
                .entry(service.clone())
                .or_insert_with(|| (Vec::new(), Vec::new()))
                .1
                .push(name.trim().to_owned());
        }
    }
    services.retain(|_, (command, _)| !command.is_empty());
    services
}

fn help_of(subcommand: &str) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_porter"))
        .args([subcommand, "--help"])
        .output()
        .expect("run porter --help");
    assert!(output.status.success(), "porter {subcommand} --help failed");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn compose_sets_only_variables_the_cli_reads() {
    let compose = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docker-compose.yml"
    ))
    .expect("read docker-compose.yml");
    let services = porter_services(&compose);
    assert!(
        services.contains_key("gateway") && services.contains_key("worker"),
        "compose runs a gateway and a worker: {services:?}"
    );
    assert!(
        services["gateway"].1.iter().any(|v| v == "PUSHER_SECRET"),
        "the reader found the gateway's environment: {services:?}"
    );
    for (service, (command, variables)) in &services {
        let subcommand = &command[0];
        let help = help_of(subcommand);
        for variable in variables {
            // RUST_LOG is read by the tracing filter, not by clap.
            if variable == "RUST_LOG" {
                continue;
            }
            assert!(
                help.contains(&format!("env: {variable}")),
                "service `{service}` sets {variable}, which `porter {subcommand}` does not read"
            );
        }
        if subcommand == "worker" {
            assert!(
                !variables.iter().any(|v| v.starts_with("PUSHER_")),
                "workers must never be given the Pusher credentials"
            );
        }
    }
}

#[test]
fn dockerfile_runs_porter_as_a_non_root_user() {
    let dockerfile =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../Dockerfile"))
            .expect("read Dockerfile");
    let user = dockerfile
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("the image sets a USER");
    assert_ne!(user.trim(), "root");
    assert!(dockerfile.contains("ENTRYPOINT [\"porter\"]"));
}
