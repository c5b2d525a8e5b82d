//! The deployment files stay consistent with the CLI and keep their security properties:
//! every variable `docker-compose.yml` sets for a Porter service is one that subcommand reads,
//! authorizing workers are never given the secret (the events worker only the key and secret
//! it signs forwarded requests with), nothing but the load balancer is published, no
//! credential has a default (nor is guest's), each Porter half logs in to RabbitMQ as its own
//! least-privilege user, the gateways trust exactly nginx's address, and nginx overwrites
//! `X-Forwarded-For`. (Docker does not run on the development machines, so this is what keeps
//! the files honest.)
//!
//! The Kubernetes manifests (`deploy/k8s/`), rendered by `kubectl kustomize` as CI renders
//! them: every flag and variable they give Porter is one the CLI takes, KEDA scales workers on
//! both task queues and events workers on the events queue with the deployment's prefix, the grace periods cover the drains, pods run
//! unprivileged with probes and resources, and a policy change rolls the pods.
//!
//! The dashboard and the alert rules name only metrics and labels that a running gateway's and
//! worker's `/metrics` expose (over the real RabbitMQ and Redis), or RabbitMQ's own, listed.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::process::Command;

/// What these tests read of one compose service.
#[derive(Debug, Default)]
struct Service {
    /// Built from this repository's Dockerfile: a Porter service.
    builds_porter: bool,
    command: Vec<String>,
    environment: BTreeMap<String, String>,
    ports: Vec<String>,
    ipv4_address: Option<String>,
}

/// The compose file's services and its default network's `subnet` and `ip_range` (a small
/// line-based reader: the file is ours and plain; block scalars are skipped).
struct Compose {
    services: BTreeMap<String, Service>,
    subnet: Option<String>,
    ip_range: Option<String>,
}

fn unquote(text: &str) -> String {
    text.trim().trim_matches('"').to_owned()
}

fn read_compose(compose: &str) -> Compose {
    let mut services = BTreeMap::<String, Service>::new();
    let (mut subnet, mut ip_range) = (None, None);
    let mut top = String::new();
    let mut current: Option<String> = None;
    let mut section = String::new();
    for line in compose.lines() {
        let indent = line.len() - line.trim_start().len();
        let text = line.trim();
        if text.is_empty() || text.starts_with('#') {
            continue;
        }
        if indent == 0 {
            top = text.trim_end_matches(':').to_owned();
            current = None;
            continue;
        }
        if top == "networks" {
            if let Some(value) = text.trim_start_matches("- ").strip_prefix("subnet:") {
                subnet = Some(unquote(value));
            } else if let Some(value) = text.strip_prefix("ip_range:") {
                ip_range = Some(unquote(value));
            }
            continue;
        }
        if top != "services" {
            continue;
        }
        if indent == 2 && text.ends_with(':') {
            let name = text.trim_end_matches(':').to_owned();
            services.entry(name.clone()).or_default();
            current = Some(name);
            section.clear();
            continue;
        }
        let Some(service) = current.as_ref().and_then(|name| services.get_mut(name)) else {
            continue;
        };
        if indent == 4 {
            let (key, value) = text.split_once(':').unwrap_or((text, ""));
            section = key.to_owned();
            match key {
                "build" => service.builds_porter = value.trim() == ".",
                "command" if !value.trim().is_empty() => {
                    service.command = value
                        .trim()
                        .trim_matches(|c| c == '[' || c == ']')
                        .split(',')
                        .map(unquote)
                        .collect();
                }
                _ => {}
            }
        } else if indent == 6 && section == "environment" {
            if let Some((name, value)) = text.split_once(':') {
                service
                    .environment
                    .insert(name.trim().to_owned(), unquote(value));
            }
        } else if indent == 6 && section == "ports" {
            service.ports.push(unquote(text.trim_start_matches('-')));
        } else if section == "networks"
            && let Some(value) = text.strip_prefix("ipv4_address:")
        {
            service.ipv4_address = Some(unquote(value));
        }
    }
    Compose {
        services,
        subnet,
        ip_range,
    }
}

fn repository_file(name: &str) -> String {
    let path = format!("{}/../../{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

fn compose_text() -> String {
    repository_file("docker-compose.yml")
}

fn compose() -> Compose {
    let compose = read_compose(&compose_text());
    for name in ["rabbitmq", "redis", "gateway", "worker", "lb"] {
        assert!(
            compose.services.contains_key(name),
            "the reader found service {name}: {:?}",
            compose.services.keys()
        );
    }
    compose
}

/// The file without its comment lines (comments may explain what the settings avoid).
fn without_comments(text: &str) -> String {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every `${NAME…}` reference of the text, with what follows the name (`:?…`, `:-…` or ``).
fn references(text: &str) -> Vec<(String, String)> {
    text.split("${")
        .skip(1)
        .filter_map(|rest| rest.split_once('}'))
        .map(|(inside, _)| {
            let end = inside
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(inside.len());
            (inside[..end].to_owned(), inside[end..].to_owned())
        })
        .collect()
}

fn is_secret(name: &str) -> bool {
    ["PASSWORD", "SECRET", "KEY", "TOKEN"]
        .iter()
        .any(|word| name.contains(word))
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
    let compose = compose();
    let porter: Vec<_> = compose
        .services
        .iter()
        .filter(|(_, s)| s.builds_porter)
        .collect();
    assert_eq!(
        porter.len(),
        3,
        "compose runs a gateway, a worker and an events worker"
    );
    assert!(
        compose.services["events-worker"]
            .command
            .iter()
            .any(|a| a == "--events"),
        "the events worker consumes the events queue"
    );
    assert!(
        compose.services["gateway"]
            .environment
            .contains_key("PUSHER_SECRET"),
        "the reader found the gateway's environment: {:?}",
        compose.services["gateway"]
    );
    for (
        service,
        Service {
            command,
            environment,
            ..
        },
    ) in porter
    {
        let subcommand = &command[0];
        let help = help_of(subcommand);
        for variable in environment.keys() {
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
            let pusher: Vec<&str> = environment
                .keys()
                .map(String::as_str)
                .filter(|v| v.starts_with("PUSHER_"))
                .collect();
            assert_eq!(
                pusher,
                allowed_pusher_variables(command.iter().map(String::as_str)),
                "service `{service}`: an authorizing worker gets no Pusher credential, an events worker only the key and secret upstream requests are signed with"
            );
        }
    }
}

/// The Pusher variables a `porter worker` with these arguments may be given: none, or with
/// `--events` the key and secret it signs forwarded requests with (never the encryption master
/// key, the app id or the JWT secret).
fn allowed_pusher_variables<'a>(args: impl IntoIterator<Item = &'a str>) -> Vec<&'static str> {
    if args.into_iter().any(|a| a == "--events") {
        vec!["PUSHER_KEY", "PUSHER_SECRET"]
    } else {
        Vec::new()
    }
}

#[test]
fn nothing_but_the_load_balancer_is_published() {
    let compose = compose();
    assert!(
        !compose.services["lb"].ports.is_empty(),
        "the load balancer is published: {:?}",
        compose.services["lb"]
    );
    for (name, service) in &compose.services {
        for port in &service.ports {
            assert!(
                !port.contains("0.0.0.0"),
                "service `{name}` publishes {port} on every interface"
            );
            if name != "lb" {
                assert!(
                    port.starts_with("127.0.0.1:"),
                    "service `{name}` publishes {port} beyond the host's loopback"
                );
            }
            assert!(
                port.rsplit(':').next() != Some("5672"),
                "service `{name}` publishes the AMQP port ({port})"
            );
        }
    }
    assert!(
        compose.services["rabbitmq"]
            .ports
            .iter()
            .all(|p| p == "127.0.0.1:15672:15672"),
        "RabbitMQ publishes only its management UI, on loopback: {:?}",
        compose.services["rabbitmq"].ports
    );
}

#[test]
fn credentials_come_from_the_environment_without_defaults() {
    let text = compose_text();
    let settings = without_comments(&text);
    assert!(
        !settings.to_lowercase().contains("guest"),
        "no guest credentials in docker-compose.yml"
    );
    let references = references(&settings);
    assert!(
        references.iter().any(|(name, _)| name == "PUSHER_SECRET"),
        "the reader found the references: {references:?}"
    );
    for (name, rest) in &references {
        if is_secret(name) {
            assert!(
                rest.starts_with(":?"),
                "{name} must be required (`${{{name}:?…}}`), not defaulted: `{rest}`"
            );
        }
    }
    let compose = compose();
    for (service, user, password) in [
        ("gateway", "porter-gateway", "RABBITMQ_GATEWAY_PASSWORD"),
        ("worker", "porter-worker", "RABBITMQ_WORKER_PASSWORD"),
        ("events-worker", "porter-events", "RABBITMQ_EVENTS_PASSWORD"),
    ] {
        let url = &compose.services[service].environment["AMQP_URL"];
        assert!(
            url.starts_with(&format!("amqp://{user}:${{{password}:?")),
            "`{service}` logs in as {user} with {password}: {url}"
        );
    }
}

#[test]
fn env_example_lists_every_required_variable_with_no_secret_in_it() {
    let example = repository_file(".env.example");
    let values: BTreeMap<&str, &str> = example
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(name, value)| (name.trim(), value.trim()))
        .collect();
    let required: Vec<String> = references(&without_comments(&compose_text()))
        .into_iter()
        .filter(|(_, rest)| rest.starts_with(":?"))
        .map(|(name, _)| name)
        .collect();
    assert!(required.len() >= 8, "{required:?}");
    for name in &required {
        let Some(value) = values.get(name.as_str()) else {
            panic!(".env.example does not list {name}");
        };
        if is_secret(name) {
            assert!(
                value.is_empty(),
                ".env.example must leave {name} empty (compose then refuses to start), not `{value}`"
            );
        }
    }
}

fn ipv4_net(cidr: &str) -> (u32, u32) {
    let (address, prefix) = cidr.split_once('/').expect("a CIDR");
    let address: Ipv4Addr = address.parse().expect("an IPv4 network");
    let prefix: u32 = prefix.parse().expect("a prefix length");
    let mask = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
    (u32::from(address) & mask, mask)
}

fn in_net(address: Ipv4Addr, cidr: &str) -> bool {
    let (network, mask) = ipv4_net(cidr);
    u32::from(address) & mask == network
}

#[test]
fn the_gateways_trust_exactly_the_load_balancer() {
    let compose = compose();
    let trusted = &compose.services["gateway"].environment["PORTER_TRUSTED_PROXIES"];
    let address: Ipv4Addr = trusted.parse().unwrap_or_else(|_| {
        panic!("PORTER_TRUSTED_PROXIES is one address, not a list or a network: {trusted}")
    });
    let lb = compose.services["lb"]
        .ipv4_address
        .as_deref()
        .expect("the load balancer has a fixed address");
    assert_eq!(
        trusted, lb,
        "the gateways trust the load balancer's address"
    );
    let subnet = compose.subnet.as_deref().expect("the network has a subnet");
    let ip_range = compose
        .ip_range
        .as_deref()
        .expect("dynamic addresses come from an ip_range");
    assert!(in_net(address, subnet), "{address} is in {subnet}");
    assert!(
        !in_net(address, ip_range),
        "{address} is outside {ip_range}, so no other container can be given it"
    );
    for (name, service) in &compose.services {
        if name != "lb" {
            assert_eq!(service.ipv4_address, None, "only nginx has a fixed address");
        }
    }
}

#[test]
fn nginx_overwrites_x_forwarded_for_with_the_peer_address() {
    let nginx = without_comments(&repository_file("deploy/nginx.conf"));
    let settings: Vec<String> = nginx
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|l| l.to_lowercase().contains("x-forwarded-for"))
        .collect();
    assert_eq!(
        settings,
        ["proxy_set_header X-Forwarded-For $remote_addr;"],
        "nginx sets X-Forwarded-For once, to the peer it saw"
    );
    assert!(!nginx.contains("$proxy_add_x_forwarded_for"));
}

/// The JSON body the `rabbitmq-users` step sends for `permissions/%2F/{user}`.
fn permissions_of(compose: &str, user: &str) -> serde_json::Value {
    let marker = format!("api permissions/%2F/{user} '");
    let line = compose
        .lines()
        .find_map(|l| l.trim().strip_prefix(&marker))
        .unwrap_or_else(|| panic!("rabbitmq-users sets the permissions of {user}"));
    let body = line.trim_end_matches('\'').replace("$$", "$");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{user}'s permissions: {e}: {body}"))
}

#[test]
fn gateways_and_workers_have_least_privilege_rabbitmq_users() {
    let compose = compose_text();
    let worker = permissions_of(&compose, "porter-worker");
    assert_eq!(
        worker,
        serde_json::json!({
            "configure": "^(auth|auth/high)$",
            "write": "^amq\\.default$",
            "read": "^(auth|auth/high)$",
        }),
        "a worker declares and consumes the task queues and replies on the default exchange"
    );
    let gateway = permissions_of(&compose, "porter-gateway");
    assert_eq!(
        gateway["read"], "^(amq\\.gen-.*|amq\\.rabbitmq\\.reply-to|data\\..+\\.published|events)$",
        "a gateway reads its reply queue and binds session exchanges; never a task queue \
         (read on `events` is what RabbitMQ asks of whoever declares a queue with a dead-letter \
         exchange)"
    );
    assert_eq!(
        gateway["write"], "^(amq\\.default|data\\.[0-9a-f]{32}\\.lease)$",
        "a gateway publishes on the default exchange and binds lease queues"
    );
    assert_eq!(
        gateway["configure"],
        "^(auth|auth/high|amq\\.gen-.*|data\\..+\\.published|data\\.[0-9a-f]{32}\\.lease|events|events\\.dead)$",
        "a gateway declares the task queues, its reply queue, session exchanges, leases and the events queues"
    );
    let events = permissions_of(&compose, "porter-events");
    assert_eq!(
        events,
        serde_json::json!({
            "configure": "^(events|events\\.dead)$",
            "write": "^(amq\\.default|data\\..+\\.published)$",
            "read": "^events$",
        }),
        "an events worker declares and consumes the events queue (the dead-letter declaration \
         needs write on the default exchange) and publishes to session exchanges; no task queue"
    );
}

#[test]
fn dockerfile_runs_porter_as_a_non_root_user() {
    let dockerfile = repository_file("Dockerfile");
    let user = dockerfile
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("the image sets a USER");
    assert_ne!(user.trim(), "root");
    assert!(dockerfile.contains("ENTRYPOINT [\"porter\"]"));
}

#[test]
fn dockerfile_copies_only_what_the_build_reads() {
    // `COPY . .` would put a local `.env`, the compose file's credentials, into a layer.
    let dockerfile = repository_file("Dockerfile");
    for line in dockerfile.lines().filter(|l| l.starts_with("COPY ")) {
        let sources: Vec<&str> = line.split_whitespace().skip(1).collect();
        let sources = &sources[..sources.len() - 1];
        assert!(
            !sources.iter().any(|s| *s == "." || s.starts_with('*')),
            "the Dockerfile copies the whole context: {line}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Kubernetes manifests (deploy/k8s/), rendered by `kubectl kustomize` as CI renders them.
// ---------------------------------------------------------------------------------------------

use serde_json::Value;

/// Every kustomization CI renders: the base and each overlay.
const KUSTOMIZATIONS: [&str; 4] = [
    "deploy/k8s/base",
    "deploy/k8s/overlays/dev",
    "deploy/k8s/overlays/production",
    "deploy/k8s/overlays/production-servicemonitor",
];

/// A line of block YAML: its indent, its text without the indent, and the whole line (blank
/// lines are kept for block scalars, and skipped everywhere else).
struct YamlLine<'a> {
    indent: usize,
    text: &'a str,
    raw: &'a str,
}

/// Moves past blank lines.
fn skip_blank(lines: &[YamlLine], at: &mut usize) {
    while lines.get(*at).is_some_and(|l| l.text.is_empty()) {
        *at += 1;
    }
}

/// Reads the block YAML that `kubectl kustomize` writes (it re-serializes everything: block
/// mappings and sequences, sequence items at their key's indent, `|` block scalars, no flow
/// collections but `{}` and `[]`, no comments). A small reader instead of a YAML crate: the
/// input is always this one tool's output.
fn read_rendered_yaml(document: &str) -> Value {
    let lines: Vec<YamlLine> = document
        .lines()
        .map(|l| YamlLine {
            indent: l.len() - l.trim_start().len(),
            text: l.trim(),
            raw: l,
        })
        .collect();
    let mut at = 0;
    let value = yaml_node(&lines, &mut at, 0);
    skip_blank(&lines, &mut at);
    assert_eq!(at, lines.len(), "the reader read the whole document");
    value
}

fn yaml_node(lines: &[YamlLine], at: &mut usize, indent: usize) -> Value {
    skip_blank(lines, at);
    match lines.get(*at) {
        Some(line) if line.indent == indent && line.text.starts_with('-') => {
            yaml_sequence(lines, at, indent)
        }
        Some(line) if line.indent == indent => yaml_mapping(lines, at, indent, None),
        _ => Value::Null,
    }
}

fn yaml_sequence(lines: &[YamlLine], at: &mut usize, indent: usize) -> Value {
    let mut items = Vec::new();
    loop {
        skip_blank(lines, at);
        let Some(line) = lines.get(*at) else {
            break;
        };
        if line.indent != indent || !line.text.starts_with('-') {
            break;
        }
        let rest = line.text[1..].trim_start();
        if rest.is_empty() {
            *at += 1;
            skip_blank(lines, at);
            let deeper = lines.get(*at).map_or(indent + 2, |l| l.indent);
            items.push(yaml_node(lines, at, deeper));
        } else if yaml_key(rest).is_some() {
            // `- key: value` opens a mapping whose keys sit two columns in.
            items.push(yaml_mapping(lines, at, indent + 2, Some(rest)));
        } else {
            items.push(yaml_scalar(rest));
            *at += 1;
        }
    }
    Value::Array(items)
}

/// `key: rest` or `key:` (with the key unquoted), or None for a scalar.
fn yaml_key(text: &str) -> Option<(String, &str)> {
    let (key, rest) = if let Some(key) = text.strip_suffix(':') {
        (key, "")
    } else {
        let (key, rest) = text.split_once(": ")?;
        (key, rest)
    };
    if key.starts_with('"') || key.starts_with('\'') {
        return Some((unquote_yaml(key), rest));
    }
    (!key.contains(' ') || key.is_empty()).then(|| (key.to_owned(), rest))
}

/// A mapping at `indent`; `first` is the text of its first line when that line is a
/// sequence item (`- key: value`).
fn yaml_mapping(lines: &[YamlLine], at: &mut usize, indent: usize, first: Option<&str>) -> Value {
    let mut map = serde_json::Map::new();
    let mut first = first;
    loop {
        let text = match first.take() {
            Some(text) => text,
            None => {
                skip_blank(lines, at);
                match lines.get(*at) {
                    Some(line) if line.indent == indent && !line.text.starts_with('-') => line.text,
                    _ => break,
                }
            }
        };
        let (key, rest) = yaml_key(text).unwrap_or_else(|| panic!("a mapping key: `{text}`"));
        *at += 1;
        let value = if rest.starts_with('|') || rest.starts_with('>') {
            // Every line deeper than the key, blank ones included, less the block's indent.
            let mut block: Vec<&str> = Vec::new();
            let mut block_indent = None;
            while let Some(line) = lines
                .get(*at)
                .filter(|l| l.text.is_empty() || l.indent > indent)
            {
                let cut = *block_indent.get_or_insert(line.indent);
                block.push(line.raw.get(cut..).unwrap_or_default());
                *at += 1;
            }
            while block.last().is_some_and(|l| l.trim().is_empty()) {
                block.pop();
            }
            Value::String(block.join("\n"))
        } else if rest.is_empty() {
            skip_blank(lines, at);
            match lines.get(*at) {
                Some(next) if next.indent > indent => yaml_node(lines, at, next.indent),
                // Kustomize writes a key's sequence at the key's own indent.
                Some(next) if next.indent == indent && next.text.starts_with('-') => {
                    yaml_sequence(lines, at, indent)
                }
                _ => Value::Null,
            }
        } else {
            yaml_scalar(rest)
        };
        map.insert(key, value);
    }
    Value::Object(map)
}

fn unquote_yaml(text: &str) -> String {
    if let Some(inner) = text.strip_prefix('"').and_then(|t| t.strip_suffix('"')) {
        serde_json::from_str(text).unwrap_or_else(|_| inner.to_owned())
    } else if let Some(inner) = text.strip_prefix('\'').and_then(|t| t.strip_suffix('\'')) {
        inner.replace("''", "'")
    } else {
        text.to_owned()
    }
}

fn yaml_scalar(text: &str) -> Value {
    match text {
        "{}" => Value::Object(serde_json::Map::new()),
        "[]" => Value::Array(Vec::new()),
        "null" | "~" => Value::Null,
        "true" => Value::Bool(true),
        "false" => Value::Bool(false),
        _ if text.starts_with('"') || text.starts_with('\'') => Value::String(unquote_yaml(text)),
        _ => text
            .parse::<i64>()
            .map(Value::from)
            .unwrap_or_else(|_| Value::String(text.to_owned())),
    }
}

#[test]
fn the_yaml_reader_reads_what_kustomize_writes() {
    let value = read_rendered_yaml(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  labels:\n    app.kubernetes.io/name: porter\n  \
         name: p\nspec:\n  containers:\n  - args:\n    - worker\n    - --prefetch\n    - \"128\"\n    \
         env:\n    - name: A\n      value: \"\"\n    - name: B\n      valueFrom:\n        \
         secretKeyRef:\n          key: B\n    name: c\n    securityContext:\n      capabilities:\n        \
         drop:\n        - ALL\n      readOnlyRootFilesystem: true\n  volumes: []\ndata:\n  policy.toml: |\n    \
         [[rule]]\n    where = [\n      \"a\",\n    ]\n\n    name = \"x\"\n",
    );
    assert_eq!(
        value["metadata"]["labels"]["app.kubernetes.io/name"],
        "porter"
    );
    let container = &value["spec"]["containers"][0];
    assert_eq!(
        container["args"],
        serde_json::json!(["worker", "--prefetch", "128"])
    );
    assert_eq!(
        container["env"][0],
        serde_json::json!({"name": "A", "value": ""})
    );
    assert_eq!(container["env"][1]["valueFrom"]["secretKeyRef"]["key"], "B");
    assert_eq!(container["name"], "c");
    assert_eq!(
        container["securityContext"]["capabilities"]["drop"][0],
        "ALL"
    );
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(value["spec"]["volumes"], serde_json::json!([]));
    assert_eq!(
        value["data"]["policy.toml"],
        "[[rule]]\nwhere = [\n  \"a\",\n]\n\nname = \"x\""
    );
}

/// The objects `kubectl kustomize DIR` renders.
fn render(dir: &str) -> Vec<Value> {
    let path = format!("{}/../../{dir}", env!("CARGO_MANIFEST_DIR"));
    let output = Command::new("kubectl")
        .args(["kustomize", &path])
        .output()
        .unwrap_or_else(|e| {
            panic!("kubectl is needed to render deploy/k8s (CI machines have it): {e}")
        });
    assert!(
        output.status.success(),
        "kubectl kustomize {dir}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .split("\n---\n")
        .map(read_rendered_yaml)
        .collect()
}

fn object<'a>(objects: &'a [Value], kind: &str, name: &str) -> Option<&'a Value> {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
}

/// Porter's three Deployments of a rendering, as (name, container): gateway, worker, events
/// worker, in that order.
fn porter_containers(objects: &[Value]) -> Vec<(&'static str, &Value)> {
    ["porter-gateway", "porter-worker", "porter-events-worker"]
        .into_iter()
        .map(|name| {
            let deployment = object(objects, "Deployment", name)
                .unwrap_or_else(|| panic!("the rendering has Deployment {name}"));
            let containers = deployment["spec"]["template"]["spec"]["containers"]
                .as_array()
                .expect("containers");
            assert_eq!(containers.len(), 1, "{name} runs one container");
            (name, &containers[0])
        })
        .collect()
}

fn strings(value: &Value) -> Vec<&str> {
    value
        .as_array()
        .map(|items| items.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn env_names(container: &Value) -> Vec<&str> {
    container["env"]
        .as_array()
        .map(|env| env.iter().filter_map(|e| e["name"].as_str()).collect())
        .unwrap_or_default()
}

fn env_value<'a>(container: &'a Value, name: &str) -> Option<&'a str> {
    container["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)?["value"]
        .as_str()
}

/// The `--flags` of an argument list (a `--flag=value` counts as `--flag`).
fn flags<'a>(args: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
    args.into_iter()
        .filter(|a| a.starts_with("--"))
        .map(|a| a.split('=').next().unwrap_or(a))
        .collect()
}

/// Fails unless `porter SUBCOMMAND --help` documents the flag and every variable.
fn assert_cli_reads(what: &str, subcommand: &str, args: &[&str], variables: &[&str]) {
    let help = help_of(subcommand);
    let words: Vec<&str> = help
        .split_whitespace()
        .map(|w| w.trim_end_matches(','))
        .collect();
    for flag in flags(args.iter().copied()) {
        assert!(
            words.contains(&flag),
            "{what} passes {flag}, which `porter {subcommand}` does not take"
        );
    }
    for variable in variables {
        // RUST_LOG is read by the tracing filter, not by clap.
        if *variable == "RUST_LOG" {
            continue;
        }
        assert!(
            help.contains(&format!("env: {variable}")),
            "{what} sets {variable}, which `porter {subcommand}` does not read"
        );
    }
}

#[test]
fn kubernetes_manifests_set_only_flags_and_variables_the_cli_reads() {
    for dir in KUSTOMIZATIONS {
        let objects = render(dir);
        for (name, container) in porter_containers(&objects) {
            let args = strings(&container["args"]);
            let subcommand = *args
                .first()
                .unwrap_or_else(|| panic!("{dir} {name} has args"));
            let expected = if name == "porter-gateway" {
                "gateway"
            } else {
                "worker"
            };
            assert_eq!(
                subcommand, expected,
                "{dir}: {name} runs `porter {expected}`"
            );
            let variables = env_names(container);
            assert!(
                variables.contains(&"AMQP_URL") && variables.contains(&"PORTER_POLICY"),
                "the reader found {name}'s environment in {dir}: {variables:?}"
            );
            assert_cli_reads(&format!("{dir}: {name}"), subcommand, &args, &variables);
            assert_eq!(
                args.contains(&"--events"),
                name == "porter-events-worker",
                "{dir}: only {name} consumes the events queue"
            );
            if subcommand == "worker" {
                let pusher: Vec<&str> = variables
                    .iter()
                    .copied()
                    .filter(|v| v.starts_with("PUSHER_"))
                    .collect();
                assert_eq!(
                    pusher,
                    allowed_pusher_variables(args.iter().copied()),
                    "{dir}: {name}: an authorizing worker gets no Pusher credential, an events worker only the key and secret"
                );
            }
        }
    }
}

#[test]
fn compose_and_dockerfile_pass_only_flags_the_cli_takes() {
    let compose = compose();
    for (name, service) in compose.services.iter().filter(|(_, s)| s.builds_porter) {
        let args: Vec<&str> = service.command.iter().map(String::as_str).collect();
        assert_cli_reads(&format!("compose service `{name}`"), args[0], &args, &[]);
    }
    let dockerfile = repository_file("Dockerfile");
    let cmd = dockerfile
        .lines()
        .find_map(|l| l.strip_prefix("CMD "))
        .expect("the Dockerfile has a CMD");
    let args: Vec<String> = serde_json::from_str(cmd).expect("CMD is a JSON array");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert!(args.len() > 1, "the reader found the CMD's flags: {args:?}");
    assert_cli_reads("the Dockerfile's CMD", args[0], &args, &[]);
}

/// The production Secrets example names exactly the keys the Deployments read from it.
#[test]
fn the_production_secrets_example_has_the_keys_the_manifests_read() {
    let example = repository_file("deploy/k8s/overlays/production/secrets.example.yaml");
    let objects = render("deploy/k8s/overlays/production");
    let mut read: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (_, container) in porter_containers(&objects) {
        for entry in container["env"].as_array().into_iter().flatten() {
            let reference = &entry["valueFrom"]["secretKeyRef"];
            if let (Some(secret), Some(key)) =
                (reference["name"].as_str(), reference["key"].as_str())
            {
                read.entry(secret.to_owned())
                    .or_default()
                    .push(key.to_owned());
            }
        }
    }
    assert!(
        ["porter-gateway", "porter-worker", "porter-events-worker"]
            .iter()
            .all(|s| read.contains_key(*s))
    );
    for (secret, keys) in &read {
        let section = example
            .split("\n---\n")
            .find(|doc| doc.contains(&format!("\n  name: {secret}\n")))
            .unwrap_or_else(|| panic!("secrets.example.yaml shows Secret {secret}"));
        for key in keys {
            assert!(
                section.contains(&format!("\n  {key}: ")),
                "secrets.example.yaml's {secret} has no {key}"
            );
        }
    }
    assert!(
        example.contains("\n  name: porter-task-keys\n")
            && example.contains("\n  name: porter-keda-rabbitmq\n"),
        "the example shows the task keys' and KEDA's Secrets"
    );
}

/// The trigger metadata KEDA 2.16's rabbitmq scaler reads (keda.sh's rabbitmq-queue page).
const RABBITMQ_SCALER_PARAMETERS: [&str; 16] = [
    "host",
    "hostFromEnv",
    "protocol",
    "mode",
    "value",
    "activationValue",
    "queueName",
    "vhostName",
    "usernameFromEnv",
    "passwordFromEnv",
    "unsafeSsl",
    "timeout",
    "excludeUnacknowledged",
    "useRegex",
    "pageSize",
    "operation",
];

#[test]
fn keda_scales_workers_on_both_task_queues_with_the_deployments_prefix() {
    let mut scaled = 0;
    for dir in KUSTOMIZATIONS {
        let objects = render(dir);
        let Some(so) = object(&objects, "ScaledObject", "porter-worker") else {
            assert!(dir.ends_with("/dev"), "{dir} scales workers with KEDA");
            continue;
        };
        scaled += 1;
        let containers = porter_containers(&objects);
        let prefix = env_value(containers[1].1, "PORTER_QUEUE_PREFIX").unwrap_or("");
        assert_eq!(
            env_value(containers[0].1, "PORTER_QUEUE_PREFIX").unwrap_or(""),
            prefix,
            "{dir}: gateways and workers use the same queue prefix"
        );
        let spec = &so["spec"];
        assert_eq!(spec["scaleTargetRef"]["name"], "porter-worker");
        assert!(
            spec["minReplicaCount"].as_i64().unwrap_or(0) >= 1,
            "{dir}: workers never scale to zero (no authorization waits for a cold start)"
        );
        let polling = spec["pollingInterval"]
            .as_i64()
            .expect("pollingInterval, in seconds");
        assert!(
            (1..30).contains(&polling),
            "{dir}: polling every {polling} s"
        );
        let triggers = spec["triggers"].as_array().expect("triggers");
        let queues: Vec<&str> = triggers
            .iter()
            .map(|t| t["metadata"]["queueName"].as_str().unwrap_or_default())
            .collect();
        assert_eq!(
            queues,
            [format!("{prefix}auth"), format!("{prefix}auth/high")],
            "{dir}: one trigger per task queue, with the deployment's prefix"
        );
        let workers = containers[1].1;
        let consumed = strings(&workers["args"])
            .windows(2)
            .find(|w| w[0] == "--queues")
            .map(|w| w[1].to_owned())
            .expect("workers name their queues");
        assert_eq!(
            consumed, "auth,auth/high",
            "{dir}: workers consume both queues"
        );
        let modifiers = &spec["advanced"]["scalingModifiers"];
        let formula = modifiers["formula"].as_str().expect("a scaling formula");
        let target: f64 = modifiers["target"]
            .as_str()
            .and_then(|t| t.parse().ok())
            .expect("a numeric target");
        for trigger in triggers {
            assert_eq!(trigger["type"], "rabbitmq");
            // The schema leaves a trigger's metadata free-form: check it against the
            // parameters KEDA 2.16's rabbitmq scaler reads, so a misspelt one fails here.
            for key in trigger["metadata"].as_object().expect("metadata").keys() {
                assert!(
                    RABBITMQ_SCALER_PARAMETERS.contains(&key.as_str()),
                    "{dir}: the rabbitmq scaler has no parameter {key}"
                );
            }
            let value: f64 = trigger["metadata"]["value"]
                .as_str()
                .and_then(|v| v.parse().ok())
                .expect("a numeric value");
            assert!(value >= 1.0, "{dir}: a queue-length target per pod");
            assert_eq!(trigger["metadata"]["mode"], "QueueLength");
            assert_eq!(trigger["authenticationRef"]["name"], "porter-rabbitmq");
            let name = trigger["name"].as_str().expect("a named trigger");
            assert!(
                formula.split(" + ").any(|term| term == name),
                "{dir}: the formula `{formula}` adds trigger {name}"
            );
        }
        assert_eq!(
            formula.split(" + ").count(),
            triggers.len(),
            "{dir}: the formula is the sum of the queues' depths"
        );
        assert!(target >= 1.0, "{dir}: the target is tasks waiting per pod");
        assert_eq!(modifiers["metricType"], "AverageValue");
        let auth = object(&objects, "TriggerAuthentication", "porter-rabbitmq")
            .expect("the TriggerAuthentication");
        assert_eq!(
            auth["spec"]["secretTargetRef"][0]["name"], "porter-keda-rabbitmq",
            "KEDA's credentials come from a Secret"
        );
    }
    assert_eq!(
        scaled, 3,
        "the base and both production overlays scale with KEDA"
    );
}

#[test]
fn keda_scales_events_workers_on_the_events_queue_with_the_deployments_prefix() {
    let mut scaled = 0;
    for dir in KUSTOMIZATIONS {
        let objects = render(dir);
        let containers = porter_containers(&objects);
        let prefix = env_value(containers[0].1, "PORTER_QUEUE_PREFIX").unwrap_or("");
        assert_eq!(
            env_value(containers[2].1, "PORTER_QUEUE_PREFIX").unwrap_or(""),
            prefix,
            "{dir}: gateways and events workers use the same queue prefix"
        );
        assert_eq!(
            env_value(containers[2].1, "PORTER_QUEUE_TYPE"),
            env_value(containers[0].1, "PORTER_QUEUE_TYPE"),
            "{dir}: gateways and events workers declare the events queue alike"
        );
        let Some(so) = object(&objects, "ScaledObject", "porter-events-worker") else {
            assert!(
                dir.ends_with("/dev"),
                "{dir} scales events workers with KEDA"
            );
            continue;
        };
        scaled += 1;
        let spec = &so["spec"];
        assert_eq!(spec["scaleTargetRef"]["name"], "porter-events-worker");
        assert!(
            spec["minReplicaCount"].as_i64().unwrap_or(0) >= 1,
            "{dir}: events workers never scale to zero"
        );
        let triggers = spec["triggers"].as_array().expect("triggers");
        assert_eq!(triggers.len(), 1, "{dir}: one trigger, the events queue");
        let trigger = &triggers[0];
        assert_eq!(trigger["type"], "rabbitmq");
        assert_eq!(
            trigger["metadata"]["queueName"],
            format!("{prefix}events"),
            "{dir}: the events queue, with the deployment's prefix"
        );
        assert_eq!(trigger["metadata"]["mode"], "QueueLength");
        for key in trigger["metadata"].as_object().expect("metadata").keys() {
            assert!(
                RABBITMQ_SCALER_PARAMETERS.contains(&key.as_str()),
                "{dir}: the rabbitmq scaler has no parameter {key}"
            );
        }
        assert_eq!(trigger["authenticationRef"]["name"], "porter-rabbitmq");
    }
    assert_eq!(
        scaled, 3,
        "the base and both production overlays scale events workers with KEDA"
    );
}

/// The largest `time_limit` and `expires` of a policy file, in seconds (plain numbers).
fn policy_bounds(policy: &str) -> (f64, f64) {
    let largest = |field: &str| {
        policy
            .lines()
            .filter_map(|l| l.trim().strip_prefix(field)?.trim().strip_prefix('='))
            .map(|v| v.trim().parse::<f64>().expect("a number of seconds"))
            .fold(0.0, f64::max)
    };
    (largest("time_limit"), largest("expires"))
}

#[test]
fn grace_periods_cover_the_drains() {
    let policy = repository_file("deploy/k8s/base/policy.toml");
    let (time_limit, expires) = policy_bounds(&policy);
    assert!(
        time_limit > 0.0 && expires > 0.0,
        "the reader found the bounds"
    );
    // What the policy parser accepts at most (docs/policy.md): a worker's drain ends within
    // it whatever policy is mounted.
    const LONGEST_TIME_LIMIT: f64 = 60.0;
    // actix-web's graceful shutdown gives requests in hand this long after SIGTERM.
    const GATEWAY_DRAIN: f64 = 30.0;
    for dir in KUSTOMIZATIONS {
        let objects = render(dir);
        let pod = |name: &str| {
            object(&objects, "Deployment", name).expect("the Deployment")["spec"]["template"]["spec"]
                .clone()
        };
        let gateway = pod("porter-gateway");
        let pause: f64 =
            strings(&gateway["containers"][0]["lifecycle"]["preStop"]["exec"]["command"])
                .as_slice()
                .split_first()
                .filter(|(sleep, _)| **sleep == "sleep")
                .and_then(|(_, seconds)| seconds.first()?.parse().ok())
                .expect("the gateway pauses in preStop");
        let grace = gateway["terminationGracePeriodSeconds"]
            .as_f64()
            .expect("a grace period");
        assert!(
            expires + 0.25 < GATEWAY_DRAIN,
            "the longest batch deadline ({expires} s + the grace) ends inside actix's drain"
        );
        assert!(
            grace > pause + GATEWAY_DRAIN,
            "{dir}: the gateway's grace period ({grace} s) covers the pause ({pause} s) and the drain"
        );
        let worker = pod("porter-worker");
        let grace = worker["terminationGracePeriodSeconds"]
            .as_f64()
            .expect("a grace period");
        assert!(
            grace > LONGEST_TIME_LIMIT && grace > time_limit,
            "{dir}: the worker's grace period ({grace} s) is above the longest time limit"
        );
        // An events worker finishes the publications in hand; the slowest retries one upstream
        // with the defaults (PORTER_UPSTREAM_ATTEMPTS 5 of at most 5 s each, backoffs 0.2 +
        // 0.4 + 0.8 + 1.6 s): one cut off is redelivered, but the grace should cover one.
        const ONE_UPSTREAM_RETRIED: f64 = 5.0 * 5.0 + 0.2 + 0.4 + 0.8 + 1.6;
        let events = pod("porter-events-worker");
        let grace = events["terminationGracePeriodSeconds"]
            .as_f64()
            .expect("a grace period");
        assert!(
            grace > ONE_UPSTREAM_RETRIED,
            "{dir}: the events worker's grace period ({grace} s) covers an upstream's retries"
        );
    }
}

#[test]
fn porter_pods_run_unprivileged_with_probes_resources_and_a_rolling_policy() {
    for dir in KUSTOMIZATIONS {
        let objects = render(dir);
        for (name, container) in porter_containers(&objects) {
            let deployment = object(&objects, "Deployment", name).expect("the Deployment");
            let pod = &deployment["spec"]["template"]["spec"];
            assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{dir} {name}");
            let security = &container["securityContext"];
            assert_eq!(security["readOnlyRootFilesystem"], true, "{dir} {name}");
            assert_eq!(security["allowPrivilegeEscalation"], false, "{dir} {name}");
            assert_eq!(
                strings(&security["capabilities"]["drop"]),
                ["ALL"],
                "{dir} {name}"
            );
            for kind in ["requests", "limits"] {
                for resource in ["cpu", "memory"] {
                    assert!(
                        container["resources"][kind][resource].is_string(),
                        "{dir} {name}: {kind}.{resource}"
                    );
                }
            }
            for (probe, path) in [
                ("startupProbe", "/healthz"),
                ("livenessProbe", "/healthz"),
                ("readinessProbe", "/readyz"),
            ] {
                assert_eq!(
                    container[probe]["httpGet"]["path"], path,
                    "{dir} {name} {probe}"
                );
                assert_eq!(container[probe]["httpGet"]["port"], "http", "{dir} {name}");
            }
            // The probed port is the one the process listens on.
            let port = container["ports"][0]["containerPort"]
                .as_i64()
                .expect("a port");
            let args = strings(&container["args"]);
            let listen = args
                .windows(2)
                .find(|w| w[0] == "--listen" || w[0] == "--http-listen")
                .map(|w| w[1])
                .unwrap_or_else(|| panic!("{dir} {name} names its listen address"));
            assert!(
                listen.ends_with(&format!(":{port}")),
                "{dir} {name}: {listen} vs {port}"
            );
            assert_eq!(
                deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"], 0,
                "{dir} {name}: a rollout never drops below the replicas in service"
            );
            assert_eq!(
                pod["metadata"]["annotations"],
                Value::Null,
                "annotations belong on the template's metadata"
            );
            let annotations = &deployment["spec"]["template"]["metadata"]["annotations"];
            assert_eq!(annotations["prometheus.io/scrape"], "true", "{dir} {name}");
            assert_eq!(
                annotations["prometheus.io/port"],
                port.to_string(),
                "{dir} {name}"
            );
        }
        let rendered = format!("{objects:?}").to_lowercase();
        assert!(!rendered.contains("guest"), "{dir}: no guest credentials");
    }
}

#[test]
fn autoscalers_own_the_replica_counts() {
    for dir in KUSTOMIZATIONS {
        let objects = render(dir);
        let hpa = object(&objects, "HorizontalPodAutoscaler", "porter-gateway");
        let keda = object(&objects, "ScaledObject", "porter-worker");
        let events = object(&objects, "ScaledObject", "porter-events-worker");
        for (deployment, scaler) in [
            ("porter-gateway", hpa),
            ("porter-worker", keda),
            ("porter-events-worker", events),
        ] {
            let replicas =
                &object(&objects, "Deployment", deployment).expect("it")["spec"]["replicas"];
            if scaler.is_some() {
                // A count in the manifest would scale a busy deployment down on every apply.
                assert_eq!(
                    replicas,
                    &Value::Null,
                    "{dir}: {deployment} leaves the count to its autoscaler"
                );
            } else {
                assert_eq!(
                    replicas, 1,
                    "{dir}: without an autoscaler, one {deployment}"
                );
            }
        }
        if let Some(hpa) = hpa {
            let spec = &hpa["spec"];
            assert_eq!(spec["scaleTargetRef"]["name"], "porter-gateway");
            assert!(
                spec["minReplicas"].as_i64().unwrap_or(0) >= 2,
                "{dir}: two gateways at least"
            );
            assert_eq!(spec["metrics"][0]["resource"]["name"], "cpu");
            let up = &spec["behavior"]["scaleUp"];
            let down = &spec["behavior"]["scaleDown"];
            assert_eq!(up["stabilizationWindowSeconds"], 0, "{dir}: up at once");
            assert!(
                down["stabilizationWindowSeconds"].as_i64().unwrap_or(0) >= 300,
                "{dir}: down after a while"
            );
            assert_eq!(
                down["policies"][0]["value"], 1,
                "{dir}: one gateway at a time"
            );
        }
    }
}

#[test]
fn the_ingress_routes_only_the_client_api() {
    let objects = render("deploy/k8s/base");
    let ingress = object(&objects, "Ingress", "porter-gateway").expect("the Ingress example");
    let mut paths = Vec::new();
    for rule in ingress["spec"]["rules"].as_array().expect("rules") {
        for path in rule["http"]["paths"].as_array().expect("paths") {
            assert_eq!(path["backend"]["service"]["name"], "porter-gateway");
            paths.push(path["path"].as_str().expect("a path").to_owned());
        }
    }
    assert!(paths.contains(&"/pusher".to_owned()), "{paths:?}");
    for path in &paths {
        for internal in ["/metrics", "/healthz", "/readyz", "/admin"] {
            assert!(
                !internal.starts_with(path.as_str()),
                "the Ingress routes {path}, which reaches {internal}: keep it inside the cluster"
            );
        }
    }
}

#[test]
fn a_policy_change_rolls_the_pods() {
    for dir in KUSTOMIZATIONS {
        let objects = render(dir);
        let config = objects
            .iter()
            .find(|o| {
                o["kind"] == "ConfigMap"
                    && o["metadata"]["name"]
                        .as_str()
                        .is_some_and(|n| n.starts_with("porter-policy-"))
            })
            .unwrap_or_else(|| panic!("{dir}: the policy is a generated ConfigMap"));
        let name = config["metadata"]["name"].as_str().unwrap_or_default();
        assert!(
            name.len() > "porter-policy-".len(),
            "{dir}: {name} carries a content hash"
        );
        assert_eq!(
            config["data"]["policy.toml"].as_str().map(str::trim),
            Some(repository_file("deploy/k8s/base/policy.toml").trim()),
            "{dir}: the ConfigMap holds deploy/k8s/base/policy.toml"
        );
        for (deployment, container) in porter_containers(&objects) {
            let pod = &object(&objects, "Deployment", deployment).expect("it")["spec"]["template"]
                ["spec"];
            let volume = pod["volumes"]
                .as_array()
                .and_then(|v| v.iter().find(|v| v["name"] == "policy"))
                .expect("a policy volume");
            assert_eq!(
                volume["configMap"]["name"], name,
                "{dir}: {deployment} mounts the hashed name, so a change rolls it"
            );
            let mount = container["volumeMounts"]
                .as_array()
                .and_then(|m| m.iter().find(|m| m["name"] == "policy"))
                .and_then(|m| m["mountPath"].as_str())
                .expect("the policy is mounted");
            assert_eq!(
                env_value(container, "PORTER_POLICY"),
                Some(format!("{mount}/policy.toml").as_str()),
                "{dir}: {deployment} reads the mounted policy"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Dashboard and alerts against what a running gateway and worker expose.
// ---------------------------------------------------------------------------------------------

/// RabbitMQ's own metrics the dashboard and alerts read (its rabbitmq_prometheus plugin, with
/// per-object metrics), with their labels: not Porter's to expose.
const RABBITMQ_METRICS: [&str; 2] = ["rabbitmq_queue_messages_ready", "rabbitmq_queue_consumers"];
const RABBITMQ_LABELS: [&str; 2] = ["queue", "vhost"];
/// Labels Prometheus adds to every scraped series (its target's), not the page.
const TARGET_LABELS: [&str; 4] = ["instance", "job", "pod", "namespace"];

/// What a metrics page exposes: each sample name with the label names and values seen on it.
fn exposed(page: &str) -> BTreeMap<String, BTreeMap<String, BTreeSet<String>>> {
    let mut exposed: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for line in page
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let end = line.find(['{', ' ']).unwrap_or(line.len());
        let labels = exposed.entry(line[..end].to_owned()).or_default();
        let Some(rest) = line[end..].strip_prefix('{') else {
            continue;
        };
        let mut chars = rest.chars().peekable();
        loop {
            let name: String = chars.by_ref().take_while(|c| *c != '=').collect();
            if name.is_empty() || chars.next() != Some('"') {
                break;
            }
            let mut value = String::new();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
            labels
                .entry(name.trim().to_owned())
                .or_default()
                .insert(value);
            if chars.next() != Some(',') {
                break;
            }
        }
    }
    exposed
}

/// What one PromQL expression names: metrics with the labels matched on each (and the values
/// of `=` and `=~` matchers made of plain alternatives), and the labels of `by (…)`,
/// `without (…)`, `on (…)` and `ignoring (…)`.
#[derive(Debug, Default)]
struct Named {
    metrics: BTreeMap<String, BTreeMap<String, Vec<String>>>,
    grouping: BTreeSet<String>,
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

fn named_in(expr: &str, named: &mut Named) {
    let text: Vec<char> = expr.chars().collect();
    let mut at = 0;
    while at < text.len() {
        let c = text[at];
        if c == '"' {
            at += 1;
            while at < text.len() && text[at] != '"' {
                at += if text[at] == '\\' { 2 } else { 1 };
            }
            at += 1;
            continue;
        }
        if !(c.is_ascii_alphabetic() || c == '_')
            || (at > 0 && (is_ident(text[at - 1]) || text[at - 1] == '$'))
        {
            at += 1;
            continue;
        }
        let start = at;
        while at < text.len() && is_ident(text[at]) {
            at += 1;
        }
        let word: String = text[start..at].iter().collect();
        let mut next = at;
        while next < text.len() && text[next] == ' ' {
            next += 1;
        }
        if matches!(word.as_str(), "by" | "without" | "on" | "ignoring")
            && text.get(next) == Some(&'(')
        {
            let close = (next..text.len())
                .find(|i| text[*i] == ')')
                .expect("a closing )");
            let list: String = text[next + 1..close].iter().collect();
            named.grouping.extend(
                list.split(',')
                    .map(|l| l.trim().to_owned())
                    .filter(|l| !l.is_empty()),
            );
            at = close + 1;
            continue;
        }
        let is_metric = ["porter_", "authorization_", "rabbitmq_"]
            .iter()
            .any(|p| word.starts_with(p));
        if is_metric {
            let matchers = named.metrics.entry(word.clone()).or_default();
            if text.get(next) == Some(&'{') {
                let close = (next..text.len())
                    .find(|i| text[*i] == '}')
                    .expect("a closing }");
                let inside: String = text[next + 1..close].iter().collect();
                for matcher in inside.split(',').filter(|m| !m.trim().is_empty()) {
                    let (label, value) = matcher
                        .split_once("=~")
                        .or_else(|| matcher.split_once("!~"))
                        .or_else(|| matcher.split_once("!="))
                        .or_else(|| matcher.split_once('='))
                        .unwrap_or_else(|| panic!("a label matcher: `{matcher}`"));
                    let value = value.trim().trim_matches('"');
                    let values = matchers.entry(label.trim().to_owned()).or_default();
                    // Plain alternatives (`a|b`) are checked value by value; patterns are not.
                    if !matcher.contains('!')
                        && value
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '|')
                    {
                        values.extend(value.split('|').map(str::to_owned));
                    }
                }
                at = close + 1;
            }
        }
    }
}

/// Every `expr` of the alert rules (single-line or folded) and of the dashboard's targets.
fn dashboard_and_alert_expressions() -> Vec<(String, String)> {
    let mut expressions = Vec::new();
    let rules = repository_file("deploy/prometheus/porter-alerts.yaml");
    let lines: Vec<&str> = rules.lines().collect();
    let mut at = 0;
    while at < lines.len() {
        let line = lines[at];
        at += 1;
        let Some(rest) = line.trim_start().strip_prefix("expr:") else {
            continue;
        };
        let indent = line.len() - line.trim_start().len();
        let rest = rest.trim();
        let expr = if rest.starts_with('>') || rest.starts_with('|') {
            let mut parts = Vec::new();
            while at < lines.len() && (lines[at].len() - lines[at].trim_start().len() > indent) {
                parts.push(lines[at].trim());
                at += 1;
            }
            parts.join(" ")
        } else {
            rest.to_owned()
        };
        expressions.push(("deploy/prometheus/porter-alerts.yaml".to_owned(), expr));
    }
    let dashboard: Value = serde_json::from_str(&repository_file("deploy/grafana/porter.json"))
        .expect("the dashboard is JSON");
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("a target's expr").to_owned();
            let title = panel["title"].as_str().unwrap_or_default();
            expressions.push((format!("dashboard panel `{title}`"), expr));
        }
    }
    expressions
}

#[test]
fn the_expression_reader_finds_metrics_labels_and_values() {
    let mut named = Named::default();
    named_in(
        r#"sum by (queue, outcome) (rate(porter_worker_tasks_total{outcome=~"expired|time_limit_exceeded",queue!="x"}[$__rate_interval])) / on(instance) histogram_quantile(0.9, sum by (le) (rate(porter_task_round_trip_seconds_bucket[5m]))) and rabbitmq_queue_consumers{queue=~"(.*\\.)?auth"} == 0"#,
        &mut named,
    );
    assert_eq!(
        named.metrics.keys().collect::<Vec<_>>(),
        [
            "porter_task_round_trip_seconds_bucket",
            "porter_worker_tasks_total",
            "rabbitmq_queue_consumers"
        ]
    );
    assert_eq!(
        named.metrics["porter_worker_tasks_total"]["outcome"],
        ["expired", "time_limit_exceeded"]
    );
    assert!(named.metrics["porter_worker_tasks_total"]["queue"].is_empty());
    assert!(named.metrics["rabbitmq_queue_consumers"]["queue"].is_empty());
    assert_eq!(
        named.grouping.iter().collect::<Vec<_>>(),
        ["instance", "le", "outcome", "queue"]
    );
}

/// The text of every source file of porter-gateway.
fn gateway_source() -> String {
    fn read(dir: &std::path::Path, all: &mut String) {
        for entry in std::fs::read_dir(dir)
            .expect("read a source directory")
            .flatten()
        {
            let path = entry.path();
            if path.is_dir() {
                read(&path, all);
            } else if path.extension().is_some_and(|e| e == "rs") {
                all.push_str(&std::fs::read_to_string(&path).expect("read a source file"));
            }
        }
    }
    let mut all = String::new();
    read(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../porter-gateway/src"),
        &mut all,
    );
    all
}

const METRICS_POLICY: &str = r#"
[[rule]]
name = "presence"
pattern = "presence-{feature}@{object_id}"
queue = "auth/high"
time_limit = 2
expires = 2
allow = "authenticated"

[[rule]]
name = "hook"
pattern = "private-hook-{verdict}@{object_id}"
time_limit = 2
expires = 3
allow = { webhook = "http://127.0.0.1:PORT/{verdict}" }

[[rule]]
name = "private"
pattern = "private-{feature}@{object_id}"
time_limit = 2
expires = 2
allow = "anyone"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_and_alerts_name_only_what_porter_exposes() {
    let hook = common::webhook_server().await;
    let deployment = common::Deployment::new("deploy_metrics")
        .with_policy(&METRICS_POLICY.replace("PORT", &hook.to_string()));
    let _gateway = deployment.gateway();
    let worker_port = common::free_port();
    let listen = format!("127.0.0.1:{worker_port}");
    let _worker = deployment.worker_with(&["--http-listen", &listen]);
    deployment.wait_ready().await;
    let client = reqwest::Client::new();
    let worker_url = |path: &str| format!("http://127.0.0.1:{worker_port}{path}");
    common::eventually(
        "the worker's /readyz",
        std::time::Duration::from_secs(20),
        || async {
            let answer = client.get(worker_url("/readyz")).send().await.ok()?;
            (answer.status() == 200).then_some(())
        },
    )
    .await;

    // Traffic that makes every family show: allowed, refused, webhook calls that answer and
    // fail, a failed authentication and a protection refusal.
    let channels = [
        "private-chat@1",
        "private-hook-allow@1",
        "private-hook-deny@1",
        "private-hook-500@1",
        "presence-user@1",
    ];
    let answer = client
        .get(deployment.batch_url("1.2", &channels))
        .send()
        .await
        .expect("a batch");
    assert_eq!(answer.status(), 200);
    let body: Value = answer.json().await.expect("JSON");
    assert!(body["private-chat@1"]["auth"].is_string(), "{body}");
    assert!(body["private-hook-500@1"]["reason"].is_string(), "{body}");
    let refused = client
        .get(deployment.batch_url("1.2", &["private-chat@2"]))
        .bearer_auth("not-a-token")
        .send()
        .await
        .expect("a request");
    assert_eq!(refused.status(), 401);
    let too_large = client
        .post(deployment.url("/pusher/auth"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(vec![b'a'; 70 * 1024])
        .send()
        .await
        .expect("a request");
    assert_eq!(too_large.status(), 413);

    let scrape = |url: String| {
        let client = client.clone();
        async move {
            let answer = client.get(url).send().await.expect("a scrape");
            assert_eq!(answer.status(), 200);
            answer.text().await.expect("a page")
        }
    };
    let mut pages = exposed(&scrape(deployment.url("/metrics")).await);
    for (name, labels) in exposed(&scrape(worker_url("/metrics")).await) {
        pages.entry(name).or_default().extend(labels);
    }
    for family in [
        "porter_channels_total",
        "porter_auth_failures_total",
        "porter_protection_refusals_total",
        "porter_worker_tasks_total",
        "porter_worker_webhook_failures_total",
        "porter_worker_refusals_total",
        "porter_worker_webhook_duration_seconds_bucket",
    ] {
        assert!(
            pages.contains_key(family),
            "the traffic made {family} show: {:?}",
            pages.keys()
        );
    }

    let expressions = dashboard_and_alert_expressions();
    assert!(
        expressions.len() >= 30,
        "the reader found the expressions: {}",
        expressions.len()
    );
    let mut checked = BTreeSet::new();
    for (source, expr) in &expressions {
        let mut named = Named::default();
        named_in(expr, &mut named);
        assert!(
            !named.metrics.is_empty(),
            "{source}: `{expr}` names a metric"
        );
        let mut available: BTreeSet<&str> = TARGET_LABELS.into_iter().collect();
        for (metric, matchers) in &named.metrics {
            checked.insert(metric.clone());
            if metric.starts_with("rabbitmq_") {
                assert!(
                    RABBITMQ_METRICS.contains(&metric.as_str()),
                    "{source} names {metric}: add RabbitMQ metrics to RABBITMQ_METRICS (and docs/deploy.md) on purpose"
                );
                available.extend(RABBITMQ_LABELS);
                for label in matchers.keys() {
                    assert!(
                        RABBITMQ_LABELS.contains(&label.as_str()),
                        "{source}: {metric}{{{label}}}"
                    );
                }
                continue;
            }
            let Some(labels) = pages.get(metric) else {
                panic!("{source} names {metric}, which neither /metrics exposes: `{expr}`");
            };
            available.extend(labels.keys().map(String::as_str));
            for (label, values) in matchers {
                let Some(seen) = labels.get(label) else {
                    panic!(
                        "{source}: {metric} has no label {label} (it has {:?})",
                        labels.keys()
                    );
                };
                for value in values {
                    // A protection rule shows only once it has refused something; one the
                    // traffic did not trip is looked up where the gateway names its rules.
                    let named_rule = metric == "porter_protection_refusals_total"
                        && label == "rule"
                        && gateway_source().contains(&format!("rule: \"{value}\""));
                    assert!(
                        seen.contains(value) || named_rule,
                        "{source}: {metric}{{{label}=\"{value}\"}} is never exposed (seen: {seen:?})"
                    );
                }
            }
        }
        for label in &named.grouping {
            assert!(
                available.contains(label.as_str()),
                "{source}: groups by {label}, which none of its metrics has: `{expr}`"
            );
        }
    }
    assert!(
        checked.len() >= 20,
        "the expressions name Porter's metrics: {checked:?}"
    );
}
