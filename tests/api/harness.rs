//! The harness's own promises: nothing a test starts outlives it, however the test ends (a
//! panic, a start that fails, the test binary SIGKILLed).

use std::io::BufRead;
use std::time::{Duration, Instant};

use crate::helpers::*;

const CHEAP: &[(&str, &str)] = &[("ARGON2_MEMORY_KIB", "256"), ("ARGON2_ITERATIONS", "1")];

/// Set for the probe below, run as a test binary of its own.
const PROBE: &str = "AUTH_SERVER_TEST_PROBE";

/// Whether process `pid` no longer runs: it is gone, or a zombie nobody has reaped yet, or the
/// pid now belongs to something other than the server.
fn no_longer_runs(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return true;
    };
    let zombie = stat
        .rsplit_once(')')
        .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'));
    let server = std::fs::read(format!("/proc/{pid}/cmdline"))
        .is_ok_and(|cmdline| String::from_utf8_lossy(&cmdline).contains("auth-server"));
    zombie || !server
}

/// Waits up to `within` for process `pid` to stop running.
async fn stops_running(pid: u32, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while !no_longer_runs(pid) {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

/// The pid in a message such as "the server (pid 1234) did not ..." or "pid 1234 did not ...".
fn pid_in(message: &str) -> u32 {
    let after = message.split("pid ").nth(1).expect("a pid in the message");
    after
        .trim_start()
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

/// Not a test on its own (it returns at once): run as a process of its own by the test below,
/// it starts a child server, says its pid, and waits to be killed.
#[tokio::test]
async fn child_server_probe() {
    if std::env::var_os(PROBE).is_none() {
        return;
    }
    let server = ChildServer::on_test_database(CHEAP).await;
    println!(
        "probe: server pid {} in {} at {}",
        server.pid(),
        server.dir().display(),
        server.database_url()
    );
    std::future::pending::<()>().await;
}

#[tokio::test]
async fn a_child_server_dies_with_the_test_binary_even_when_that_is_sigkilled() {
    let mut command = std::process::Command::new(std::env::current_exe().unwrap());
    command
        .args([
            "harness::child_server_probe",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(PROBE, "1")
        // Its database cannot be dropped by a probe that is SIGKILLed: a SQLite file, removed here.
        .env_remove("TEST_DATABASE_URL")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
    let probe = OwnedChild::spawn(command);
    let stdout = probe.take_stdout();
    let (lines, said) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let line = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        // Blocking this test's own runtime, which has nothing else to do meanwhile.
        let line = said
            .recv_timeout(left)
            .expect("the probe says its server's pid within 60 s");
        // After libtest's "test harness::child_server_probe ... ", on the same line.
        if let Some((_, said)) = line.split_once("probe: server pid") {
            break said.to_string();
        }
    };
    let pid = pid_in(&format!("pid {line}"));
    let (dir, database) = line
        .split_once(" in ")
        .and_then(|(_, rest)| rest.split_once(" at sqlite://"))
        .map(|(dir, database)| (dir.to_string(), database.to_string()))
        .expect("the probe's directory and database");
    assert!(!no_longer_runs(pid), "the probe's server is not running");

    // The test binary is SIGKILLed: no destructor, no unwinding, nothing of it runs any more.
    probe.signal(libc::SIGKILL);
    probe
        .exited_within(Duration::from_secs(10))
        .await
        .expect("SIGKILL kills the probe");
    let stopped = stops_running(pid, Duration::from_secs(10)).await;
    let _ = std::fs::remove_dir_all(&dir);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{database}{suffix}"));
    }
    if !stopped {
        // SAFETY: kill(2) on the orphan this test made, so as not to leave it behind.
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGKILL);
        }
    }
    assert!(
        stopped,
        "the server (pid {pid}) outlived the SIGKILLed test binary"
    );
}

/// The parent-death signal fires when the thread that forked the child ends: a server started
/// on a thread that then ends (as a blocking-pool thread, or another runtime's, may) still runs.
#[tokio::test]
async fn a_child_server_outlives_the_thread_that_started_it() {
    let server = std::thread::spawn(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(ChildServer::on_test_database(CHEAP))
    })
    .join()
    .unwrap();
    let response = reqwest::get(server.url("/health/live")).await;
    assert!(
        response.is_ok_and(|r| r.status() == 200),
        "the server died with the thread that started it: {}",
        server.output()
    );
}

#[tokio::test]
async fn a_child_server_is_killed_and_reaped_when_its_test_panics() {
    let (started, pid) = tokio::sync::oneshot::channel();
    let test = tokio::spawn(async move {
        let server = ChildServer::on_test_database(CHEAP).await;
        started.send(server.pid()).unwrap();
        panic!("a test fails while its server runs");
    });
    let pid = pid.await.unwrap();
    assert!(test.await.unwrap_err().is_panic());
    // Dropping it kills and reaps it: gone by the time the panic is reported, and no zombie.
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "pid {pid} is still there after its test panicked"
    );
}

#[tokio::test]
async fn a_child_server_that_never_says_it_listens_is_killed_when_the_start_gives_up() {
    // Without info lines the server never says where it listens: the start waits in vain.
    let mut env = CHEAP.to_vec();
    env.push(("RUST_LOG", "warn"));
    let start = tokio::spawn(async move {
        ChildServer::up_within(&env, Duration::from_secs(3)).await;
    });
    let message = panic_message(start.await.unwrap_err().into_panic());
    assert!(
        message.contains("did not say where it listens"),
        "{message}"
    );
    let pid = pid_in(&message);
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "pid {pid} is still there after its start failed"
    );
}

#[test]
fn a_command_that_does_not_end_in_time_is_killed() {
    let mut command = server_command();
    command
        .env("DATABASE_URL", "sqlite::memory:")
        .env("PORT", "0")
        .env("SECRET_KEY", SECRET);
    let failed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        run_to_end(command, Duration::from_secs(3))
    }))
    .expect_err("a server does not end on its own");
    let message = panic_message(failed);
    let pid = pid_in(&message);
    assert!(message.contains("did not end within"), "{message}");
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "pid {pid} is still there"
    );
}
