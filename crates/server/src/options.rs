//! How the server lets requests in: from where, with which keys, how fast they must arrive.

use std::time::Duration;

use smallfirst_router::ServerConfig;

use crate::auth::Keys;

#[derive(Debug, Clone)]
pub struct Options {
    /// The server listens on a loopback address: a request must name a loopback host (or one
    /// of `allowed_hosts`), which a page elsewhere cannot do even through DNS rebinding.
    pub loopback: bool,
    pub allowed_hosts: Vec<String>,
    /// Origins whose pages may call the API; a request from any other origin is refused.
    pub cors_origins: Vec<String>,
    /// The keys requests must carry; none: the API is open (loopback only, unless forced).
    pub keys: Keys,
    /// Time to send a request's head, from the connection's start or its first byte.
    pub header_timeout: Duration,
    /// Time to send a request's whole body once its head is in.
    pub body_timeout: Duration,
    /// How long a kept-alive connection may sit between requests.
    pub idle_timeout: Duration,
    /// Connections open at once; past it, new ones are closed at once.
    pub max_connections: usize,
    /// The largest request body, in bytes.
    pub max_body: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options::from_config(&ServerConfig::default(), Keys::none(), true)
    }
}

impl Options {
    /// The `[server]` settings, with the keys read from where they say and whether the bound
    /// address is a loopback one.
    pub fn from_config(c: &ServerConfig, keys: Keys, loopback: bool) -> Self {
        Options {
            loopback,
            allowed_hosts: c.allowed_hosts.clone(),
            cors_origins: c.cors_origins.clone(),
            keys,
            header_timeout: c.header_timeout,
            body_timeout: c.body_timeout,
            idle_timeout: c.idle_timeout,
            max_connections: c.max_connections,
            max_body: c.max_body,
        }
    }
}
