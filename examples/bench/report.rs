//! The report: one table of the scenarios, then the targets, each with its measured ratio.

use crate::load::Stats;

pub struct Row {
    pub name: String,
    pub stats: Stats,
    pub peak_rss_kib: u64,
}

pub fn print_table(rows: &[Row]) {
    println!();
    println!(
        "| {:<34} | {:>9} | {:>8} | {:>8} | {:>8} | {:>6} | {:>9} |",
        "scenario", "req/s", "p50 ms", "p99 ms", "p99.9 ms", "errors", "peak RSS"
    );
    println!(
        "|{:-<36}|{:->11}|{:->10}|{:->10}|{:->10}|{:->8}|{:->11}|",
        "", "", "", "", "", "", ""
    );
    for r in rows {
        println!(
            "| {:<34} | {:>9.0} | {:>8.2} | {:>8.2} | {:>8.2} | {:>6} | {:>6.1} MiB |",
            r.name,
            r.stats.rps(),
            r.stats.percentile(0.50),
            r.stats.percentile(0.99),
            r.stats.percentile(0.999),
            r.stats.errors,
            r.peak_rss_kib as f64 / 1024.0
        );
    }
}

/// What the targets are measured against.
pub struct Baseline {
    pub cores: usize,
    /// Hashes a second with every core hashing at once.
    pub login_ceiling: f64,
    pub users: usize,
    /// The large-database scenarios' users, if they ran.
    pub large_users: Option<usize>,
}

/// Prints the targets, met or missed. False, printing nothing, if the run was partial (`--only`)
/// and lacks the scenarios they compare.
pub fn check_targets(rows: &[Row], baseline: &Baseline) -> bool {
    let Baseline {
        cores,
        login_ceiling,
        users,
        large_users,
    } = *baseline;
    let get = |name: &str| {
        rows.iter()
            .find(|r| r.name.starts_with(name))
            .map(|r| &r.stats)
    };
    let (Some(trivial), Some(me), Some(login), Some(register), Some(me_storm)) = (
        get("GET /health/live"),
        get("GET /me"),
        get("POST /login"),
        get("POST /register"),
        get("GET /me during"),
    ) else {
        // A partial run (--only) has no targets to check.
        return false;
    };
    let peak = rows.iter().map(|r| r.peak_rss_kib).max().unwrap_or(0) as f64 / 1024.0;
    let pool_mib = cores as f64 * 19456.0 / 1024.0;
    println!();
    println!("targets (measured in this run):");
    let check =
        |what: String, ok: bool| println!("  [{}] {what}", if ok { "met" } else { "MISSED" });
    check(
        format!(
            "GET /me at least 50% of the trivial route: {:.0}%",
            100.0 * me.rps() / trivial.rps()
        ),
        me.rps() >= 0.5 * trivial.rps(),
    );
    check(
        format!(
            "login at least 90% of the hash ceiling ({login_ceiling:.1}/s): {:.0}%",
            100.0 * login.rps() / login_ceiling
        ),
        login.rps() >= 0.9 * login_ceiling,
    );
    check(
        format!(
            "register at least 80% of login: {:.0}%",
            100.0 * register.rps() / login.rps()
        ),
        register.rps() >= 0.8 * login.rps(),
    );
    check(
        format!(
            "/me p99 during the login storm at most 3x alone: {:.2} ms vs {:.2} ms ({:.1}x)",
            me_storm.percentile(0.99),
            me.percentile(0.99),
            me_storm.percentile(0.99) / me.percentile(0.99)
        ),
        me_storm.percentile(0.99) <= 3.0 * me.percentile(0.99),
    );
    if let Some(large_users) = large_users {
        let login_large = rows
            .iter()
            .find(|r| r.name.starts_with("POST /login ("))
            .unwrap();
        let me_large = rows
            .iter()
            .find(|r| r.name.starts_with("GET /me ("))
            .unwrap();
        check(
            format!(
                "login with {} users within 10% of {}: {:.0}%",
                large_users,
                users,
                100.0 * login_large.stats.rps() / login.rps()
            ),
            login_large.stats.rps() >= 0.9 * login.rps(),
        );
        check(
            format!(
                "/me with {} users within 10% of {}: {:.0}%",
                large_users,
                users,
                100.0 * me_large.stats.rps() / me.rps()
            ),
            me_large.stats.rps() >= 0.9 * me.rps(),
        );
    }
    check(
        format!(
            "peak RSS under 64 MiB + the hashing pool's argon2 memory ({pool_mib:.0} MiB): {peak:.1} MiB"
        ),
        peak < 64.0 + pool_mib,
    );
    true
}
