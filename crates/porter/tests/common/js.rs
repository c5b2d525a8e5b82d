//! The official Pusher JavaScript SDKs the tests drive (`tests/js`: pusher-js, pusher, ws, pinned
//! by `package-lock.json`): installed once with `npm ci` when `node_modules` is missing, and run
//! with `node`.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// `crates/porter/tests/js`.
pub fn js_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/js")
}

/// Installs the packages of `tests/js` unless they are there; idempotent, and once per test
/// binary. `make services` (and so `make test`) runs the same `npm ci` ahead of the tests.
pub fn ensure_npm_packages() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let dir = js_dir();
        let installed = ["pusher-js", "pusher", "ws"].iter().all(|package| {
            dir.join("node_modules")
                .join(package)
                .join("package.json")
                .exists()
        });
        if installed {
            return;
        }
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .stdin(Stdio::null())
            .status()
            .expect("npm is installed (node 20 and npm are needed by the SDK tests)");
        assert!(
            status.success(),
            "npm ci in {} failed: {status}",
            dir.display()
        );
    });
}

/// A `node` command for `script` (a file of `tests/js`), run there, with a clean environment
/// but `PATH` and `vars`.
pub fn node(script: &str, vars: &[(&str, String)]) -> Command {
    ensure_npm_packages();
    let mut command = Command::new("node");
    command
        .arg(script)
        .current_dir(js_dir())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .stdin(Stdio::null());
    for (key, value) in vars {
        command.env(key, value);
    }
    command
}
