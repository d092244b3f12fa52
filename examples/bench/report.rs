//! The report: one table of the scenarios, then the targets, each with its measured ratio.

use crate::load::Stats;
use crate::oha::OhaStats;

pub struct Row {
    pub name: String,
    pub stats: Stats,
    /// The server's; 0 for the reference's rows (not measured).
    pub peak_rss_kib: u64,
}

/// The scenarios the targets and the per-core table read, by name.
pub const TRIVIAL: &str = "GET /health/live (trivial route)";
pub const REFERENCE_TRIVIAL: &str = "reference: GET /health/live";
pub const ME: &str = "GET /me";
pub const REFERENCE_ME: &str = "reference: GET /me";
pub const LOGIN: &str = "POST /login";
pub const REGISTER: &str = "POST /register";
pub const REFRESH: &str = "POST /refresh (following the chain)";
pub const ME_DURING_STORM: &str = "GET /me during a login storm";
pub const MFA_LOGIN: &str = "POST /login + /login/mfa (TOTP)";
pub const PASSKEY_LOGIN: &str = "POST /login/passkey";

fn find<'a>(rows: &'a [Row], name: &str) -> Option<&'a Stats> {
    rows.iter().find(|r| r.name == name).map(|r| &r.stats)
}

pub fn print_table(rows: &[Row]) {
    println!();
    println!(
        "| {:<40} | {:>9} | {:>8} | {:>8} | {:>8} | {:>6} | {:>9} |",
        "scenario", "req/s", "p50 ms", "p99 ms", "p99.9 ms", "errors", "peak RSS"
    );
    println!(
        "|{:-<42}|{:->11}|{:->10}|{:->10}|{:->10}|{:->8}|{:->11}|",
        "", "", "", "", "", "", ""
    );
    for r in rows {
        let peak = if r.peak_rss_kib == 0 {
            "-".to_string()
        } else {
            format!("{:.1} MiB", r.peak_rss_kib as f64 / 1024.0)
        };
        println!(
            "| {:<40} | {:>9.0} | {:>8.2} | {:>8.2} | {:>8.2} | {:>6} | {:>9} |",
            r.name,
            r.stats.rps(),
            r.stats.percentile(0.50),
            r.stats.percentile(0.99),
            r.stats.percentile(0.999),
            r.stats.errors,
            peak
        );
    }
}

/// What the targets are measured against.
pub struct Baseline {
    pub cores: usize,
    /// Hashes a second with every core hashing at once.
    pub login_ceiling: f64,
    pub users: usize,
    /// "SQLite" or "PostgreSQL".
    pub database: &'static str,
    /// The large-database scenarios' users and live sessions, if they ran.
    pub large: Option<(usize, usize)>,
}

/// The name of the large-database login scenario.
pub fn large_login(users: usize) -> String {
    format!("POST /login ({users} users)")
}

/// The name of the large-database /me scenario.
pub fn large_me(users: usize, sessions: usize) -> String {
    format!("GET /me ({users} users, {sessions} sessions)")
}

/// Prints the targets, met or missed, each with its ratio and the database. False, printing
/// nothing, if the run was partial (`--only`) and lacks the scenarios they compare.
pub fn check_targets(rows: &[Row], baseline: &Baseline) -> bool {
    let Baseline {
        cores,
        login_ceiling,
        users,
        database,
        large,
    } = *baseline;
    let get = |name: &str| find(rows, name);
    let (
        Some(reference_trivial),
        Some(trivial),
        Some(reference_me),
        Some(me),
        Some(login),
        Some(register),
        Some(me_storm),
    ) = (
        get(REFERENCE_TRIVIAL),
        get(TRIVIAL),
        get(REFERENCE_ME),
        get(ME),
        get(LOGIN),
        get(REGISTER),
        get(ME_DURING_STORM),
    )
    else {
        // A partial run (--only) has no targets to check.
        return false;
    };
    let peak = rows.iter().map(|r| r.peak_rss_kib).max().unwrap_or(0) as f64 / 1024.0;
    let pool_mib = cores as f64 * 19456.0 / 1024.0;
    println!();
    println!("targets (measured in this run, on {database}):");
    let check = |what: String, ok: bool| {
        println!(
            "  [{}] {what} ({database})",
            if ok { "met" } else { "MISSED" }
        )
    };
    check(
        format!(
            "trivial route at least 90% of the bare axum reference's: {:.0}%",
            100.0 * trivial.rps() / reference_trivial.rps()
        ),
        trivial.rps() >= 0.9 * reference_trivial.rps(),
    );
    let me_share = if database == "PostgreSQL" { 0.5 } else { 0.65 };
    check(
        format!(
            "GET /me at least {:.0}% of the bare axum reference's: {:.0}%",
            100.0 * me_share,
            100.0 * me.rps() / reference_me.rps()
        ),
        me.rps() >= me_share * reference_me.rps(),
    );
    check(
        format!(
            "login at least 95% of the hash ceiling ({login_ceiling:.1}/s): {:.0}%",
            100.0 * login.rps() / login_ceiling
        ),
        login.rps() >= 0.95 * login_ceiling,
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
    if let Some((large_users, large_sessions)) = large
        && let (Some(login_large), Some(me_large)) = (
            get(&large_login(large_users)),
            get(&large_me(large_users, large_sessions)),
        )
    {
        check(
            format!(
                "login with {large_users} users within 10% of {users}: {:.0}%",
                100.0 * login_large.rps() / login.rps()
            ),
            login_large.rps() >= 0.9 * login.rps(),
        );
        check(
            format!(
                "/me with {large_users} users and {large_sessions} live sessions (spread over \
                 many of them) within 10% of {users} users: {:.0}%",
                100.0 * me_large.rps() / me.rps()
            ),
            me_large.rps() >= 0.9 * me.rps(),
        );
    }
    check(
        format!(
            "peak RSS under 100 MiB + the hashing pool's argon2 memory ({pool_mib:.0} MiB): {peak:.1} MiB"
        ),
        peak < 100.0 + pool_mib,
    );
    true
}

/// The ratio scenarios through both load generators, side by side (`--oha`).
pub fn print_oha(rows: &[Row], oha: &[(&str, OhaStats)]) {
    println!();
    println!(
        "the ratio scenarios through oha as well (oha sends one token on every connection; the built-in client one per connection):"
    );
    println!(
        "| {:<40} | {:>14} | {:>9} | {:>10} | {:>10} | {:>10} |",
        "scenario", "built-in req/s", "oha req/s", "oha p50 ms", "oha p99 ms", "oha errors"
    );
    println!(
        "|{:-<42}|{:->16}|{:->11}|{:->12}|{:->12}|{:->12}|",
        "", "", "", "", "", ""
    );
    for (name, o) in oha {
        let builtin = find(rows, name).map_or(0.0, Stats::rps);
        println!(
            "| {:<40} | {:>14.0} | {:>9.0} | {:>10.2} | {:>10.2} | {:>10} |",
            name, builtin, o.rps, o.p50_ms, o.p99_ms, o.errors
        );
    }
    let builtin = |name| find(rows, name).map_or(f64::NAN, Stats::rps);
    let oha_rps = |name| {
        oha.iter()
            .find(|(n, _)| *n == name)
            .map_or(f64::NAN, |(_, o)| o.rps)
    };
    for (what, server, reference) in [
        ("trivial route", TRIVIAL, REFERENCE_TRIVIAL),
        ("GET /me", ME, REFERENCE_ME),
    ] {
        println!(
            "  {what} / bare axum reference: built-in client {:.0}%, oha {:.0}%",
            100.0 * builtin(server) / builtin(reference),
            100.0 * oha_rps(server) / oha_rps(reference)
        );
    }
}

/// Per core of this machine, in the manner of Keycloak's sizing guide: what each scenario
/// served divided by the cores (which the load generator shares).
pub fn print_per_core(rows: &[Row], cores: usize) {
    let lines = [
        ("password logins/s (argon2id defaults)", LOGIN),
        ("MFA logins/s (password + TOTP)", MFA_LOGIN),
        ("passkey logins/s", PASSKEY_LOGIN),
        ("refreshes/s", REFRESH),
        ("token checks/s (GET /me)", ME),
    ];
    if lines.iter().all(|(_, name)| find(rows, name).is_none()) {
        return;
    }
    println!();
    println!(
        "per core ({cores} cores, shared with the load generator, so a dedicated server does more):"
    );
    println!("| {:<38} | {:>10} |", "per core", "per second");
    println!("|{:-<40}|{:->12}|", "", "");
    for (what, name) in lines {
        if let Some(stats) = find(rows, name) {
            println!("| {:<38} | {:>10.1} |", what, stats.rps() / cores as f64);
        }
    }
}
