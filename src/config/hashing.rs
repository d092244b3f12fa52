//! Password hashing: the argon2id cost of new hashes, the most a stored hash may cost, and the
//! pool that runs them (how many at once, how long one may wait).

use std::time::Duration;

use super::ConfigError;
use super::values::{converted, milliseconds, parsed, positive, positive_capped, within};

// The argon2id parameters of new hashes, and the bound on stored ones.
#[derive(Clone, Debug, clap::Args)]
#[command(next_help_heading = "Password hashing")]
pub struct Argon2Config {
    /// argon2id memory cost of new hashes (OWASP's recommendation); a stored hash with weaker
    /// parameters is upgraded at the next successful login
    #[arg(
        long = "argon2-memory-kib",
        env = "ARGON2_MEMORY_KIB",
        value_name = "KIB",
        default_value = "19456",
        value_parser = parsed::<u32>
    )]
    pub memory_kib: u32,

    /// argon2id time cost of new hashes
    #[arg(
        long = "argon2-iterations",
        env = "ARGON2_ITERATIONS",
        value_name = "N",
        default_value = "2",
        value_parser = parsed::<u32>
    )]
    pub iterations: u32,

    /// argon2id lanes of new hashes
    #[arg(
        long = "argon2-parallelism",
        env = "ARGON2_PARALLELISM",
        value_name = "N",
        default_value = "1",
        value_parser = parsed::<u32>
    )]
    pub parallelism: u32,

    /// The most memory a stored argon2 hash may ask for (at least ARGON2_MEMORY_KIB); a hash
    /// asking for more is never verified nor imported
    #[arg(
        long = "argon2-max-memory-kib",
        env = "ARGON2_MAX_MEMORY_KIB",
        value_name = "KIB",
        default_value = "262144",
        value_parser = parsed::<u32>
    )]
    pub max_memory_kib: u32,
}

impl Argon2Config {
    /// argon2 accepts the parameters together, and the bound on stored hashes admits new ones.
    pub fn validate(&mut self) -> Result<(), ConfigError> {
        let Self {
            memory_kib,
            iterations,
            parallelism,
            max_memory_kib,
        } = *self;
        argon2::Params::new(memory_kib, iterations, parallelism, None).map_err(|e| {
            ConfigError::new(
                "ARGON2_MEMORY_KIB",
                format!(
                    "argon2 refuses memory={memory_kib} KiB, iterations={iterations}, parallelism={parallelism}: {e}"
                ),
            )
        })?;
        if max_memory_kib < memory_kib {
            return Err(ConfigError::new(
                "ARGON2_MAX_MEMORY_KIB",
                format!("{max_memory_kib} is less than ARGON2_MEMORY_KIB ({memory_kib})"),
            ));
        }
        Ok(())
    }
}

// The hashing pool: a login storm waits here, not on the request workers.
#[derive(Clone, Debug, clap::Args)]
#[command(next_help_heading = "Password hashing")]
pub struct HashingConfig {
    /// How many password hashes run at once (default: the number of cores)
    #[arg(
        long = "hash-concurrency",
        env = "HASH_CONCURRENCY",
        value_name = "N",
        default_value_t = cores(),
        value_parser = positive::<usize>
    )]
    pub concurrency: usize,

    /// A hard bound on the hashes waiting for a slot, for memory; beyond it, 503 at once (at
    /// most 1000000)
    #[arg(
        long = "hash-queue-limit",
        env = "HASH_QUEUE_LIMIT",
        value_name = "N",
        default_value = "1024",
        value_parser = positive_capped(1_000_000usize)
    )]
    pub queue_limit: usize,

    /// A login, registration or password change whose hash would wait longer than this (by the
    /// measured hash time) is answered 503 at once, Retry-After = that wait (at most an hour)
    #[arg(
        long = "hash-max-wait-milliseconds",
        env = "HASH_MAX_WAIT_MILLISECONDS",
        value_name = "MILLISECONDS",
        default_value = "5000",
        value_parser = milliseconds(positive_capped(3_600_000))
    )]
    pub max_wait: Duration,

    /// The hashing threads' nice value (0 to 19; Linux): above 0, request workers get the
    /// cores first while hashes run (a token check's latency during a login storm), and hashes
    /// still get a share of them under any load (they are never starved, as they would be at
    /// idle priority)
    #[arg(
        long = "hash-nice",
        env = "HASH_NICE",
        value_name = "NICE",
        default_value = "19",
        value_parser = converted(within(0u64, 19), |n| n as i32)
    )]
    pub nice: i32,
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}
