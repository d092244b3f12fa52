//! A real SMTP server for the tests, in process: it speaks enough SMTP for lettre (EHLO, MAIL,
//! RCPT, DATA, RSET, NOOP, QUIT; no STARTTLS offered) and keeps what it receives. It takes every
//! mail unless told otherwise: [`SmtpSink::script`] sets what it does with each next attempt (one
//! connection: the server's lettre opens one per mail), such as refuse it for now (451), for good
//! (550), or never answer.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

use crate::helpers::{TestApp, eventually, spawn_app_with};

/// How long a test waits for a mail.
pub const WAIT: Duration = Duration::from_secs(10);
/// The subjects of the mails with links.
pub const RESET: &str = "Reset your password";
pub const VERIFY: &str = "Confirm your email address";
/// The front end the links point at in the mail tests.
pub const PUBLIC_URL: &str = "https://app.example.com";

/// The server, delivering its mail to `sink` (retrying after 1 s), with `extra` variables.
pub async fn app_with_mail(sink: &SmtpSink, extra: &[(&str, &str)]) -> TestApp {
    let url = sink.url();
    let mut vars: Vec<(&str, &str)> = vec![
        ("SMTP_URL", url.as_str()),
        ("MAIL_FROM", "Example App <no-reply@example.com>"),
        ("PUBLIC_URL", PUBLIC_URL),
        ("MAIL_RETRY_BASE_SECONDS", "1"),
    ];
    vars.extend_from_slice(extra);
    spawn_app_with(&vars).await
}

/// The server's log messages (the `auth_server` crate's events, debug and up) while a test
/// runs, for the tests that must know that work with nothing else to show for it is done (a
/// reset request for an address with no account, a pass of the mail worker that found nothing
/// due). A `#[tokio::test]` runtime runs every task on the test's thread, the server's
/// included (its requests, the work they leave running, the mail worker): a subscriber set
/// for that thread sees their events. (Not the hashing threads', which these tests do not need.)
pub struct Logs {
    messages: Arc<Mutex<Vec<String>>>,
    _guard: tracing::subscriber::DefaultGuard,
}

struct Messages(Arc<Mutex<Vec<String>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Messages {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        struct Message(Option<String>);
        impl tracing::field::Visit for Message {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                if field.name() == "message" {
                    self.0 = Some(format!("{value:?}"));
                }
            }
        }
        let mut message = Message(None);
        event.record(&mut message);
        if let Some(message) = message.0 {
            self.0.lock().unwrap().push(message);
        }
    }
}

impl Logs {
    /// Captures from now until the value is dropped (the end of the test).
    pub fn capture() -> Self {
        use tracing_subscriber::layer::SubscriberExt;
        let messages = Arc::new(Mutex::new(Vec::new()));
        let subscriber = tracing_subscriber::registry()
            .with(
                tracing_subscriber::filter::Targets::new()
                    .with_target("auth_server", tracing::Level::DEBUG),
            )
            .with(Messages(messages.clone()));
        Self {
            messages,
            _guard: tracing::subscriber::set_default(subscriber),
        }
    }

    /// How many events so far had one of `messages` as their message.
    pub fn count(&self, messages: &[&str]) -> usize {
        self.messages
            .lock()
            .unwrap()
            .iter()
            .filter(|m| messages.contains(&m.as_str()))
            .count()
    }

    /// Waits until `count` events have had one of `messages`; panics after [`WAIT`].
    pub async fn wait_for(&self, messages: &[&str], count: usize) {
        eventually(
            &format!("{count} log events of {messages:?}"),
            WAIT,
            || async { self.messages.lock().unwrap().clone() },
            |logged| {
                logged
                    .iter()
                    .filter(|m| messages.contains(&m.as_str()))
                    .count()
                    >= count
            },
        )
        .await;
    }
}

/// What the mail worker logs when a pass over the outbox has found nothing more due.
pub const WORKER_PASS_END: &str = "mail outbox: nothing due";

/// Wakes `app`'s mail worker and returns once it has been through the whole outbox at least once
/// since the call: it claims what is due until nothing is, so a mail still unsent afterwards was
/// not due at the clock's time (as long as the clock did not move meanwhile). Two ends of a pass
/// are awaited, because the first may end a pass begun before the call. Every worker of the test
/// logs to `logs`: with several instances, call this only while the others are busy.
pub async fn worker_looked(app: &TestApp, logs: &Logs) {
    let before = logs.count(&[WORKER_PASS_END]);
    for more in 1..=2 {
        app.state.mail_wakeup.notify_one();
        logs.wait_for(&[WORKER_PASS_END], before + more).await;
    }
}

#[derive(Clone, Debug)]
pub struct Received {
    pub from: String,
    pub to: Vec<String>,
    /// Headers and body, as sent (dot-unstuffed).
    pub data: String,
}

impl Received {
    /// Sent to `to`, with `subject` in its subject.
    fn is_to(&self, to: &str, subject: &str) -> bool {
        self.to.iter().any(|t| t == to)
            && self.header("Subject").is_some_and(|s| s.contains(subject))
    }

    pub fn header(&self, name: &str) -> Option<String> {
        let head = self.data.split("\r\n\r\n").next()?;
        head.lines()
            .find(|l| {
                l.to_ascii_lowercase()
                    .starts_with(&format!("{}:", name.to_ascii_lowercase()))
            })
            .map(|l| l[name.len() + 1..].trim().to_string())
    }

    /// The body, with quoted-printable undone if it was used.
    pub fn body(&self) -> String {
        let body = self
            .data
            .split_once("\r\n\r\n")
            .map_or("", |(_, b)| b)
            .to_string();
        let qp = self
            .header("Content-Transfer-Encoding")
            .is_some_and(|e| e.eq_ignore_ascii_case("quoted-printable"));
        if qp {
            decode_quoted_printable(&body)
        } else {
            body
        }
    }

    /// The token of the first link to `{PUBLIC_URL}{path}?token=` in the body.
    pub fn link_token(&self, path: &str) -> Option<String> {
        let body = self.body();
        let marker = format!("{path}?token=");
        let start = body.find(&marker)? + marker.len();
        Some(
            body[start..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
                .collect(),
        )
    }
}

fn decode_quoted_printable(s: &str) -> String {
    decode_hex_escapes(&s.replace("=\r\n", ""), b'=')
}

/// `s` with each `escape` followed by two hex digits replaced by that byte (quoted-printable's
/// `=3D`, a URL's `%40`); anything else is kept as it is.
pub fn decode_hex_escapes(s: &str, escape: u8) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == escape)
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok());
        match escaped {
            Some(b) => {
                out.push(b);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What the server does with one attempt (one connection).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reply {
    /// Takes the mail.
    Accept,
    /// Answers `RCPT TO` with this code (451: try again later; 550: never), then goes on as a
    /// server does (the client gives up and says QUIT).
    RefuseRecipient(u16),
    /// Reads the whole message, then answers its end with this code instead of 250.
    RefuseData(u16),
    /// Accepts the connection and never says a word, not even the greeting.
    HangAtConnect,
    /// Reads the whole message and never answers its end.
    HangAfterData,
}

impl Reply {
    fn text(code: u16) -> String {
        let what = if code >= 500 {
            "refused for good"
        } else {
            "try again later"
        };
        format!("{code} {what}\r\n")
    }
}

/// One attempt the server saw: one connection.
#[derive(Clone, Debug)]
pub struct Attempt {
    pub reply: Reply,
    /// The recipients the client named (`RCPT TO`), refused ones included.
    pub to: Vec<String>,
    /// The message was taken (answered 250).
    pub delivered: bool,
    /// The server has stopped answering on this connection (a hang has begun).
    pub hanging: bool,
    /// The connection is over (the client hung up, or said QUIT).
    pub closed: bool,
}

#[derive(Debug)]
struct Inner {
    /// What the next attempts get, in order; then `default`.
    script: VecDeque<Reply>,
    default: Reply,
    attempts: Vec<Attempt>,
    received: Vec<Received>,
}

pub struct SmtpSink {
    pub port: u16,
    inner: Arc<Mutex<Inner>>,
    task: JoinHandle<()>,
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        // The sessions are in the task's JoinSet: they end with it, hung ones included.
        self.task.abort();
    }
}

impl SmtpSink {
    pub async fn start() -> Self {
        Self::start_on(0).await
    }

    /// Listens on `port` (0: any free port).
    pub async fn start_on(port: u16) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let inner = Arc::new(Mutex::new(Inner {
            script: VecDeque::new(),
            default: Reply::Accept,
            attempts: Vec::new(),
            received: Vec::new(),
        }));
        let shared = inner.clone();
        let task = tokio::spawn(async move {
            let mut sessions = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let index = {
                    let mut inner = shared.lock().unwrap();
                    let reply = inner.script.pop_front().unwrap_or(inner.default);
                    inner.attempts.push(Attempt {
                        reply,
                        to: Vec::new(),
                        delivered: false,
                        hanging: false,
                        closed: false,
                    });
                    inner.attempts.len() - 1
                };
                let shared = shared.clone();
                sessions.spawn(async move {
                    let _ = session(stream, &shared, index).await;
                    shared.lock().unwrap().attempts[index].closed = true;
                });
                // Forget the sessions that have ended.
                while sessions.try_join_next().is_some() {}
            }
        });
        Self { port, inner, task }
    }

    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// What the next attempts get, one each in order (after those scripted before); the
    /// attempts after them get the default ([`Reply::Accept`] unless [`SmtpSink::by_default`]).
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.inner.lock().unwrap().script.extend(replies);
    }

    /// What every attempt gets once the script has run out.
    pub fn by_default(&self, reply: Reply) {
        self.inner.lock().unwrap().default = reply;
    }

    /// Every attempt so far, in the order the connections came.
    pub fn attempts(&self) -> Vec<Attempt> {
        self.inner.lock().unwrap().attempts.clone()
    }

    /// The attempts that named `to` as a recipient.
    pub fn attempts_to(&self, to: &str) -> Vec<Attempt> {
        self.attempts()
            .into_iter()
            .filter(|a| a.to.iter().any(|t| t == to))
            .collect()
    }

    /// Waits until `done` holds of the attempts; panics after `timeout`, saying `what`.
    pub async fn wait_until(
        &self,
        what: &str,
        timeout: Duration,
        done: impl Fn(&[Attempt]) -> bool,
    ) -> Vec<Attempt> {
        eventually(
            &format!("the SMTP server seeing {what}"),
            timeout,
            || async { self.attempts() },
            |attempts| done(attempts),
        )
        .await
    }

    /// The mails taken (answered 250), in order.
    pub fn received(&self) -> Vec<Received> {
        self.inner.lock().unwrap().received.clone()
    }

    /// Mails to `to` whose subject contains `subject`.
    pub fn mails_to(&self, to: &str, subject: &str) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|m| m.is_to(to, subject))
            .collect()
    }

    /// Waits until `count` such mails have arrived; panics after `timeout`.
    pub async fn wait_for(
        &self,
        to: &str,
        subject: &str,
        count: usize,
        timeout: Duration,
    ) -> Vec<Received> {
        let all = eventually(
            &format!("{count} mail(s) `{subject}` to {to} arriving"),
            timeout,
            || async { self.received() },
            |all| all.iter().filter(|m| m.is_to(to, subject)).count() >= count,
        )
        .await;
        all.into_iter().filter(|m| m.is_to(to, subject)).collect()
    }
}

fn address(arg: &str) -> String {
    let start = arg.find('<').map_or(0, |i| i + 1);
    let end = arg.rfind('>').unwrap_or(arg.len());
    arg[start..end].to_string()
}

/// Stops answering: reads (and drops) whatever the client sends until it hangs up.
async fn hang(
    mut lines: BufReader<tokio::net::tcp::OwnedReadHalf>,
    inner: &Mutex<Inner>,
    index: usize,
) -> std::io::Result<()> {
    inner.lock().unwrap().attempts[index].hanging = true;
    let mut buffer = [0u8; 1024];
    while lines.read(&mut buffer).await? > 0 {}
    Ok(())
}

async fn session(
    stream: tokio::net::TcpStream,
    inner: &Mutex<Inner>,
    index: usize,
) -> std::io::Result<()> {
    let reply = inner.lock().unwrap().attempts[index].reply;
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    if reply == Reply::HangAtConnect {
        return hang(lines, inner, index).await;
    }
    write.write_all(b"220 sink ESMTP test\r\n").await?;
    let (mut from, mut to) = (String::new(), Vec::new());
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let command = line.trim_end().to_string();
        let upper = command.to_ascii_uppercase();
        if upper.starts_with("EHLO") {
            write
                .write_all(b"250-sink\r\n250-8BITMIME\r\n250 SIZE 1000000\r\n")
                .await?;
        } else if upper.starts_with("HELO") {
            write.write_all(b"250 sink\r\n").await?;
        } else if upper.starts_with("MAIL FROM:") {
            from = address(&command[10..]);
            to.clear();
            write.write_all(b"250 OK\r\n").await?;
        } else if upper.starts_with("RCPT TO:") {
            let recipient = address(&command[8..]);
            inner.lock().unwrap().attempts[index]
                .to
                .push(recipient.clone());
            if let Reply::RefuseRecipient(code) = reply {
                write.write_all(Reply::text(code).as_bytes()).await?;
            } else {
                to.push(recipient);
                write.write_all(b"250 OK\r\n").await?;
            }
        } else if upper == "DATA" {
            write.write_all(b"354 end with <CRLF>.<CRLF>\r\n").await?;
            let mut data = String::new();
            loop {
                line.clear();
                if lines.read_line(&mut line).await? == 0 {
                    return Ok(());
                }
                if line == ".\r\n" || line == ".\n" {
                    break;
                }
                let unstuffed = line.strip_prefix('.').unwrap_or(&line);
                data.push_str(unstuffed);
            }
            match reply {
                Reply::HangAfterData => return hang(lines, inner, index).await,
                Reply::RefuseData(code) => {
                    write.write_all(Reply::text(code).as_bytes()).await?;
                }
                _ => {
                    {
                        let mut inner = inner.lock().unwrap();
                        inner.attempts[index].delivered = true;
                        inner.received.push(Received {
                            from: from.clone(),
                            to: to.clone(),
                            data,
                        });
                    }
                    write.write_all(b"250 OK queued\r\n").await?;
                }
            }
        } else if upper == "RSET" || upper == "NOOP" {
            write.write_all(b"250 OK\r\n").await?;
        } else if upper == "QUIT" {
            write.write_all(b"221 bye\r\n").await?;
            return Ok(());
        } else {
            write.write_all(b"502 not implemented\r\n").await?;
        }
    }
}
