//! The `[server]` table: where the server listens, how long it waits, whom it lets in.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::validate::{Invalid, invalid, seconds};

pub const DEFAULT_HOST: &str = "127.0.0.1";
pub const DEFAULT_PORT: u16 = 8080;
/// Local requests that may wait by default.
pub const DEFAULT_MAX_QUEUE: usize = 64;
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(600);
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Time to send a request's head, from the connection's start or its first byte.
pub(crate) const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Time to send a request's whole body once its head is in.
pub(crate) const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a kept-alive connection may sit between requests.
pub(crate) const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Connections open at once; past it, new ones are closed as they arrive.
pub(crate) const DEFAULT_MAX_CONNECTIONS: usize = 256;
/// The largest request body, in bytes.
pub(crate) const DEFAULT_MAX_BODY: usize = 2 << 20;

#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    pub host: String,
    pub port: u16,
    /// Local requests that may wait while one generates; past it, 429.
    pub max_queue: usize,
    /// Longest a local request may take.
    pub request_timeout: Duration,
    /// After a shutdown signal, how long in-flight requests may finish before they are cut.
    pub drain_timeout: Duration,
    /// Host names a loopback server answers to besides loopback names and addresses.
    pub allowed_hosts: Vec<String>,
    /// Origins (`scheme://host[:port]`) whose pages may call the API; none by default.
    pub cors_origins: Vec<String>,
    /// The variable holding the API keys clients must present, if keys are required.
    pub api_keys_env: Option<String>,
    /// A file of named, hashed API keys clients must present, if keys are required.
    pub api_keys_file: Option<PathBuf>,
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    pub max_body: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            host: DEFAULT_HOST.into(),
            port: DEFAULT_PORT,
            max_queue: DEFAULT_MAX_QUEUE,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            allowed_hosts: Vec::new(),
            cors_origins: Vec::new(),
            api_keys_env: None,
            api_keys_file: None,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_body: DEFAULT_MAX_BODY,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawServer {
    host: Option<Spanned<String>>,
    port: Option<u16>,
    max_queue: Option<usize>,
    request_timeout: Option<Spanned<f64>>,
    drain_timeout: Option<Spanned<f64>>,
    allowed_hosts: Option<Vec<Spanned<String>>>,
    cors_origins: Option<Vec<Spanned<String>>>,
    api_keys_env: Option<Spanned<String>>,
    api_keys_file: Option<Spanned<String>>,
    header_timeout: Option<Spanned<f64>>,
    body_timeout: Option<Spanned<f64>>,
    idle_timeout: Option<Spanned<f64>>,
    max_connections: Option<Spanned<usize>>,
    max_body: Option<Spanned<usize>>,
}

impl RawServer {
    pub(crate) fn validate(self) -> Result<ServerConfig, Invalid> {
        let d = ServerConfig::default();
        let secs = |name: &str, v: Option<Spanned<f64>>, default: Duration| match v {
            None => Ok(default),
            Some(t) => seconds(&format!("server.{name}"), t),
        };
        let host = match self.host {
            None => d.host,
            Some(h) if h.get_ref().trim().is_empty() => {
                return invalid("server.host".into(), h.span(), "must not be empty");
            }
            Some(h) => h.into_inner(),
        };
        let mut allowed_hosts = Vec::new();
        for (i, h) in self.allowed_hosts.into_iter().flatten().enumerate() {
            let name = h.get_ref().trim().to_ascii_lowercase();
            let ok = !name.is_empty()
                && name.len() <= 253
                && name.bytes().all(|b| {
                    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']')
                });
            if !ok {
                return invalid(
                    format!("server.allowed_hosts[{i}]"),
                    h.span(),
                    "must be a host name or address, e.g. \"gpu-box.lan\"",
                );
            }
            allowed_hosts.push(name);
        }
        let mut cors_origins = Vec::new();
        for (i, o) in self.cors_origins.into_iter().flatten().enumerate() {
            match origin(o.get_ref()) {
                Some(clean) => cors_origins.push(clean),
                None => {
                    return invalid(
                        format!("server.cors_origins[{i}]"),
                        o.span(),
                        "must be an origin `scheme://host[:port]` without a path, e.g. \
                         \"https://app.example.com\" (`*` is not accepted)",
                    );
                }
            }
        }
        let api_keys_env = match self.api_keys_env {
            Some(v) if v.get_ref().trim().is_empty() => {
                return invalid(
                    "server.api_keys_env".into(),
                    v.span(),
                    "must name an environment variable",
                );
            }
            v => v.map(|v| v.into_inner().trim().to_string()),
        };
        let api_keys_file = match self.api_keys_file {
            Some(v) if v.get_ref().trim().is_empty() => {
                return invalid("server.api_keys_file".into(), v.span(), "must be a path");
            }
            v => v.map(|v| PathBuf::from(v.into_inner())),
        };
        let positive = |name: &str, v: Option<Spanned<usize>>, default: usize| match v {
            None => Ok(default),
            Some(n) if *n.get_ref() == 0 => {
                invalid(format!("server.{name}"), n.span(), "must be at least 1")
            }
            Some(n) => Ok(n.into_inner()),
        };
        Ok(ServerConfig {
            host,
            port: self.port.unwrap_or(d.port),
            max_queue: self.max_queue.unwrap_or(d.max_queue),
            request_timeout: secs("request_timeout", self.request_timeout, d.request_timeout)?,
            drain_timeout: secs("drain_timeout", self.drain_timeout, d.drain_timeout)?,
            allowed_hosts,
            cors_origins,
            api_keys_env,
            api_keys_file,
            header_timeout: secs("header_timeout", self.header_timeout, d.header_timeout)?,
            body_timeout: secs("body_timeout", self.body_timeout, d.body_timeout)?,
            idle_timeout: secs("idle_timeout", self.idle_timeout, d.idle_timeout)?,
            max_connections: positive("max_connections", self.max_connections, d.max_connections)?,
            max_body: positive("max_body", self.max_body, d.max_body)?,
        })
    }
}

/// An origin as browsers send it (`scheme://host[:port]`, lowercase), or `None` for
/// anything else.
fn origin(s: &str) -> Option<String> {
    let url = url::Url::parse(s.trim()).ok()?;
    let bare = url.path() == "/" && url.query().is_none() && url.fragment().is_none();
    let written = s.trim().trim_end_matches('/');
    if !matches!(url.scheme(), "http" | "https") || !bare || written.matches('/').count() != 2 {
        return None;
    }
    url.host_str()?;
    Some(url.origin().ascii_serialization())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_scheme_host_and_port_only() {
        assert_eq!(
            origin("https://App.Example.com").as_deref(),
            Some("https://app.example.com")
        );
        assert_eq!(
            origin("http://localhost:3000/").as_deref(),
            Some("http://localhost:3000")
        );
        for bad in [
            "*",
            "app.example.com",
            "https://a.com/path",
            "ftp://a.com",
            "null",
        ] {
            assert_eq!(origin(bad), None, "{bad}");
        }
    }
}
