//! The hashing pool's unit tests: hashing and verifying, the stored-hash limits, admission by
//! expected wait, abandoned jobs, and timing.

use argon2::password_hash::phc::PasswordHash;
use argon2::{Algorithm, Argon2, PasswordHasher as _, Version};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;

use super::*;

fn cheap() -> Argon2Config {
    Argon2Config {
        memory_kib: 64,
        iterations: 1,
        parallelism: 1,
        max_memory_kib: 262_144,
    }
}

/// About 10 to 40 ms a hash: costly enough to queue behind.
fn costly() -> Argon2Config {
    Argon2Config {
        memory_kib: 8192,
        iterations: 3,
        ..cheap()
    }
}

fn pool(concurrency: usize, queue_limit: usize, max_wait: Duration) -> PoolConfig {
    PoolConfig {
        concurrency,
        queue_limit,
        max_wait,
        nice: 0,
    }
}

fn roomy() -> PoolConfig {
    pool(2, 1024, Duration::from_secs(3600))
}

#[tokio::test]
async fn hashes_verify_and_report_old_parameters() {
    let hasher = PasswordHasher::new(&cheap(), roomy()).unwrap();
    let pw = Password::given("correct horse battery staple".into());
    let hash = hasher.hash(&pw).await.unwrap();
    assert!(hash.starts_with("$argon2id$v=19$m=64,t=1,p=1$"));
    // The argon2 crate reads it as a standard PHC string and verifies it.
    let parsed = PasswordHash::new(&hash).unwrap();
    assert!(
        argon2::PasswordVerifier::verify_password(
            &Argon2::default(),
            pw.expose().as_bytes(),
            &parsed
        )
        .is_ok()
    );
    let v = hasher.verify(&pw, Some(&hash)).await.unwrap();
    assert!(v.matches && !v.needs_rehash);
    let wrong = hasher
        .verify(&Password::given("wrong".into()), Some(&hash))
        .await
        .unwrap();
    assert!(!wrong.matches);

    let stronger = PasswordHasher::new(
        &Argon2Config {
            memory_kib: 128,
            ..cheap()
        },
        roomy(),
    )
    .unwrap();
    let v = stronger.verify(&pw, Some(&hash)).await.unwrap();
    assert!(v.matches && v.needs_rehash);
}

#[tokio::test]
async fn hashes_made_elsewhere_verify() {
    let hasher = PasswordHasher::new(&cheap(), roomy()).unwrap();
    let pw = Password::given("made by another program".into());
    // More memory than the pool's buffer, and argon2i.
    let big = Argon2::new(
        Algorithm::Argon2id,
        Version::V0x13,
        Params::new(256, 2, 1, None).unwrap(),
    )
    .hash_password(pw.expose().as_bytes())
    .unwrap()
    .to_string();
    let v = hasher.verify(&pw, Some(&big)).await.unwrap();
    assert!(v.matches && !v.needs_rehash);
    let argon2i = Argon2::new(
        Algorithm::Argon2i,
        Version::V0x13,
        Params::new(64, 1, 1, None).unwrap(),
    )
    .hash_password(pw.expose().as_bytes())
    .unwrap()
    .to_string();
    let v = hasher.verify(&pw, Some(&argon2i)).await.unwrap();
    assert!(v.matches && v.needs_rehash);
    let v = hasher.verify(&pw, Some("not a hash")).await.unwrap();
    assert!(!v.matches);
    let bcrypt = bcrypt::hash(pw.expose(), 4).unwrap();
    let v = hasher.verify(&pw, Some(&bcrypt)).await.unwrap();
    assert!(v.matches && v.needs_rehash);
}

#[tokio::test]
async fn unknown_accounts_never_match() {
    let hasher = PasswordHasher::new(&cheap(), roomy()).unwrap();
    let v = hasher
        .verify(
            &Password::given("dummy password for unknown accounts".into()),
            None,
        )
        .await
        .unwrap();
    assert!(!v.matches);
}

/// A PHC argon2id string with the given parameters (the hash itself is made up).
fn planted_argon2(m: u32, t: u32, p: u32) -> String {
    format!(
        "$argon2id$v=19$m={m},t={t},p={p}${}${}",
        STANDARD_NO_PAD.encode([7u8; 16]),
        STANDARD_NO_PAD.encode([9u8; 32])
    )
}

#[test]
fn stored_hashes_beyond_the_limits_are_refused() {
    let limits = HashLimits::from_config(&cheap());
    assert_eq!(
        check_stored_hash(&planted_argon2(19_456, 2, 1), &limits),
        Ok(StoredHash::Argon2)
    );
    assert_eq!(
        check_stored_hash(&planted_argon2(262_144, 10, 16), &limits),
        Ok(StoredHash::Argon2)
    );
    for (hash, what) in [
        (planted_argon2(262_145, 1, 1), "memory"),
        (planted_argon2(4 * 1024 * 1024, 1, 1), "memory"),
        (planted_argon2(65_536, 11, 1), "iterations"),
        (planted_argon2(65_536, 1_000_000, 1), "iterations"),
        (planted_argon2(65_536, 1, 17), "parallelism"),
    ] {
        let why = check_stored_hash(&hash, &limits).unwrap_err();
        assert!(why.contains(what), "{why}");
    }
    let cheap_bcrypt = bcrypt::hash("x", 4).unwrap();
    assert_eq!(
        check_stored_hash(&cheap_bcrypt, &limits),
        Ok(StoredHash::Bcrypt { cost: 4 })
    );
    let costly_bcrypt = cheap_bcrypt.replacen("$04$", "$15$", 1);
    let why = check_stored_hash(&costly_bcrypt, &limits).unwrap_err();
    assert!(why.contains("bcrypt cost 15"), "{why}");
    assert!(check_stored_hash(&cheap_bcrypt.replacen("$04$", "$31$", 1), &limits).is_err());
    assert!(check_stored_hash("$2b$12$short", &limits).is_err());
    assert!(check_stored_hash("stored-in-the-clear", &limits).is_err());
    // A configured cost above the built-in bounds raises them.
    let generous = HashLimits::from_config(&Argon2Config {
        iterations: 12,
        ..cheap()
    });
    assert!(check_stored_hash(&planted_argon2(65_536, 12, 1), &generous).is_ok());
}

#[tokio::test]
async fn a_planted_costly_hash_is_never_computed() {
    let hasher = PasswordHasher::new(&cheap(), roomy()).unwrap();
    let pw = Password::given("anything at all".into());
    // 4 GiB and a million passes: minutes and gigabytes if it ran.
    for planted in [
        planted_argon2(4 * 1024 * 1024, 1_000_000, 1),
        bcrypt::hash("x", 4).unwrap().replacen("$04$", "$31$", 1),
    ] {
        let started = Instant::now();
        let v = hasher.verify(&pw, Some(&planted)).await.unwrap();
        assert_eq!(v, NO_MATCH);
        assert!(started.elapsed() < Duration::from_secs(1));
    }
    assert_eq!(hasher.stats().computed, 0);
}

#[tokio::test]
async fn shedding_follows_the_expected_wait_not_a_queue_length() {
    // One thread; a budget of about ten hashes.
    let probe = PasswordHasher::new(&costly(), roomy()).unwrap();
    let mean = probe.stats().mean;
    drop(probe);
    let budget = mean * 10;
    let burst = |hasher: Arc<PasswordHasher>| async move {
        let pw = Password::given("x".repeat(10));
        let jobs: Vec<_> = (0..60)
            .map(|_| {
                let (h, pw) = (hasher.clone(), pw.clone());
                tokio::spawn(async move { h.verify(&pw, None).await })
            })
            .collect();
        let mut busy = Vec::new();
        for j in jobs {
            if let Err(Error::Busy { retry_after }) = j.await.unwrap() {
                busy.push(retry_after);
            }
        }
        busy
    };
    let tight = Arc::new(PasswordHasher::new(&costly(), pool(1, 1024, budget)).unwrap());
    let busy = burst(tight.clone()).await;
    let admitted = 60 - busy.len();
    // About 11 (budget / mean + the one running); generous bounds for a noisy machine.
    assert!((3..=40).contains(&admitted), "admitted {admitted}");
    assert!(
        busy.iter()
            .all(|r| *r >= Duration::from_secs(1) && r.subsec_nanos() == 0)
    );
    assert_eq!(tight.stats().computed as usize, admitted);

    // The same burst with room for it: all of it, whatever the queue's length.
    let roomy = Arc::new(PasswordHasher::new(&costly(), roomy()).unwrap());
    assert!(burst(roomy).await.is_empty());
    // HASH_QUEUE_LIMIT still bounds memory.
    let bounded =
        Arc::new(PasswordHasher::new(&costly(), pool(1, 5, Duration::from_secs(3600))).unwrap());
    assert!(!burst(bounded).await.is_empty());
}

#[tokio::test]
async fn retry_after_is_the_expected_wait_rounded_up() {
    assert_eq!(whole_seconds(Duration::ZERO), Duration::from_secs(1));
    assert_eq!(
        whole_seconds(Duration::from_millis(1001)),
        Duration::from_secs(2)
    );
    assert_eq!(
        whole_seconds(Duration::from_secs(3)),
        Duration::from_secs(3)
    );
    // No threads: the queue stays as filled. A job "takes" 700 ms; 5 ahead on 2 threads: 1.75 s.
    let hasher =
        PasswordHasher::with_threads(&cheap(), pool(2, 1024, Duration::from_secs(1)), 0).unwrap();
    hasher
        .shared
        .mean_nanos
        .store(700_000_000, Ordering::Relaxed);
    let mut queue = hasher.shared.lock();
    let mut answers = Vec::new();
    for _ in 0..5 {
        let (reply, answer) = oneshot::channel();
        answers.push(answer);
        queue.jobs.push_back((
            Instant::now(),
            Job::Hash {
                password: Password::given("x".into()),
                reply,
            },
        ));
    }
    drop(queue);
    assert_eq!(hasher.expected_wait(5), Duration::from_millis(1750));
    let (reply, _answer) = oneshot::channel();
    match hasher.submit(Job::Hash {
        password: Password::given("x".into()),
        reply,
    }) {
        Err(Error::Busy { retry_after }) => assert_eq!(retry_after, Duration::from_secs(2)),
        other => panic!("{:?}", other.err()),
    }
    // Once the requests behind the queued jobs have gone, their room is free again.
    drop(answers);
    let (reply, _answer) = oneshot::channel();
    assert!(
        hasher
            .submit(Job::Hash {
                password: Password::given("x".into()),
                reply,
            })
            .is_ok()
    );
    assert_eq!(hasher.stats().abandoned, 5);
}

#[tokio::test]
async fn jobs_whose_requests_have_gone_are_not_computed() {
    let hasher =
        Arc::new(PasswordHasher::new(&costly(), pool(1, 1024, Duration::from_secs(3600))).unwrap());
    let pw = Password::given("x".repeat(10));
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let (h, pw) = (hasher.clone(), pw.clone());
            tokio::spawn(async move { h.verify(&pw, None).await })
        })
        .collect();
    // Once all are submitted, every request goes away.
    while hasher.stats().queued + (hasher.stats().computed as usize) < 19 {
        tokio::task::yield_now().await;
    }
    for t in &tasks {
        t.abort();
    }
    for t in tasks {
        let _ = t.await;
    }
    loop {
        let stats = hasher.stats();
        if stats.queued == 0 && stats.computed + stats.abandoned >= 20 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let stats = hasher.stats();
    assert!(stats.computed <= 4, "{stats:?}");
    assert!(stats.abandoned >= 16, "{stats:?}");
}

#[tokio::test]
async fn a_bcrypt_verification_costs_at_least_an_argon2_one() {
    let hasher = PasswordHasher::new(&costly(), roomy()).unwrap();
    let pw = Password::given("the password".into());
    let argon2 = hasher.hash(&pw).await.unwrap();
    let bcrypt = bcrypt::hash(pw.expose(), 4).unwrap();
    let wrong = Password::given("not the password".into());
    // Alternately, so that the machine's noise falls on both alike; medians of five.
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        for (stored, times) in [(&argon2, &mut a), (&bcrypt, &mut b)] {
            let started = Instant::now();
            hasher.verify(&wrong, Some(stored)).await.unwrap();
            times.push(started.elapsed());
        }
    }
    a.sort();
    b.sort();
    let (a, b) = (a[2], b[2]);
    // bcrypt at cost 4 alone takes about 1 ms; with the dummy argon2 it takes an argon2's time.
    assert!(b * 2 >= a, "bcrypt {b:?}, argon2 {a:?}");
}
