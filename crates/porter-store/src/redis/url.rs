//! What `REDIS_URL` names: one Redis (`redis://…`, as the redis crate reads it) or a Redis
//! Cluster, `redis+cluster://[user:password@]host1:port1,host2:port2,…[/]`.
//!
//! The cluster form lists seed nodes: any one that answers gives the client the whole slot map,
//! so a few masters are enough; credentials, when given, are the same for every node (Redis
//! Cluster has one ACL per node, set alike). Cluster mode has database 0 only, so a path other
//! than `/` or `/0` is refused. No error here quotes the URL, which holds the password.

use crate::StoreError;

/// The scheme of a cluster URL.
pub const CLUSTER_SCHEME: &str = "redis+cluster://";

/// A parsed `REDIS_URL`.
#[derive(Debug, PartialEq, Eq)]
pub enum Target {
    /// One Redis, by the URL as given.
    Single(String),
    /// A Redis Cluster, by one `redis://` URL per seed node.
    Cluster(Vec<String>),
}

fn refused(why: &str) -> StoreError {
    StoreError::Unavailable(format!(
        "invalid Redis Cluster URL: {why} (expected {CLUSTER_SCHEME}host1:port1,host2:port2,...; credentials go before the first host, as in a redis:// URL)"
    ))
}

/// Reads `REDIS_URL`. A single-Redis URL is passed on unchanged (the redis crate checks it).
pub fn parse(url: &str) -> Result<Target, StoreError> {
    let Some(rest) = url.strip_prefix(CLUSTER_SCHEME) else {
        if url.starts_with("rediss+cluster://") {
            return Err(refused(
                "TLS (rediss+cluster) is not supported by this build",
            ));
        }
        return Ok(Target::Single(url.to_owned()));
    };
    // The credentials end at the last `@` before the path: a password may hold `@`, `,` or `/`
    // only percent-encoded, as in any URL.
    let (authority, path) = match rest.find('/') {
        Some(at) => rest.split_at(at),
        None => (rest, ""),
    };
    if !matches!(path, "" | "/" | "/0") {
        return Err(refused(
            "a cluster has only database 0 (use no path, / or /0)",
        ));
    }
    let (credentials, hosts) = match authority.rfind('@') {
        Some(at) => (Some(&authority[..at]), &authority[at + 1..]),
        None => (None, authority),
    };
    if credentials.is_some_and(|c| c.is_empty() || c.contains(',')) {
        return Err(refused("the credentials before `@` are malformed"));
    }
    let mut nodes = Vec::new();
    for (index, node) in hosts.split(',').enumerate() {
        let node = node.trim();
        let Some((host, port)) = node.rsplit_once(':') else {
            return Err(refused(&format!("node {} has no :port", index + 1)));
        };
        let host_ok = !host.is_empty()
            && (host.starts_with('[') && host.ends_with(']')
                || host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-')));
        if !host_ok {
            return Err(refused(&format!("node {} has no valid host", index + 1)));
        }
        if !port.parse::<u16>().is_ok_and(|p| p > 0) {
            return Err(refused(&format!("node {} has no valid port", index + 1)));
        }
        nodes.push(match credentials {
            Some(credentials) => format!("redis://{credentials}@{host}:{port}/"),
            None => format!("redis://{host}:{port}/"),
        });
    }
    Ok(Target::Cluster(nodes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_url_lists_its_nodes_with_the_credentials() {
        assert_eq!(
            parse("redis+cluster://127.0.0.1:7001,127.0.0.1:7002/").unwrap(),
            Target::Cluster(vec![
                "redis://127.0.0.1:7001/".into(),
                "redis://127.0.0.1:7002/".into()
            ])
        );
        assert_eq!(
            parse("redis+cluster://u:p%40w@[::1]:7001").unwrap(),
            Target::Cluster(vec!["redis://u:p%40w@[::1]:7001/".into()])
        );
        assert_eq!(
            parse("redis://127.0.0.1:6379/2").unwrap(),
            Target::Single("redis://127.0.0.1:6379/2".into())
        );
    }

    #[test]
    fn a_bad_cluster_url_is_refused_without_quoting_it() {
        for url in [
            "redis+cluster://",
            "redis+cluster://:SECRETPW@",
            "redis+cluster://:SECRETPW@h1:7001,",
            "redis+cluster://:SECRETPW@h1",
            "redis+cluster://:SECRETPW@h1:0",
            "redis+cluster://:SECRETPW@h1:99999",
            "redis+cluster://:SECRETPW@h_1:7001",
            "redis+cluster://:SECRETPW@h1:7001/3",
            "redis+cluster://@h1:7001",
            "rediss+cluster://:SECRETPW@h1:7001",
        ] {
            let error = parse(url).expect_err(url);
            let text = format!("{error} {error:?}");
            assert!(!text.contains("SECRETPW"), "{url}: {text}");
            assert!(text.contains("invalid Redis Cluster URL"), "{url}: {text}");
        }
    }
}
