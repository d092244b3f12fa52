//! The machine: its cores and CPU, and the argon2id cost that bounds logins on it.

use std::time::Instant;

use crate::{PASSWORD, SECRET};

/// The CPU model, as /proc/cpuinfo names it (empty if unknown).
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default()
}

/// The argon2id cost at the configured (default) parameters: one hash alone, and the most
/// hashes per second all cores can do at once, each thread reusing its memory as the server's
/// hashing threads do. The second is the login ceiling: on machines whose vCPUs share physical
/// cores, it is well below `cores / one hash`.
pub fn argon2_cost(cores: usize) -> (f64, f64, String) {
    use argon2::{Algorithm, Argon2, Block, Params, PasswordHasher, Version};
    let config = auth_server::Config::from_vars([("SECRET_KEY", SECRET)]).unwrap();
    let params = Params::new(
        config.argon2.memory_kib,
        config.argon2.iterations,
        config.argon2.parallelism,
        None,
    )
    .unwrap();
    let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    let hash = argon2
        .hash_password(PASSWORD.as_bytes())
        .unwrap()
        .to_string();
    let hash_with = |memory: &mut Vec<Block>| {
        let mut out = [0u8; 32];
        argon2
            .hash_password_into_with_memory(
                PASSWORD.as_bytes(),
                b"a benchmark salt",
                &mut out,
                memory,
            )
            .unwrap();
    };
    let mut memory = vec![Block::default(); params.block_count()];
    let mut alone: Vec<f64> = (0..15)
        .map(|_| {
            let t = Instant::now();
            hash_with(&mut memory);
            t.elapsed().as_secs_f64()
        })
        .collect();
    alone.sort_by(f64::total_cmp);
    let per_thread = 30;
    let t = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..cores {
            s.spawn(|| {
                let mut memory = vec![Block::default(); params.block_count()];
                for _ in 0..per_thread {
                    hash_with(&mut memory);
                }
            });
        }
    });
    let parallel = (cores * per_thread) as f64 / t.elapsed().as_secs_f64();
    (alone[alone.len() / 2], parallel, hash)
}
