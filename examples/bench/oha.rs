//! `--oha`: the ratio scenarios again through `oha`, an external load generator as a user
//! would measure with, so that the built-in client's figures can be checked against it. oha
//! sends the same headers on every connection: `GET /me` with one token for all of them (the
//! built-in client gives each connection its own session).

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// One oha run's summary.
pub struct OhaStats {
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Answers other than 2xx, and connection errors (not the requests cut off at the end).
    pub errors: u64,
}

/// oha on PATH, else at ~/.cargo/bin/oha.
pub fn find() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("oha"))
            .find(|p| p.is_file())
    });
    on_path.or_else(|| {
        let home = PathBuf::from(std::env::var_os("HOME")?);
        let oha = home.join(".cargo/bin/oha");
        oha.is_file().then_some(oha)
    })
}

/// Runs `oha` against `http://127.0.0.1:{port}{path}` for `duration` on `concurrency`
/// connections, with a bearer token if given, and reads its JSON summary.
pub fn run(
    oha: &PathBuf,
    port: u16,
    path: &str,
    bearer: Option<&str>,
    concurrency: usize,
    duration: Duration,
) -> OhaStats {
    // Versions before 1.5 spell the JSON output `-j` and have no --output-format.
    let help = Command::new(oha).arg("--help").output().unwrap();
    let json = if String::from_utf8_lossy(&help.stdout).contains("--output-format") {
        ["--output-format", "json"].as_slice()
    } else {
        ["-j"].as_slice()
    };
    let mut command = Command::new(oha);
    command
        .arg("-z")
        .arg(format!("{}ms", duration.as_millis()))
        .arg("-c")
        .arg(concurrency.to_string())
        .arg("--no-tui")
        .args(json);
    if let Some(token) = bearer {
        command
            .arg("-H")
            .arg(format!("Authorization: Bearer {token}"));
    }
    let output = command
        .arg(format!("http://127.0.0.1:{port}{path}"))
        .output()
        .expect("run oha");
    assert!(
        output.status.success(),
        "oha failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("oha's JSON summary");
    let seconds = |v: &serde_json::Value| v.as_f64().unwrap_or(0.0) * 1000.0;
    let count = |v: &serde_json::Value, skip: &dyn Fn(&str) -> bool| -> u64 {
        v.as_object()
            .into_iter()
            .flatten()
            .filter(|(k, _)| !skip(k))
            .map(|(_, n)| n.as_u64().unwrap_or(0))
            .sum()
    };
    OhaStats {
        rps: summary["summary"]["requestsPerSec"].as_f64().unwrap_or(0.0),
        p50_ms: seconds(&summary["latencyPercentiles"]["p50"]),
        p99_ms: seconds(&summary["latencyPercentiles"]["p99"]),
        errors: count(&summary["statusCodeDistribution"], &|k| k.starts_with('2'))
            + count(&summary["errorDistribution"], &|k| k.contains("deadline")),
    }
}
