//! Faults on demand: an SMTP server that refuses a mail for now or for good, or never answers,
//! and a database that holds a request past REQUEST_TIMEOUT_SECONDS. The server's clock is
//! frozen, so every time in the outbox is exact; the tests wait on conditions (what the SMTP
//! server saw, the outbox row, the end of a worker's pass), never on a fixed sleep.

use std::time::{Duration, Instant};

use reqwest::StatusCode;

use crate::helpers::*;
use crate::smtp::{Logs, Reply, SmtpSink, VERIFY, WAIT, app_with_mail, worker_looked};

/// MAX_BACKOFF_MS in src/mail/worker.rs: the longest wait between two attempts.
const CAP_MS: i64 = 3_600_000;

/// A mail's row in the outbox.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Row {
    attempts: i64,
    next_attempt_at: i64,
    locked_until: Option<i64>,
    sent_at: Option<i64>,
    failed_at: Option<i64>,
    body: String,
    last_error: Option<String>,
}

impl Row {
    /// The outcome of its last attempt is recorded (it is not claimed).
    fn settled(&self, attempts: i64) -> bool {
        self.attempts == attempts && self.locked_until.is_none()
    }
}

type RowTuple = (
    i64,
    i64,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    String,
    Option<String>,
);

/// The one mail to `to`.
async fn outbox_row(app: &TestApp, to: &str) -> Row {
    const SQL: &str = "SELECT attempts, next_attempt_at, locked_until, sent_at, failed_at, \
                       body_text, last_error FROM mail_outbox WHERE recipient = $1";
    let (attempts, next_attempt_at, locked_until, sent_at, failed_at, body, last_error): RowTuple =
        match &app.sql {
            TestPool::Sqlite(pool) => sqlx::query_as(SQL).bind(to).fetch_one(pool).await,
            TestPool::Postgres(pool) => sqlx::query_as(SQL).bind(to).fetch_one(pool).await,
        }
        .unwrap();
    Row {
        attempts,
        next_attempt_at,
        locked_until,
        sent_at,
        failed_at,
        body,
        last_error,
    }
}

/// Waits until the mail to `to` is `what` (`done`); panics after [`WAIT`].
async fn wait_row(app: &TestApp, to: &str, what: &str, done: impl Fn(&Row) -> bool) -> Row {
    eventually(
        &format!("the mail to {to} becoming {what}"),
        WAIT,
        || outbox_row(app, to),
        done,
    )
    .await
}

/// Queues a mail to `to`, due at `due`, as a request (on any instance) would have.
async fn enqueue(app: &TestApp, to: &str, due: i64) {
    let sql = "INSERT INTO mail_outbox \
               (id, recipient, subject, body_text, created_at, attempts, next_attempt_at) \
               VALUES ($1, $2, 'A test mail', 'A body', CAST($3 AS BIGINT), 0, CAST($3 AS BIGINT))";
    let id = uuid::Uuid::new_v4().to_string();
    app.sql.execute3(sql, &id, to, &due.to_string()).await;
}

/// Registers `email` (which queues its verification mail, with a token in it).
async fn register(app: &TestApp, email: &str) {
    assert_eq!(
        app.register(email, PASSWORD, "Mailed").await.status(),
        StatusCode::CREATED
    );
}

/// The wait after the `attempts`-th failed attempt with MAIL_RETRY_BASE_SECONDS `base_ms`.
fn backoff(base_ms: i64, attempts: u32) -> i64 {
    (base_ms << (attempts - 1)).min(CAP_MS)
}

/// At 1 ms before `due` the worker looks and leaves the mail to `to` alone (still `attempts`
/// attempts); at `due` it attempts it. Returns the row once that attempt's outcome is recorded.
async fn next_attempt_exactly_at(
    app: &TestApp,
    sink: &SmtpSink,
    logs: &Logs,
    to: &str,
    due: i64,
    attempts: i64,
) -> Row {
    app.clock.set_ms(due - 1);
    worker_looked(app, logs).await;
    let before = outbox_row(app, to).await;
    assert!(before.settled(attempts), "1 ms early: {before:?}");
    assert_eq!(sink.attempts_to(to).len(), attempts as usize, "1 ms early");

    app.clock.set_ms(due);
    app.state.mail_wakeup.notify_one();
    let after = wait_row(app, to, "attempted once more", |r| r.settled(attempts + 1)).await;
    assert_eq!(sink.attempts_to(to).len(), attempts as usize + 1);
    after
}

#[tokio::test]
async fn transient_failures_are_retried_on_a_doubling_schedule_up_to_the_cap() {
    let logs = Logs::capture();
    let sink = SmtpSink::start().await;
    // 451 to every attempt: try again later.
    sink.by_default(Reply::RefuseRecipient(451));
    // A base of 1000 s: 1000 s, 2000 s, then 4000 s and 8000 s, both held to the hour.
    let app = app_with_mail(&sink, &[("MAIL_RETRY_BASE_SECONDS", "1000")]).await;
    let base_ms = 1_000_000;
    app.clock.freeze();
    let queued_at = app.clock.now_ms();
    let email = unique_email();
    register(&app, &email).await;

    let mut row = wait_row(&app, &email, "attempted", |r| r.settled(1)).await;
    let mut attempted_at = queued_at;
    let mut waits = Vec::new();
    for attempts in 1..=4u32 {
        assert!(row.sent_at.is_none() && row.failed_at.is_none(), "{row:?}");
        assert!(
            row.last_error.as_deref().is_some_and(|e| e.contains("451")),
            "{row:?}"
        );
        let wait = row.next_attempt_at - attempted_at;
        assert_eq!(wait, backoff(base_ms, attempts), "after attempt {attempts}");
        waits.push(wait);
        attempted_at = row.next_attempt_at;
        row = next_attempt_exactly_at(
            &app,
            &sink,
            &logs,
            &email,
            attempted_at,
            i64::from(attempts),
        )
        .await;
    }
    assert_eq!(waits, [1_000_000, 2_000_000, CAP_MS, CAP_MS]);
    assert_eq!(
        row.next_attempt_at - attempted_at,
        CAP_MS,
        "after attempt 5"
    );
    // Still queued, with its link: it has not failed yet.
    assert!(row.body.contains("verify-email?token="), "{row:?}");
    assert!(sink.received().is_empty());
}

#[tokio::test]
async fn mail_max_attempts_transient_failures_fail_the_mail_for_good() {
    let logs = Logs::capture();
    let sink = SmtpSink::start().await;
    // The first attempt is refused at the recipient, the next ones after the message.
    sink.script([Reply::RefuseRecipient(451)]);
    sink.by_default(Reply::RefuseData(421));
    let app = app_with_mail(
        &sink,
        &[("MAIL_RETRY_BASE_SECONDS", "1"), ("MAIL_MAX_ATTEMPTS", "3")],
    )
    .await;
    app.clock.freeze();
    let email = unique_email();
    register(&app, &email).await;

    let row = wait_row(&app, &email, "attempted", |r| r.settled(1)).await;
    assert!(row.body.contains("verify-email?token="), "{row:?}");
    let row = next_attempt_exactly_at(&app, &sink, &logs, &email, row.next_attempt_at, 1).await;
    assert!(row.failed_at.is_none(), "{row:?}");
    let due = row.next_attempt_at;
    let row = next_attempt_exactly_at(&app, &sink, &logs, &email, due, 2).await;
    assert_eq!(row.failed_at, Some(due), "{row:?}");
    assert_eq!(row.sent_at, None);
    assert!(
        row.last_error.as_deref().is_some_and(|e| e.contains("421")),
        "{row:?}"
    );
    // Failed for good: the token it carried is gone from the table.
    assert_eq!(row.body, "");

    // However far the clock moves, it is never tried again.
    for far in [
        Duration::from_secs(3600),
        Duration::from_secs(10 * 365 * 86_400),
    ] {
        app.clock.advance(far);
        worker_looked(&app, &logs).await;
        assert_eq!(sink.attempts_to(&email).len(), 3);
        assert_eq!(outbox_row(&app, &email).await, row);
    }
    assert!(sink.received().is_empty());
}

#[tokio::test]
async fn a_permanent_refusal_fails_the_mail_at_once() {
    let logs = Logs::capture();
    let sink = SmtpSink::start().await;
    let app = app_with_mail(&sink, &[("MAIL_RETRY_BASE_SECONDS", "1")]).await;
    app.clock.freeze();
    // Refused for good at the recipient, then after the whole message.
    for (refusal, code) in [
        (Reply::RefuseRecipient(550), "550"),
        (Reply::RefuseData(554), "554"),
    ] {
        sink.script([refusal]);
        let failed_at = app.clock.now_ms();
        let email = unique_email();
        register(&app, &email).await;
        let row = wait_row(&app, &email, "attempted", |r| r.settled(1)).await;
        assert_eq!(row.failed_at, Some(failed_at), "{refusal:?}: {row:?}");
        assert_eq!(row.sent_at, None);
        assert!(
            row.last_error.as_deref().is_some_and(|e| e.contains(code)),
            "{row:?}"
        );
        assert_eq!(row.body, "", "the failed mail's body (its token) is erased");

        app.clock.advance(Duration::from_secs(86_400));
        worker_looked(&app, &logs).await;
        assert_eq!(sink.attempts_to(&email).len(), 1, "{refusal:?}");
        assert_eq!(outbox_row(&app, &email).await, row);
    }
    assert!(sink.received().is_empty());
}

#[tokio::test]
async fn an_smtp_server_that_never_answers_times_out_and_the_mail_goes_out_later() {
    let sink = SmtpSink::start().await;
    // Silent from the start, then silent after the whole message, then well.
    sink.script([Reply::HangAtConnect, Reply::HangAfterData, Reply::Accept]);
    let app = app_with_mail(
        &sink,
        &[
            ("MAIL_RETRY_BASE_SECONDS", "1"),
            ("MAIL_SMTP_TIMEOUT_SECONDS", "1"),
        ],
    )
    .await;
    app.clock.freeze();
    let queued_at = app.clock.now_ms();
    let email = unique_email();
    let started = Instant::now();
    register(&app, &email).await;

    let mut due = queued_at;
    for (attempts, hang) in [(1, Reply::HangAtConnect), (2, Reply::HangAfterData)] {
        let row = wait_row(&app, &email, "attempted", |r| r.settled(attempts)).await;
        assert!(
            row.last_error
                .as_deref()
                .is_some_and(|e| e.contains("did not answer within 1 s")),
            "{row:?}"
        );
        assert_eq!(row.next_attempt_at, due + backoff(1000, attempts as u32));
        assert!(row.sent_at.is_none() && row.failed_at.is_none());
        let attempt = sink.attempts()[attempts as usize - 1].clone();
        assert_eq!(attempt.reply, hang);
        assert!(attempt.hanging && !attempt.delivered, "{attempt:?}");
        // The server gave up on the connection: nothing is left hanging.
        sink.wait_until("the hung connection closed", WAIT, |a| {
            a[attempts as usize - 1].closed
        })
        .await;
        due = row.next_attempt_at;
        app.clock.set_ms(due);
        app.state.mail_wakeup.notify_one();
    }
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "each silent attempt lasts the timeout"
    );
    let row = wait_row(&app, &email, "sent", |r| r.sent_at.is_some()).await;
    assert_eq!(row.sent_at, Some(due));
    assert_eq!(row.attempts, 3);
    // Sent: the token it carried is gone from the table.
    assert_eq!(row.body, "");
    let mails = sink.mails_to(&email, VERIFY);
    assert_eq!(mails.len(), 1);
    assert!(mails[0].link_token("/verify-email").is_some());
}

#[tokio::test]
async fn a_claimed_mail_is_left_to_its_worker_until_the_claim_runs_out() {
    let logs = Logs::capture();
    let sink = SmtpSink::start().await;
    // The first attempt hangs for the whole test: its worker is stuck in it.
    sink.script([Reply::HangAtConnect]);
    let app = app_with_mail(&sink, &[("MAIL_SMTP_TIMEOUT_SECONDS", "60")]).await;
    app.clock.freeze();
    let now = app.clock.now_ms();
    let (stuck, behind) = (unique_email(), unique_email());
    enqueue(&app, &stuck, now + 1).await;
    enqueue(&app, &behind, now + 2).await;
    app.clock.set_ms(now + 2);
    app.state.mail_wakeup.notify_one();
    sink.wait_until("a hanging attempt", WAIT, |a| a.len() == 1 && a[0].hanging)
        .await;
    let claimed_at = now + 2;
    let claimed = outbox_row(&app, &stuck).await;
    assert_eq!(claimed.attempts, 1);
    let lease_end = claimed.locked_until.expect("claimed");
    assert_eq!(lease_end, claimed_at + 120_000, "a two-minute claim");
    // Only the mail being attempted is claimed: the one behind it waits unclaimed, so that its
    // claim cannot run out while it waits behind a slow attempt.
    let waiting = outbox_row(&app, &behind).await;
    assert_eq!((waiting.attempts, waiting.locked_until), (0, None));

    // Another instance takes what is unclaimed, and leaves the claimed mail alone up to the
    // last millisecond of the claim (its passes are the only ones: the first worker is stuck).
    let other = app.another_instance().await;
    wait_row(&app, &behind, "sent", |r| r.sent_at.is_some()).await;
    app.clock.set_ms(lease_end - 1);
    worker_looked(&other, &logs).await;
    let attempts = sink.attempts();
    assert!(!attempts[0].closed, "the first worker is still stuck");
    assert_eq!(attempts.len(), 2, "the hanging one and the one behind it");
    assert_eq!(outbox_row(&app, &stuck).await, claimed);

    // At the end of the claim (a worker that died mid-attempt), it is taken and sent.
    app.clock.set_ms(lease_end);
    other.state.mail_wakeup.notify_one();
    let sent = wait_row(&app, &stuck, "sent", |r| r.sent_at.is_some()).await;
    assert_eq!((sent.attempts, sent.sent_at), (2, Some(lease_end)));
    assert_eq!(sink.attempts().len(), 3);
    assert_eq!(sink.mails_to(&stuck, "").len(), 1);
    assert_eq!(sink.mails_to(&behind, "").len(), 1);
}

#[tokio::test]
async fn two_instances_on_one_outbox_deliver_each_mail_exactly_once() {
    const MAILS: usize = 40;
    let sink = SmtpSink::start().await;
    let first = app_with_mail(&sink, &[]).await;
    let second = first.another_instance().await;
    first.clock.freeze();
    let due = first.clock.now_ms() + 1;
    let recipients: Vec<String> = (0..MAILS).map(|_| unique_email()).collect();
    for to in &recipients {
        enqueue(&first, to, due).await;
    }
    // All due at once, both workers woken at once.
    first.clock.set_ms(due);
    first.state.mail_wakeup.notify_one();
    second.state.mail_wakeup.notify_one();
    for to in &recipients {
        wait_row(&first, to, "sent", |r| r.sent_at.is_some()).await;
    }
    let attempts = sink.attempts();
    assert_eq!(attempts.len(), MAILS, "one attempt a mail");
    let received = sink.received();
    assert_eq!(received.len(), MAILS);
    for to in &recipients {
        assert_eq!(
            received.iter().filter(|m| m.to == [to.clone()]).count(),
            1,
            "{to}"
        );
        assert_eq!(outbox_row(&first, to).await.attempts, 1);
    }
}

/// Holds, from the test's own connection until `release` is called, the database's write lock
/// (SQLite: a registration waits at its first write) or the `mail_outbox` table (PostgreSQL: a
/// registration waits at its last write, the verification mail, after the account, its mail
/// allowance and its token are written in its transaction).
struct Lock {
    release: tokio::sync::oneshot::Sender<()>,
    done: tokio::task::JoinHandle<()>,
}

impl Lock {
    async fn take(app: &TestApp) -> Self {
        let (taken, is_taken) = tokio::sync::oneshot::channel();
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let pool = app.sql.clone();
        let done = tokio::spawn(async move {
            match pool {
                TestPool::Sqlite(pool) => {
                    let mut tx = pool.begin_with("BEGIN EXCLUSIVE").await.unwrap();
                    // Read something, so that the transaction has truly begun.
                    sqlx::query("SELECT COUNT(*) FROM users")
                        .execute(&mut *tx)
                        .await
                        .unwrap();
                    let _ = taken.send(());
                    let _ = released.await;
                    tx.rollback().await.unwrap();
                }
                TestPool::Postgres(pool) => {
                    let mut tx = pool.begin().await.unwrap();
                    sqlx::query("LOCK TABLE mail_outbox IN ACCESS EXCLUSIVE MODE")
                        .execute(&mut *tx)
                        .await
                        .unwrap();
                    let _ = taken.send(());
                    let _ = released.await;
                    tx.rollback().await.unwrap();
                }
            }
        });
        is_taken.await.expect("the lock is taken");
        Self { release, done }
    }

    async fn release(self) {
        let _ = self.release.send(());
        self.done.await.unwrap();
    }
}

#[tokio::test]
async fn a_request_past_request_timeout_is_answered_503_with_retry_after_and_writes_nothing() {
    let sink = SmtpSink::start().await;
    let app = app_with_mail(&sink, &[("REQUEST_TIMEOUT_SECONDS", "1")]).await;
    let email = unique_email();
    let lock = Lock::take(&app).await;

    let started = Instant::now();
    // (The client gives up at 10 s, so that a server without the timeout fails the test
    // rather than waiting on the lock for ever.)
    let response = app
        .client
        .post(app.url("/register"))
        .json(&serde_json::json!({"email": email, "password": PASSWORD, "name": "Blocked"}))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect("an answer before the lock is released");
    let took = started.elapsed();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let body = assert_problem(response, 503, "SERVICE_UNAVAILABLE").await;
    assert!(
        retry_after.is_some_and(|s| s >= 1),
        "Retry-After: {retry_after:?}"
    );
    // The request's own timeout answered: not sooner, and not SQLite's busy timeout (5 s).
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(5),
        "answered after {took:?}: {body}"
    );

    lock.release().await;
    // Nothing of the registration was kept: the address is free, and registering it now makes
    // one account with one verification mail.
    assert_eq!(
        app.register(&email, PASSWORD, "Again").await.status(),
        StatusCode::CREATED
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM users WHERE email = $1", &email)
            .await,
        1
    );
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM mail_outbox WHERE recipient = $1",
            &email
        )
        .await,
        1
    );
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM one_time_tokens WHERE email = $1",
            &email
        )
        .await,
        1
    );
    let mails = sink.wait_for(&email, VERIFY, 1, WAIT).await;
    assert_eq!(mails.len(), 1);
}
