//! The deployment files stay consistent with the CLI and keep their security properties:
//! every variable `docker-compose.yml` sets for a Porter service is one that subcommand reads,
//! workers are never given the secret, nothing but the load balancer is published, no
//! credential has a default (nor is guest's), each Porter half logs in to RabbitMQ as its own
//! least-privilege user, the gateways trust exactly nginx's address, and nginx overwrites
//! `X-Forwarded-For`. (Docker does not run on the development machines, so this is what keeps
//! the files honest.)

use std::collections::BTreeMap;
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
    assert_eq!(porter.len(), 2, "compose runs a gateway and a worker");
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
            assert!(
                !environment.keys().any(|v| v.starts_with("PUSHER_")),
                "workers must never be given the Pusher credentials"
            );
        }
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
        gateway["read"], "^(amq\\.gen-.*|amq\\.rabbitmq\\.reply-to|data\\..+\\.published)$",
        "a gateway reads its reply queue and binds session exchanges; never a task queue"
    );
    assert_eq!(
        gateway["write"], "^(amq\\.default|data\\.[0-9a-f]{32}\\.lease)$",
        "a gateway publishes on the default exchange and binds lease queues"
    );
    assert_eq!(
        gateway["configure"],
        "^(auth|auth/high|amq\\.gen-.*|data\\..+\\.published|data\\.[0-9a-f]{32}\\.lease)$",
        "a gateway declares the task queues, its reply queue, session exchanges and leases"
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
