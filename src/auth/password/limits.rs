//! The bounds a stored hash must be within before it is ever computed.

use argon2::password_hash::phc::PasswordHash;
use argon2::{Algorithm, Params};

use crate::config::Argon2Config;

/// The most a stored hash may cost to verify. A hash beyond them (a planted row, a bad import)
/// is never computed: it could otherwise make each login attempt spend minutes or gigabytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HashLimits {
    /// argon2 `m`, in KiB (ARGON2_MAX_MEMORY_KIB, at least ARGON2_MEMORY_KIB).
    pub max_memory_kib: u32,
    /// argon2 `t`: 10, or ARGON2_ITERATIONS if higher.
    pub max_iterations: u32,
    /// argon2 `p`: 16, or ARGON2_PARALLELISM if higher.
    pub max_parallelism: u32,
    /// bcrypt's cost (2^cost rounds): 14, four times the original service's 12.
    pub max_bcrypt_cost: u32,
}

impl HashLimits {
    pub const MAX_ITERATIONS: u32 = 10;
    pub const MAX_PARALLELISM: u32 = 16;
    pub const MAX_BCRYPT_COST: u32 = 14;

    pub fn from_config(config: &Argon2Config) -> Self {
        Self {
            max_memory_kib: config.max_memory_kib.max(config.memory_kib),
            max_iterations: Self::MAX_ITERATIONS.max(config.iterations),
            max_parallelism: Self::MAX_PARALLELISM.max(config.parallelism),
            max_bcrypt_cost: Self::MAX_BCRYPT_COST,
        }
    }
}

/// What a stored hash is, once checked against [`HashLimits`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoredHash {
    /// passlib's bcrypt (`$2a$`, `$2b$`, `$2y$`) with its cost.
    Bcrypt { cost: u32 },
    /// A PHC argon2 string (argon2id, argon2i or argon2d).
    Argon2,
}

/// Checks a stored hash's form and cost, without computing anything; the error says why it
/// cannot be used (one line, without the hash).
pub fn check_stored_hash(
    stored: &str,
    limits: &HashLimits,
) -> std::result::Result<StoredHash, String> {
    if ["$2a$", "$2b$", "$2y$"]
        .iter()
        .any(|p| stored.starts_with(p))
    {
        let parts: bcrypt::HashParts = stored
            .parse()
            .map_err(|_| "the password hash is not a well-formed bcrypt hash".to_string())?;
        let cost = parts.get_cost();
        if cost > limits.max_bcrypt_cost {
            return Err(format!(
                "the bcrypt cost {cost} is over the limit of {}",
                limits.max_bcrypt_cost
            ));
        }
        return Ok(StoredHash::Bcrypt { cost });
    }
    let parsed = PasswordHash::new(stored)
        .map_err(|_| "the password hash is not bcrypt or argon2".to_string())?;
    let (Ok(_), Ok(params), Some(_), Some(_)) = (
        Algorithm::new(parsed.algorithm.as_str()),
        Params::try_from(&parsed),
        parsed.salt,
        parsed.hash,
    ) else {
        return Err("the password hash is not bcrypt or argon2".into());
    };
    if params.m_cost() > limits.max_memory_kib {
        return Err(format!(
            "the argon2 memory {} KiB is over the limit of {} KiB (ARGON2_MAX_MEMORY_KIB)",
            params.m_cost(),
            limits.max_memory_kib
        ));
    }
    if params.t_cost() > limits.max_iterations {
        return Err(format!(
            "the argon2 iterations {} are over the limit of {}",
            params.t_cost(),
            limits.max_iterations
        ));
    }
    if params.p_cost() > limits.max_parallelism {
        return Err(format!(
            "the argon2 parallelism {} is over the limit of {}",
            params.p_cost(),
            limits.max_parallelism
        ));
    }
    Ok(StoredHash::Argon2)
}
