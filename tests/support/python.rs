//! The test venv's Python, for checks by independent implementations (Prometheus's parser,
//! Ed25519 from `cryptography`).

use std::io::Write;
use std::process::{Command, Stdio};

use crate::workspace_root;

/// Runs `script` with the test venv's Python (`HUB_VENV`, default `.venv`, which
/// `scripts/test` creates) with `input` on stdin; returns its stdout, or panics with its stderr.
pub fn venv_python(script: &str, input: &[u8]) -> Vec<u8> {
    let venv = std::env::var("HUB_VENV")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| workspace_root().join(".venv"));
    let mut child = Command::new(venv.join("bin/python"))
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the test venv's python (scripts/test creates it)");
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the Python check failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Runs the Python file `script` with the test venv's Python and `env`; returns what it printed
/// (stdout and stderr), or panics with it when it fails.
pub fn venv_python_file(script: &std::path::Path, env: &[(&str, &str)]) -> String {
    let venv = std::env::var("HUB_VENV")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| workspace_root().join(".venv"));
    let out = Command::new(venv.join("bin/python"))
        .arg(script)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("the test venv's python (scripts/test creates it)");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{} failed:\n{printed}",
        script.display()
    );
    printed
}
