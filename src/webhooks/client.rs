//! One delivery attempt: a POST over HTTP/1.1, on a connection made to an address the guard
//! checked (`guard::resolve`), with TLS for `https` (rustls, the webpki roots, SNI the URL's
//! host). No redirect is followed, no connection is reused, and only the status line of the
//! answer is read.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::Request;
use hyper::header::{CONTENT_TYPE, HOST, HeaderValue, USER_AGENT};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore, pki_types::ServerName};

use super::guard::{self, Target};

/// The longest `last_error` kept.
const MAX_ERROR_LENGTH: usize = 200;

/// What an attempt came to: the receiver's status, or why there was none.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The receiver answered with this status (2xx is a delivery; anything else, 3xx included,
    /// is not).
    Answered(u16),
    /// No answer: refused by the guard, no connection, TLS, timeout, a broken response. The
    /// message is short and holds no secret nor any part of the URL but its host.
    Failed(String),
}

/// Sends the webhooks. Built once per worker.
#[derive(Clone)]
pub struct Client {
    tls: TlsConnector,
    allow_private: bool,
    timeout: Duration,
    user_agent: HeaderValue,
}

impl Client {
    pub fn new(allow_private: bool, timeout: Duration) -> Self {
        let mut roots = RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("ring supports TLS 1.2 and 1.3")
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Self {
            tls: TlsConnector::from(Arc::new(config)),
            allow_private,
            timeout,
            user_agent: HeaderValue::from_static(concat!(
                "auth-server-webhooks/",
                env!("CARGO_PKG_VERSION")
            )),
        }
    }

    /// POSTs `body` (JSON) to `url` with `headers`, within the timeout.
    pub async fn post(
        &self,
        url: &str,
        headers: &[(&'static str, String)],
        body: String,
    ) -> Outcome {
        let attempt = self.attempt(url, headers, body);
        match tokio::time::timeout(self.timeout, attempt).await {
            Ok(Ok(status)) => Outcome::Answered(status),
            Ok(Err(error)) => Outcome::Failed(short(error)),
            Err(_) => Outcome::Failed(format!(
                "no answer within {} s (WEBHOOK_TIMEOUT_SECONDS)",
                self.timeout.as_secs()
            )),
        }
    }

    async fn attempt(
        &self,
        url: &str,
        headers: &[(&'static str, String)],
        body: String,
    ) -> Result<u16, String> {
        let target = guard::parse(url).map_err(|e| format!("the URL {e}"))?;
        let addresses = guard::resolve(&target, self.allow_private)
            .await
            .map_err(|e| match e {
                guard::Refusal::Unresolved { .. } => e.to_string(),
                e => format!("refused: the host {e}"),
            })?;
        let stream = connect(&addresses).await?;
        let request = self.request(&target, headers, body)?;
        if target.is_https() {
            let name = match target.host() {
                url::Host::Domain(name) => ServerName::try_from(name.to_string())
                    .map_err(|_| "the host is not a valid TLS server name".to_string())?,
                url::Host::Ipv4(ip) => ServerName::from(std::net::IpAddr::V4(ip)),
                url::Host::Ipv6(ip) => ServerName::from(std::net::IpAddr::V6(ip)),
            };
            let tls = self
                .tls
                .connect(name, stream)
                .await
                .map_err(|e| format!("TLS: {e}"))?;
            send(tls, request).await
        } else {
            send(stream, request).await
        }
    }

    fn request(
        &self,
        target: &Target,
        headers: &[(&'static str, String)],
        body: String,
    ) -> Result<Request<String>, String> {
        let mut builder = Request::post(target.path_and_query())
            .header(HOST, target.authority())
            .header(CONTENT_TYPE, "application/json")
            .header(USER_AGENT, self.user_agent.clone());
        for (name, value) in headers {
            builder = builder.header(*name, value);
        }
        builder
            .body(body)
            .map_err(|e| format!("cannot build the request: {e}"))
    }
}

/// Connects to the first of `addresses` that answers.
async fn connect(addresses: &[SocketAddr]) -> Result<TcpStream, String> {
    let mut last = String::from("no address");
    for address in addresses {
        match TcpStream::connect(address).await {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Err(e) => last = format!("cannot connect to {address}: {e}"),
        }
    }
    Err(last)
}

/// Sends `request` on `io` and returns the response's status, without reading its body.
async fn send<IO>(io: IO, request: Request<String>) -> Result<u16, String>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    let response = sender.send_request(request);
    tokio::pin!(response, connection);
    let response = tokio::select! {
        biased;
        response = &mut response => response,
        ended = &mut connection => match ended {
            Err(e) => return Err(format!("HTTP: {e}")),
            // The connection ended first: the request's own result says why.
            Ok(()) => response.await,
        },
    };
    response
        .map(|r| r.status().as_u16())
        .map_err(|e| format!("HTTP: {e}"))
}

/// Cuts `message` to [`MAX_ERROR_LENGTH`] characters.
fn short(message: String) -> String {
    if message.chars().count() <= MAX_ERROR_LENGTH {
        return message;
    }
    let mut cut: String = message.chars().take(MAX_ERROR_LENGTH - 1).collect();
    cut.push('…');
    cut
}

/// What the log says of a status that is not a delivery: `HTTP 503 Service Unavailable`.
pub fn status_line(status: u16) -> String {
    let reason = hyper::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    format!("HTTP {status} {reason}").trim_end().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_cut_short() {
        assert_eq!(short("x".repeat(10)), "x".repeat(10));
        let cut = short("y".repeat(500));
        assert_eq!(cut.chars().count(), MAX_ERROR_LENGTH);
        assert!(cut.ends_with('…'));
    }

    #[test]
    fn status_lines() {
        assert_eq!(status_line(503), "HTTP 503 Service Unavailable");
        assert_eq!(status_line(307), "HTTP 307 Temporary Redirect");
        assert_eq!(status_line(599), "HTTP 599");
    }
}
