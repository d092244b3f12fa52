//! A model of refresh-token rotation: random sequences of logins, refreshes, replays, races,
//! clock moves, logouts, revocations and administrators' changes, run against two instances on
//! one database and checked, after every step, against a reference model of what the README
//! promises (Tokens: "Rotation"; Logout; DELETE /me/sessions/{id}; Administration).
//!
//! The operations name sessions and tokens by [`Index`], resolved against the model's state when
//! the operation runs, so every subsequence of a sequence is a valid sequence: proptest shrinks a
//! failure by dropping and simplifying operations, and the report is the shortest sequence found,
//! as the steps actually run. Failing seeds are kept in `proptest-regressions/tests/api/model.txt`
//! and replayed first on every run.
//!
//! The security rules the model holds the servers to (each checked after every step):
//!
//! - [`Model::presented`]: at most one live refresh token per session.
//! - [`Model::reuse`]: a replay outside the window revokes the session.
//! - [`check_everything`]: a revoked or logged-out session's access tokens all fail at once.
//! - [`Model::end`]: an operation ends only the sessions its scope names.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine as _;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{FileFailurePersistence, TestCaseError};
use serde_json::{Value, json};

use crate::helpers::*;

/// `REFRESH_REUSE_INTERVAL_SECONDS`, in milliseconds.
const WINDOW_MS: i64 = 10_000;
/// Users per case; each may have any number of sessions.
const USERS: usize = 3;
/// Cases per run (`PROPTEST_CASES` overrides it) and operations per case.
const CASES: u32 = 32;
const MAX_OPS: usize = 30;
/// The clock moves by one of these: just inside the window, at its edge, just past it, and a
/// few other amounts (within a case, at most `MAX_OPS` times the largest).
const ADVANCES_MS: [i64; 7] = [
    1,
    WINDOW_MS / 2,
    WINDOW_MS - 1,
    WINDOW_MS,
    WINDOW_MS + 1,
    2 * WINDOW_MS,
    3 * WINDOW_MS,
];
/// `ACCESS_TOKEN_EXPIRE_MINUTES`: no access token expires within a case, so that every failure
/// of one is a revocation the model has to explain.
const ACCESS_MINUTES: i64 = 60;
const _: () = assert!(MAX_OPS as i64 * 3 * WINDOW_MS < ACCESS_MINUTES * 60_000);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum On {
    A,
    B,
}

#[derive(Clone, Copy, Debug)]
enum Scope {
    Local,
    Others,
    Global,
}

impl Scope {
    fn query(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::Others => "others",
            Self::Global => "global",
        }
    }
}

/// What a logout presents: one of the session's access tokens (as a bearer token), or one of its
/// refresh tokens (in the body, without a bearer token), by age: 0 the newest, 1 the one spent
/// most recently, 2 and more older ones (the oldest if the chain is shorter).
#[derive(Clone, Debug)]
enum Credential {
    Access(Index),
    Refresh(usize),
}

/// A session, by an index into the live ones (or, with `ended`, into all of them, ended ones
/// included).
#[derive(Clone, Debug)]
struct Pick {
    index: Index,
    ended: bool,
}

#[derive(Clone, Debug)]
enum Op {
    /// POST /login as one of the case's users: a new session.
    Login { user: usize, on: On },
    /// POST /refresh with the newest refresh token of a session.
    Refresh { session: Pick, on: On },
    /// POST /refresh with an older refresh token of a session: `age` 1 is the one spent most
    /// recently, 2 and 3 older ones (the oldest if the chain is shorter).
    Replay { session: Pick, age: usize, on: On },
    /// The same refresh token (by age, 0 the newest) presented on both instances at once.
    Race { session: Pick, age: usize },
    /// The clock moves forward.
    Advance { ms: i64 },
    /// The clock moves to `past_ms` after the end of the reuse window of a session's latest
    /// spending (-1: a millisecond before its last; 0: its last, inclusive; 1: the first
    /// millisecond after it), if that is still ahead.
    AdvanceToWindowEnd { session: Pick, past_ms: i64 },
    /// POST /logout?scope=…
    Logout {
        session: Pick,
        scope: Scope,
        with: Credential,
        on: On,
    },
    /// DELETE /me/sessions/{target} with an access token of `caller`: `target` may be any
    /// session, the caller's own, another of its user's, or another user's.
    Revoke {
        caller: Pick,
        access: Index,
        target: Index,
        on: On,
    },
    /// PUT /me/password with an access token of the session: every other session of the user
    /// ends, this one goes on (carried forward to the new credentials).
    ChangePassword {
        session: Pick,
        access: Index,
        on: On,
    },
    /// A superuser deactivates the user (PATCH /users/{id} `is_active: false`: every session
    /// ends) and reactivates it.
    Deactivate { user: usize, on: On },
    /// A superuser makes the user a superuser and takes it back: two credential changes that
    /// every session survives.
    Promote { user: usize, on: On },
    /// GET /me with any access token ever issued in the case.
    Me { token: Index, on: On },
}

fn on() -> impl Strategy<Value = On> {
    prop_oneof![Just(On::A), Just(On::B)]
}

fn scope() -> impl Strategy<Value = Scope> {
    prop_oneof![Just(Scope::Local), Just(Scope::Others), Just(Scope::Global)]
}

/// Mostly a live session: an ended one refuses everything, which is checked, but less often.
fn pick() -> impl Strategy<Value = Pick> {
    (any::<Index>(), proptest::bool::weighted(0.2)).prop_map(|(index, ended)| Pick { index, ended })
}

fn credential() -> impl Strategy<Value = Credential> {
    prop_oneof![
        any::<Index>().prop_map(Credential::Access),
        (0..=2usize).prop_map(Credential::Refresh),
    ]
}

/// Operations, the simplest first (shrinking moves towards the earlier alternatives).
fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..USERS, on()).prop_map(|(user, on)| Op::Login { user, on }),
        3 => proptest::sample::select(&ADVANCES_MS[..]).prop_map(|ms| Op::Advance { ms }),
        3 => (pick(), -1..=1i64)
            .prop_map(|(session, past_ms)| Op::AdvanceToWindowEnd { session, past_ms }),
        6 => (pick(), on()).prop_map(|(session, on)| Op::Refresh { session, on }),
        5 => (pick(), 1..=3usize, on())
            .prop_map(|(session, age, on)| Op::Replay { session, age, on }),
        2 => (pick(), 0..=2usize).prop_map(|(session, age)| Op::Race { session, age }),
        2 => (pick(), scope(), credential(), on())
            .prop_map(|(session, scope, with, on)| Op::Logout { session, scope, with, on }),
        2 => (pick(), any::<Index>(), any::<Index>(), on())
            .prop_map(|(caller, access, target, on)| Op::Revoke { caller, access, target, on }),
        1 => (pick(), any::<Index>(), on())
            .prop_map(|(session, access, on)| Op::ChangePassword { session, access, on }),
        1 => (0..USERS, on()).prop_map(|(user, on)| Op::Deactivate { user, on }),
        1 => (0..USERS, on()).prop_map(|(user, on)| Op::Promote { user, on }),
        1 => (any::<Index>(), on()).prop_map(|(token, on)| Op::Me { token, on }),
    ]
}

/// The servers: two instances on one database and one clock, frozen, and a superuser.
struct World {
    a: TestApp,
    b: TestApp,
    admin_email: String,
    /// What the cases exercised, summed.
    seen: Mutex<BTreeMap<String, u32>>,
}

impl World {
    async fn start() -> Self {
        let minutes = ACCESS_MINUTES.to_string();
        let window = (WINDOW_MS / 1000).to_string();
        // The model says an ended session's tokens fail at once on both instances: true with
        // the session cache off (across instances the cache's bound applies instead, tested in
        // session_cache.rs; on one instance it changes nothing, tested there too).
        let a = spawn_app_with(&[
            ("REFRESH_REUSE_INTERVAL_SECONDS", window.as_str()),
            ("ACCESS_TOKEN_EXPIRE_MINUTES", minutes.as_str()),
            ("SESSION_CACHE_MS", "0"),
        ])
        .await;
        let b = a.another_instance().await;
        a.clock.freeze();
        let (admin, _) = a.superuser().await;
        let admin_email = admin["email"].as_str().unwrap().to_string();
        Self {
            a,
            b,
            admin_email,
            seen: Mutex::default(),
        }
    }

    fn app(&self, on: On) -> &TestApp {
        match on {
            On::A => &self.a,
            On::B => &self.b,
        }
    }
}

/// A response as the model compares it: status, problem code (if a problem document) and body.
struct Reply {
    status: u16,
    problem: bool,
    body: Value,
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status, self.body)
    }
}

async fn reply(response: reqwest::Response) -> Reply {
    let status = response.status().as_u16();
    let problem = response
        .headers()
        .get("content-type")
        .is_some_and(|v| v == "application/problem+json");
    let text = response.text().await.unwrap_or_default();
    Reply {
        status,
        problem,
        body: serde_json::from_str(&text).unwrap_or(Value::Null),
    }
}

impl Reply {
    fn is_problem(&self, status: u16, code: &str) -> Result<(), String> {
        if self.status == status && self.problem && self.body["code"] == code {
            Ok(())
        } else {
            Err(format!("expected {status} {code}, got {self:?}"))
        }
    }

    fn is_no_content(&self) -> Result<(), String> {
        if self.status == 204 {
            Ok(())
        } else {
            Err(format!("expected 204, got {self:?}"))
        }
    }

    /// A token pair for session `sid`.
    fn pair(&self, sid: &str) -> Result<(String, String), String> {
        let field = |name: &str| self.body[name].as_str().map(str::to_string);
        match (field("access_token"), field("refresh_token")) {
            (Some(access), Some(refresh))
                if self.status == 200 && self.body["token_type"] == "bearer" =>
            {
                for token in [&access, &refresh] {
                    if claims(token)["sid"] != sid {
                        return Err(format!("a token of another session than {sid}: {self:?}"));
                    }
                }
                Ok((access, refresh))
            }
            _ => Err(format!("expected 200 and a token pair, got {self:?}")),
        }
    }
}

/// A JWT's claims, unverified (the test reads what the server put there).
fn claims(token: &str) -> Value {
    token
        .split('.')
        .nth(1)
        .and_then(|p| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(p)
                .ok()
        })
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null)
}

#[derive(Debug)]
struct User {
    id: String,
    email: String,
    /// Its password: [`PASSWORD`] or [`OTHER_PASSWORD`].
    password: &'static str,
}

const OTHER_PASSWORD: &str = "another correct horse battery staple";

#[derive(Debug)]
struct Session {
    user: usize,
    id: String,
    created_at: i64,
    /// Every refresh token issued for the session, oldest first: generation `g` at index `g`.
    refresh: Vec<String>,
    /// When the newest was issued (the one before it spent).
    refreshed_at: i64,
    /// Every access token issued for the session.
    access: Vec<String>,
    live: bool,
}

/// What a presented refresh token of a session gets (the README's rotation rules).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Presented {
    /// The newest: it rotates.
    Rotate,
    /// The one spent most recently, within the window: the current pair again.
    HandBack,
    /// Any other: reuse, which revokes the session.
    Reuse,
    /// The session has ended: refused, nothing else happens.
    Ended,
}

/// The reference model: what the servers should hold, in the case's users and sessions.
struct Model {
    now: i64,
    users: Vec<User>,
    sessions: Vec<Session>,
    /// What the steps exercised, for the summary printed at the end (`--nocapture`).
    seen: BTreeMap<String, u32>,
}

impl Model {
    /// **At most one live refresh token per session.** Among all the refresh tokens ever issued
    /// for a session, only the newest rotates. The one spent most recently gets the current
    /// pair back (the very refresh token its spending returned) up to and including
    /// `REFRESH_REUSE_INTERVAL_SECONDS` after that spending, and never rotates; every other one
    /// is reuse. A session that has ended refuses them all.
    fn presented(&self, s: usize, index: usize) -> Presented {
        let session = &self.sessions[s];
        let newest = session.refresh.len() - 1;
        if !session.live {
            Presented::Ended
        } else if index == newest {
            Presented::Rotate
        } else if index + 1 == newest && self.now - session.refreshed_at <= WINDOW_MS {
            Presented::HandBack
        } else {
            Presented::Reuse
        }
    }

    /// **A replay outside the window revokes the session** (a spent refresh token shows the
    /// chain has leaked: the thief's and the owner's copies of the session end together), and
    /// only that session: the user's other sessions and other users' are untouched.
    fn reuse(&mut self, s: usize) {
        self.sessions[s].live = false;
    }

    /// **An operation ends only the sessions its scope names**: `local` the presented session,
    /// `others` every other session of its user, `global` every session of its user; never a
    /// session of another user.
    fn end(&mut self, s: usize, scope: Scope) {
        let user = self.sessions[s].user;
        for (i, other) in self.sessions.iter_mut().enumerate() {
            let named = match scope {
                Scope::Local => i == s,
                Scope::Others => other.user == user && i != s,
                Scope::Global => other.user == user,
            };
            if named {
                other.live = false;
            }
        }
    }

    /// The session `p` names among those that `fit`, if there is one.
    fn pick(&self, p: &Pick, fit: impl Fn(&Session) -> bool) -> Option<usize> {
        let candidates: Vec<usize> = (0..self.sessions.len())
            .filter(|&s| (p.ended || self.sessions[s].live) && fit(&self.sessions[s]))
            .collect();
        (!candidates.is_empty()).then(|| candidates[p.index.index(candidates.len())])
    }

    fn count(&mut self, what: String) {
        *self.seen.entry(what).or_default() += 1;
    }

    /// A refresh token of session `s` by age (0 the newest), clamped to the oldest.
    fn by_age(&self, s: usize, age: usize) -> usize {
        let newest = self.sessions[s].refresh.len() - 1;
        newest - age.min(newest)
    }

    /// A new access token of session `s`, which must not have been issued before.
    fn issued_access(&mut self, s: usize, token: String) -> Result<(), String> {
        if self.sessions.iter().any(|x| x.access.contains(&token)) {
            return Err("an access token was issued twice".into());
        }
        self.sessions[s].access.push(token);
        Ok(())
    }

    /// Checks and records the answer to presenting a refresh token of session `s`, which the
    /// model says gets `presented`: a rotation's new refresh token must be one never issued
    /// before, a hand-back's the session's newest, byte for byte.
    fn refreshed(&mut self, s: usize, presented: Presented, reply: &Reply) -> Result<(), String> {
        let sid = self.sessions[s].id.clone();
        match presented {
            Presented::Rotate => {
                let (access, refresh) = reply.pair(&sid)?;
                if self.sessions.iter().any(|x| x.refresh.contains(&refresh)) {
                    return Err(format!(
                        "the rotation handed out an old refresh token: {reply:?}"
                    ));
                }
                let session = &mut self.sessions[s];
                session.refresh.push(refresh);
                session.refreshed_at = self.now;
                self.issued_access(s, access)
            }
            Presented::HandBack => {
                let (access, refresh) = reply.pair(&sid)?;
                if Some(&refresh) != self.sessions[s].refresh.last() {
                    return Err(format!(
                        "within the window the session's current refresh token, byte for byte, \
                         was expected: {reply:?}"
                    ));
                }
                self.issued_access(s, access)
            }
            Presented::Reuse => {
                reply.is_problem(401, "INVALID_TOKEN")?;
                self.reuse(s);
                Ok(())
            }
            Presented::Ended => reply.is_problem(401, "INVALID_TOKEN"),
        }
    }

    /// Counts a step of `kind` presenting refresh token `index` of session `s`, with where the
    /// just-spent token stood against the window.
    fn saw(&mut self, kind: &str, s: usize, index: usize, presented: Presented) {
        let session = &self.sessions[s];
        let spent_ago = self.now - session.refreshed_at;
        let when = if index + 2 != session.refresh.len() || !session.live {
            ""
        } else if spent_ago == WINDOW_MS {
            ", at the window's edge"
        } else if spent_ago == WINDOW_MS + 1 {
            ", 1 ms past the window"
        } else if spent_ago < WINDOW_MS {
            ", inside the window"
        } else {
            ", past the window"
        };
        *self
            .seen
            .entry(format!("{kind}: {presented:?}{when}"))
            .or_default() += 1;
    }

    fn describe(&self, s: usize) -> String {
        let session = &self.sessions[s];
        format!(
            "s{s} (user {}, {} refresh tokens, {})",
            session.user,
            session.refresh.len(),
            if session.live { "live" } else { "ended" }
        )
    }
}

async fn post_refresh(app: &TestApp, token: &str) -> Reply {
    reply(app.refresh(token).await).await
}

/// Runs one operation against the servers, compares the answer with the model's and updates
/// the model. Returns what ran, with its indices resolved (`None`: nothing to run it on).
async fn step(w: &World, m: &mut Model, op: &Op) -> Result<Option<String>, (String, String)> {
    let sessions = m.sessions.len();
    let spent = |s: &Session| s.refresh.len() > 1;
    macro_rules! pick {
        ($p:expr) => {
            pick!($p, |_| true)
        };
        ($p:expr, $fit:expr) => {
            match m.pick($p, $fit) {
                Some(s) => s,
                None => return Ok(None),
            }
        };
    }
    macro_rules! check {
        ($what:expr, $result:expr) => {{
            let what: String = $what;
            match $result {
                Ok(v) => (what, v),
                Err(e) => return Err((what, e)),
            }
        }};
    }
    let what = match op {
        Op::Login { user, on } => {
            let app = w.app(*on);
            let r = reply(
                app.login(&m.users[*user].email, m.users[*user].password)
                    .await,
            )
            .await;
            let what = format!("login user {user} on {on:?}");
            let sid = claims(r.body["access_token"].as_str().unwrap_or_default())["sid"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let (what, (access, refresh)) = check!(what, r.pair(&sid));
            let s = m.sessions.len();
            m.sessions.push(Session {
                user: *user,
                id: sid,
                created_at: m.now,
                refresh: vec![refresh],
                refreshed_at: m.now,
                access: vec![],
                live: true,
            });
            check!(what.clone(), m.issued_access(s, access));
            m.count("login".into());
            format!("{what} -> s{s}")
        }
        Op::Advance { ms } => {
            m.count(format!("advance {ms} ms"));
            advance(w, m, *ms)?
        }
        Op::AdvanceToWindowEnd { session, past_ms } => {
            let now = m.now;
            let s = pick!(session, |s| spent(s)
                && s.refreshed_at + WINDOW_MS + past_ms > now);
            let by = m.sessions[s].refreshed_at + WINDOW_MS + past_ms - now;
            m.count(format!("advance to the window's end {past_ms:+} ms"));
            format!(
                "{}: to the window's end {past_ms:+} ms of s{s}",
                advance(w, m, by)?
            )
        }
        Op::Refresh { session, on } => {
            let s = pick!(session);
            let index = m.sessions[s].refresh.len() - 1;
            let expected = m.presented(s, index);
            m.saw("refresh", s, index, expected);
            let what = format!("refresh {} with the newest on {on:?}", m.describe(s));
            let r = post_refresh(w.app(*on), &m.sessions[s].refresh[index]).await;
            let what = format!("{what}: {expected:?}");
            check!(what, m.refreshed(s, expected, &r)).0
        }
        Op::Replay { session, age, on } => {
            let s = pick!(session, spent);
            let index = m.by_age(s, (*age).max(1));
            let expected = m.presented(s, index);
            m.saw("replay", s, index, expected);
            let what = format!(
                "replay {} generation {index} on {on:?}: {expected:?}",
                m.describe(s)
            );
            let r = post_refresh(w.app(*on), &m.sessions[s].refresh[index]).await;
            check!(what, m.refreshed(s, expected, &r)).0
        }
        Op::Race { session, age } => {
            let s = pick!(session);
            let index = m.by_age(s, *age);
            let expected = m.presented(s, index);
            m.saw("race", s, index, expected);
            let what = format!(
                "race {} generation {index} on A and B at once: {expected:?}",
                m.describe(s)
            );
            let token = &m.sessions[s].refresh[index];
            let (ra, rb) = tokio::join!(post_refresh(&w.a, token), post_refresh(&w.b, token));
            // Whichever rotated, the other was handed back the same pair: record one rotation,
            // then the other answer as a hand-back (or, for reuse and ended sessions, as the
            // same refusal).
            let (what, ()) = check!(what, m.refreshed(s, expected, &ra));
            let second = match expected {
                Presented::Rotate => Presented::HandBack,
                Presented::Reuse => Presented::Ended,
                other => other,
            };
            check!(what, m.refreshed(s, second, &rb)).0
        }
        Op::Logout {
            session,
            scope,
            with,
            on,
        } => {
            let s = pick!(session);
            let app = w.app(*on);
            let path = format!("/logout?scope={}", scope.query());
            match with {
                Credential::Access(i) => {
                    let access = &m.sessions[s].access;
                    let token = &access[i.index(access.len())];
                    let what = format!(
                        "logout {scope:?} with an access token of {} on {on:?}",
                        m.describe(s)
                    );
                    let r = reply(
                        app.client
                            .post(app.url(&path))
                            .bearer_auth(token)
                            .send()
                            .await
                            .unwrap(),
                    )
                    .await;
                    let live = if m.sessions[s].live { "live" } else { "ended" };
                    m.count(format!("logout {scope:?} with an access token: {live}"));
                    if m.sessions[s].live {
                        let (what, ()) = check!(what, r.is_no_content());
                        m.end(s, *scope);
                        what
                    } else {
                        check!(what, r.is_problem(401, "UNAUTHORIZED")).0
                    }
                }
                Credential::Refresh(age) => {
                    let index = m.by_age(s, *age);
                    let expected = m.presented(s, index);
                    m.saw(
                        &format!("logout {scope:?} with a refresh token"),
                        s,
                        index,
                        expected,
                    );
                    let what = format!(
                        "logout {scope:?} with refresh generation {index} of {} on {on:?}: \
                         {expected:?}",
                        m.describe(s)
                    );
                    let r = reply(
                        app.client
                            .post(app.url(&path))
                            .json(&json!({"refresh_token": m.sessions[s].refresh[index]}))
                            .send()
                            .await
                            .unwrap(),
                    )
                    .await;
                    match expected {
                        // The live token, or the one just spent within the window, speaks for
                        // the session.
                        Presented::Rotate | Presented::HandBack => {
                            let (what, ()) = check!(what, r.is_no_content());
                            m.end(s, *scope);
                            what
                        }
                        // Reuse is reuse at a logout too: the session is revoked, and only it.
                        Presented::Reuse => {
                            let (what, ()) = check!(what, r.is_problem(401, "INVALID_TOKEN"));
                            m.reuse(s);
                            what
                        }
                        // An ended session's token is accepted and does nothing (RFC 7009).
                        Presented::Ended => check!(what, r.is_no_content()).0,
                    }
                }
            }
        }
        Op::Revoke {
            caller,
            access,
            target,
            on,
        } if sessions > 0 => {
            let (c, t) = (pick!(caller), target.index(sessions));
            let app = w.app(*on);
            let tokens = &m.sessions[c].access;
            let token = &tokens[access.index(tokens.len())];
            let what = format!(
                "revoke {} with an access token of {} on {on:?}",
                m.describe(t),
                m.describe(c)
            );
            let r = reply(
                app.client
                    .delete(app.url(&format!("/me/sessions/{}", m.sessions[t].id)))
                    .bearer_auth(token)
                    .send()
                    .await
                    .unwrap(),
            )
            .await;
            let (caller, target) = (&m.sessions[c], &m.sessions[t]);
            m.count(format!(
                "revoke {}",
                match (caller.live, target.live, c == t, caller.user == target.user) {
                    (false, ..) => "with an ended session",
                    (true, _, true, _) => "the caller's own session",
                    (true, true, false, true) => "another live session of the user",
                    (true, false, false, true) => "an ended session of the user",
                    (true, _, false, false) => "another user's session",
                }
            ));
            if !m.sessions[c].live {
                check!(what, r.is_problem(401, "UNAUTHORIZED")).0
            } else if m.sessions[t].live && m.sessions[t].user == m.sessions[c].user {
                let (what, ()) = check!(what, r.is_no_content());
                m.end(t, Scope::Local);
                what
            } else {
                // Another user's session, or one that has ended: not the caller's to revoke.
                check!(what, r.is_problem(404, "NOT_FOUND")).0
            }
        }
        Op::ChangePassword {
            session,
            access,
            on,
        } => {
            let s = pick!(session);
            let app = w.app(*on);
            let user = m.sessions[s].user;
            let (current, new) = match m.users[user].password {
                PASSWORD => (PASSWORD, OTHER_PASSWORD),
                _ => (OTHER_PASSWORD, PASSWORD),
            };
            let tokens = &m.sessions[s].access;
            let what = format!(
                "change the password with an access token of {} on {on:?}",
                m.describe(s)
            );
            let r = reply(
                app.client
                    .put(app.url("/me/password"))
                    .bearer_auth(&tokens[access.index(tokens.len())])
                    .json(&json!({"current_password": current, "new_password": new}))
                    .send()
                    .await
                    .unwrap(),
            )
            .await;
            let live = if m.sessions[s].live { "live" } else { "ended" };
            m.count(format!("change the password: {live}"));
            if m.sessions[s].live {
                let (what, ()) = check!(what, r.is_no_content());
                m.users[user].password = new;
                m.end(s, Scope::Others);
                what
            } else {
                check!(what, r.is_problem(401, "UNAUTHORIZED")).0
            }
        }
        Op::Deactivate { user, on } => {
            let what = format!("deactivate and reactivate user {user} on {on:?}");
            m.count("deactivate and reactivate".into());
            check!(
                what.clone(),
                admin_patch(w, *on, &m.users[*user].id, "is_active").await
            );
            for session in m.sessions.iter_mut().filter(|s| s.user == *user) {
                session.live = false;
            }
            what
        }
        Op::Promote { user, on } => {
            let what = format!("promote and demote user {user} on {on:?}");
            m.count("promote and demote".into());
            check!(
                what,
                admin_patch(w, *on, &m.users[*user].id, "is_superuser").await
            )
            .0
        }
        Op::Me { token, on } if sessions > 0 => {
            let all: Vec<(usize, &String)> = m
                .sessions
                .iter()
                .enumerate()
                .flat_map(|(s, x)| x.access.iter().map(move |t| (s, t)))
                .collect();
            let (s, token) = all[token.index(all.len())];
            let what = format!(
                "GET /me with an access token of {} on {on:?}",
                m.describe(s)
            );
            let probe = Probe::me(w.app(*on), m, s, token, "GET /me".into());
            let live = if m.sessions[s].live { "live" } else { "ended" };
            m.count(format!("GET /me: {live}"));
            check!(what, probe.run().await).0
        }
        _ => return Ok(None),
    };
    Ok(Some(what))
}

/// Moves the shared clock forward by `ms`.
fn advance(w: &World, m: &mut Model, ms: i64) -> Result<String, (String, String)> {
    let what = format!("advance {ms} ms");
    w.a.clock.advance(Duration::from_millis(ms as u64));
    m.now += ms;
    if w.b.clock.now_ms() != m.now {
        return Err((what, "the instances' clock is not shared".into()));
    }
    Ok(what)
}

/// A superuser sets `flag` of the user to the opposite of its usual value and back
/// (`is_active` false then true; `is_superuser` true then false).
async fn admin_patch(w: &World, on: On, id: &str, flag: &str) -> Result<(), String> {
    let app = w.app(on);
    let admin = app.login_ok(&w.admin_email).await;
    let unusual = flag == "is_superuser";
    for value in [unusual, !unusual] {
        let r = reply(
            app.client
                .patch(app.url(&format!("/users/{id}")))
                .bearer_auth(&admin.access)
                .json(&json!({ flag: value }))
                .send()
                .await
                .unwrap(),
        )
        .await;
        if r.status != 200 || r.body[flag] != value {
            return Err(format!("PATCH /users/{id} {flag}: {value}: {r:?}"));
        }
    }
    Ok(())
}

/// A request whose answer the model knows, owned so that many run at once.
struct Probe {
    client: reqwest::Client,
    base: String,
    token: String,
    expect: Expect,
    label: String,
}

enum Expect {
    /// GET /me: 200 with this user's account (the session is live).
    User(String),
    /// GET /me: 401 UNAUTHORIZED (the session has ended).
    Ended,
    /// GET /me/sessions: these sessions, newest first, and whether each is the caller's.
    Sessions(Vec<(String, bool)>),
    /// POST /refresh with a refresh token of a session that has ended: 401 INVALID_TOKEN (which
    /// changes nothing, so it can be asked any time).
    Refused,
}

impl Probe {
    /// GET /me with an access token of session `s`: the user's account while the session is
    /// live, 401 UNAUTHORIZED once it has ended.
    fn me(app: &TestApp, m: &Model, s: usize, token: &str, label: String) -> Self {
        let session = &m.sessions[s];
        Self {
            client: app.client.clone(),
            base: app.address.clone(),
            token: token.to_string(),
            expect: if session.live {
                Expect::User(m.users[session.user].id.clone())
            } else {
                Expect::Ended
            },
            label,
        }
    }

    async fn run(self) -> Result<(), String> {
        let base = &self.base;
        let request = match &self.expect {
            Expect::Refused => self
                .client
                .post(format!("{base}/refresh"))
                .json(&json!({"refresh_token": self.token})),
            Expect::Sessions(_) => self
                .client
                .get(format!("{base}/me/sessions"))
                .bearer_auth(&self.token),
            Expect::User(_) | Expect::Ended => self
                .client
                .get(format!("{base}/me"))
                .bearer_auth(&self.token),
        };
        let r = reply(request.send().await.unwrap()).await;
        let result = match &self.expect {
            Expect::Ended => r.is_problem(401, "UNAUTHORIZED"),
            Expect::Refused => r.is_problem(401, "INVALID_TOKEN"),
            Expect::User(id) if r.status == 200 && r.body["id"] == id.as_str() => Ok(()),
            Expect::User(id) => Err(format!("expected 200 for user {id}, got {r:?}")),
            Expect::Sessions(expected) => {
                let listed: Option<Vec<(String, bool)>> = r.body.as_array().map(|a| {
                    a.iter()
                        .map(|s| {
                            let id = s["id"].as_str().unwrap_or_default().to_string();
                            (id, s["current"] == true)
                        })
                        .collect()
                });
                if r.status == 200 && listed.as_ref() == Some(expected) {
                    Ok(())
                } else {
                    Err(format!("expected 200 with {expected:?}, got {r:?}"))
                }
            }
        };
        result.map_err(|e| format!("{}: {e}", self.label))
    }
}

/// **A revoked or logged-out session's tokens all fail at once**, not only the newest: every
/// access token ever issued in the case is presented (to one instance or the other) after every
/// step, and works exactly while the model says its session is live; every refresh token of a
/// session that `ended` in the step is refused (401 INVALID_TOKEN). Each user's GET /me/sessions
/// lists exactly the sessions the model says are live, newest first, the caller's marked current.
async fn check_everything(w: &World, m: &mut Model, ended: &[usize]) -> Result<(), String> {
    let mut probes = Vec::new();
    for &s in ended {
        for (g, token) in m.sessions[s].refresh.iter().enumerate() {
            let app = if (s + g) % 2 == 0 { &w.a } else { &w.b };
            probes.push(
                Probe {
                    client: app.client.clone(),
                    base: app.address.clone(),
                    token: token.clone(),
                    expect: Expect::Refused,
                    label: format!("POST /refresh with generation {g} of {}", m.describe(s)),
                }
                .run(),
            );
        }
    }
    for (s, session) in m.sessions.iter().enumerate() {
        for (i, token) in session.access.iter().enumerate() {
            let app = if (s + i) % 2 == 0 { &w.a } else { &w.b };
            let label = format!("GET /me with access token {i} of {}", m.describe(s));
            probes.push(Probe::me(app, m, s, token, label).run());
        }
    }
    for user in 0..m.users.len() {
        let mut live: Vec<&Session> = m
            .sessions
            .iter()
            .filter(|s| s.live && s.user == user)
            .collect();
        let Some(caller) = live.last().copied() else {
            continue;
        };
        live.sort_by(|x, y| (y.created_at, &y.id).cmp(&(x.created_at, &x.id)));
        let app = if user % 2 == 0 { &w.a } else { &w.b };
        let probe = Probe {
            client: app.client.clone(),
            base: app.address.clone(),
            token: caller.access.last().unwrap().clone(),
            expect: Expect::Sessions(
                live.iter()
                    .map(|s| (s.id.clone(), s.id == caller.id))
                    .collect(),
            ),
            label: format!("GET /me/sessions of user {user}"),
        };
        probes.push(probe.run());
    }
    *m.seen
        .entry("requests checking the state".into())
        .or_default() += probes.len() as u32;
    let failures: Vec<String> = concurrently(probes)
        .await
        .into_iter()
        .filter_map(Result::err)
        .collect();
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("\n    "))
    }
}

/// Runs one case: fresh users, the operations one by one, the model checked after each.
async fn run_case(w: &World, ops: &[Op]) -> Result<(), String> {
    let mut users = Vec::new();
    for _ in 0..USERS {
        let email = unique_email();
        let r = reply(w.a.register(&email, PASSWORD, "Model").await).await;
        let id = r.body["id"].as_str().ok_or(format!("register: {r:?}"))?;
        users.push(User {
            id: id.to_string(),
            email,
            password: PASSWORD,
        });
    }
    let mut m = Model {
        now: w.a.clock.now_ms(),
        users,
        sessions: Vec::new(),
        seen: BTreeMap::new(),
    };
    // Every user starts with a session, so that the operations have something to act on.
    let setup = (0..USERS).map(|user| Op::Login { user, on: On::A });
    let mut trace = Vec::new();
    for op in setup.chain(ops.iter().cloned()) {
        let live: Vec<bool> = m.sessions.iter().map(|s| s.live).collect();
        let failed = match step(w, &mut m, &op).await {
            Ok(None) => continue,
            Ok(Some(what)) => {
                trace.push(what);
                *m.seen.entry("steps run".into()).or_default() += 1;
                let ended: Vec<usize> = (0..live.len())
                    .filter(|&s| live[s] && !m.sessions[s].live)
                    .collect();
                check_everything(w, &mut m, &ended)
                    .await
                    .err()
                    .map(|e| format!("after it: {e}"))
            }
            Err((what, e)) => {
                trace.push(what);
                Some(e)
            }
        };
        if let Some(e) = failed {
            let steps: Vec<String> = trace
                .iter()
                .enumerate()
                .map(|(i, s)| format!("  {}. {s}", i + 1))
                .collect();
            return Err(format!("\n{}\n  {e}", steps.join("\n")));
        }
    }
    let mut seen = w.seen.lock().unwrap();
    *seen.entry("cases".into()).or_default() += 1;
    for (k, n) in m.seen {
        *seen.entry(k).or_default() += n;
    }
    Ok(())
}

#[test]
fn rotation_follows_the_model() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // One pair of servers for every case (fresh users keep the cases apart): starting a pair
    // costs more than a case (measured: 0.3 s on SQLite and 1 s on PostgreSQL, against 0.2 s
    // and 0.4 s a case).
    let started = std::time::Instant::now();
    let world = rt.block_on(World::start());
    let start_ms = started.elapsed().as_millis();
    let config = ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(CASES),
        // A failure is shrunk this far at most (the default, 4 per case, stops short).
        max_shrink_iters: 2048,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/proptest-regressions/tests/api/model.txt"
        )))),
        ..ProptestConfig::default()
    };
    proptest!(config, |(ops in proptest::collection::vec(op(), 1..=MAX_OPS))| {
        if let Err(e) = rt.block_on(run_case(&world, &ops)) {
            return Err(TestCaseError::fail(e));
        }
    });
    eprintln!("two instances and a superuser started in {start_ms} ms");
    for (what, n) in world.seen.lock().unwrap().iter() {
        eprintln!("{n:6}  {what}");
    }
    drop(world);
}
