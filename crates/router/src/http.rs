//! The HTTP every remote backend shares: one pooled client per tier (HTTP/1.1 keep-alive, no
//! client built per request), and the deadlines that keep a caller from hanging on a stuck
//! upstream: connect, first byte (also the longest silence between two chunks), and a total
//! deadline for the whole call.

use std::pin::Pin;
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};
use reqwest::header::HeaderMap;
use tokio::time::Instant;

use crate::backend::BackendError;
use crate::config::Faults;

/// Most of an answer that is read into memory (a whole non-streamed completion or an error).
const BODY_LIMIT: usize = 32 * 1024 * 1024;
/// Most of an error body that is kept.
const ERROR_BODY_LIMIT: usize = 64 * 1024;

/// What a backend turns an upstream's error body into: OpenAI's error object and a message.
pub(crate) type ErrorMapper = fn(u16, &[u8]) -> serde_json::Value;

/// A tier's connection pool and deadlines.
#[derive(Debug, Clone)]
pub(crate) struct Http {
    tier: String,
    client: reqwest::Client,
    connect: Duration,
    first_byte: Duration,
}

/// A byte stream from an upstream, deadlines applied.
pub(crate) type Chunks = Pin<Box<dyn Stream<Item = Result<Bytes, BackendError>> + Send>>;

impl Http {
    pub(crate) fn new(tier: &str, faults: &Faults) -> Result<Self, BackendError> {
        let client = reqwest::Client::builder()
            .connect_timeout(faults.connect_timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_nodelay(true)
            // A redirect would re-send provider key headers to another host, and turn a POST
            // into a GET: an upstream that redirects is misconfigured, and says so.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| BackendError::Client {
                tier: tier.into(),
                reason: e.to_string(),
            })?;
        Ok(Http {
            tier: tier.into(),
            client,
            connect: faults.connect_timeout,
            first_byte: faults.first_byte_timeout,
        })
    }

    pub(crate) fn post(&self, url: url::Url) -> reqwest::RequestBuilder {
        self.client.post(url)
    }

    /// Sends `request` and waits for a successful response head. An error status is read
    /// (bounded) and becomes [`BackendError::Status`], its body mapped by `errors`.
    /// A whole (non-streamed) answer's head comes only when the model has finished, so it is
    /// waited for until `deadline`; a stream's head within the first-byte timeout.
    pub(crate) async fn send(
        &self,
        request: reqwest::RequestBuilder,
        deadline: Instant,
        stream: bool,
        errors: ErrorMapper,
    ) -> Result<reqwest::Response, BackendError> {
        let request = request.build().map_err(|e| BackendError::Client {
            tier: self.tier.clone(),
            reason: error_chain(&e),
        })?;
        let url = redacted(request.url());
        let (limit, what) = if stream {
            self.limit(deadline, "no response head")
        } else {
            (
                deadline.saturating_duration_since(Instant::now()),
                "the total deadline passed",
            )
        };
        let response = tokio::time::timeout(limit, self.client.execute(request))
            .await
            .map_err(|_| self.timeout(what, limit))?
            .map_err(|e| {
                if e.is_connect() && e.is_timeout() {
                    self.timeout("no connection", self.connect)
                } else {
                    BackendError::Unreachable {
                        tier: self.tier.clone(),
                        url,
                        reason: error_chain(&e),
                    }
                }
            })?;
        let status = response.status().as_u16();
        if response.status().is_success() {
            return Ok(response);
        }
        let retry_after = retry_after(response.headers());
        let body = self
            .read(response, deadline, ERROR_BODY_LIMIT)
            .await
            .unwrap_or_default();
        // Google puts its hint in the body (`error.details[].retryDelay: "30s"`), not a header.
        let retry_after = retry_after.or_else(|| retry_delay(&body));
        let error = errors(status, &body);
        let message = error["error"]["message"]
            .as_str()
            .unwrap_or("no message")
            .to_string();
        Err(BackendError::Status {
            tier: self.tier.clone(),
            status,
            message,
            body: Bytes::from(serde_json::to_vec(&error).unwrap_or_default()),
            retry_after,
        })
    }

    /// The whole body, by `deadline`.
    pub(crate) async fn body(
        &self,
        response: reqwest::Response,
        deadline: Instant,
    ) -> Result<Bytes, BackendError> {
        self.read(response, deadline, BODY_LIMIT).await
    }

    async fn read(
        &self,
        response: reqwest::Response,
        deadline: Instant,
        most: usize,
    ) -> Result<Bytes, BackendError> {
        let mut chunks = self.chunks(response, deadline);
        let mut out = BytesMut::new();
        while let Some(chunk) = chunks.next().await {
            out.extend_from_slice(&chunk?);
            if out.len() >= most {
                out.truncate(most);
                break;
            }
        }
        Ok(out.freeze())
    }

    /// The body as it comes, each chunk within the first-byte timeout of the last and all of
    /// it by `deadline`.
    pub(crate) fn chunks(&self, response: reqwest::Response, deadline: Instant) -> Chunks {
        let this = self.clone();
        let body = response.bytes_stream();
        Box::pin(futures::stream::unfold(
            Some(Box::pin(body)),
            move |state| {
                let this = this.clone();
                async move {
                    let mut body = state?;
                    let (limit, what) = this.limit(deadline, "no data");
                    match tokio::time::timeout(limit, body.next()).await {
                        Err(_) => Some((Err(this.timeout(what, limit)), None)),
                        Ok(None) => None,
                        Ok(Some(Ok(chunk))) => Some((Ok(chunk), Some(body))),
                        Ok(Some(Err(e))) => Some((
                            Err(BackendError::StreamBroken {
                                tier: this.tier.clone(),
                                reason: error_chain(&e),
                            }),
                            None,
                        )),
                    }
                }
            },
        ))
    }

    /// The wait allowed for the next step, and what passing it means.
    fn limit(&self, deadline: Instant, what: &'static str) -> (Duration, &'static str) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left < self.first_byte {
            (left, "the total deadline passed")
        } else {
            (self.first_byte, what)
        }
    }

    fn timeout(&self, what: &'static str, after: Duration) -> BackendError {
        BackendError::Timeout {
            tier: self.tier.clone(),
            what,
            after,
        }
    }

    pub(crate) fn tier(&self) -> &str {
        &self.tier
    }
}

/// `Retry-After` (seconds or an HTTP date) or `retry-after-ms`, whichever the upstream sent.
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(ms) = text("retry-after-ms").and_then(|v| v.trim().parse::<f64>().ok())
        && ms.is_finite()
        && ms >= 0.0
    {
        return Duration::try_from_secs_f64(ms / 1000.0).ok();
    }
    let value = text("retry-after")?.trim();
    if let Ok(secs) = value.parse::<f64>() {
        return Duration::try_from_secs_f64(secs).ok();
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(
        when.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// A `retryDelay` (`"30s"`, `"1.5s"`) in an error body's `error.details`, as Google's APIs send
/// it.
fn retry_delay(body: &[u8]) -> Option<Duration> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    v["error"]["details"].as_array()?.iter().find_map(|d| {
        let secs: f64 = d["retryDelay"].as_str()?.strip_suffix('s')?.parse().ok()?;
        Duration::try_from_secs_f64(secs).ok()
    })
}

/// `base` joined with `path`, whether or not `base` ends in `/`.
pub(crate) fn endpoint(base: &url::Url, path: &str) -> url::Url {
    let mut url = base.clone();
    let (path, query) = match path.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path, None),
    };
    let joined = format!("{}/{path}", base.path().trim_end_matches('/'));
    url.set_path(&joined);
    if query.is_some() {
        url.set_query(query);
    }
    url
}

/// A URL fit for an error message: no query (where some providers put keys).
fn redacted(url: &url::Url) -> String {
    let mut u = url.clone();
    u.set_query(None);
    u.to_string()
}

/// An error with its causes, which is where reqwest says what actually went wrong.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use reqwest::header::HeaderValue;

    use super::*;

    #[test]
    fn endpoint_joins_with_or_without_slash() {
        for base in ["http://h:1/v1", "http://h:1/v1/"] {
            let u = url::Url::parse(base).expect("url");
            assert_eq!(
                endpoint(&u, "chat/completions").as_str(),
                "http://h:1/v1/chat/completions"
            );
            assert_eq!(
                endpoint(&u, "models/g:streamGenerateContent?alt=sse").as_str(),
                "http://h:1/v1/models/g:streamGenerateContent?alt=sse"
            );
        }
    }

    #[test]
    fn a_retry_delay_in_the_body_is_read() {
        let body = br#"{"error":{"code":429,"message":"Resource exhausted","status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.QuotaFailure"},{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"2.5s"}]}}"#;
        assert_eq!(retry_delay(body), Some(Duration::from_millis(2500)));
        assert_eq!(retry_delay(b"{\"error\":{}}"), None);
        assert_eq!(retry_delay(b"not json"), None);
    }

    #[test]
    fn retry_after_in_seconds_milliseconds_or_a_date() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert("retry-after", HeaderValue::from_static("2"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        h.insert(
            "retry-after",
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&h), Some(Duration::ZERO), "a past date: now");
        h.insert("retry-after", HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h), None);
        h.insert("retry-after-ms", HeaderValue::from_static("250"));
        assert_eq!(retry_after(&h), Some(Duration::from_millis(250)));
        h.insert("retry-after-ms", HeaderValue::from_static("1e30"));
        assert_eq!(
            retry_after(&h),
            None,
            "too large to be a duration: ignored, no panic"
        );
        h.remove("retry-after-ms");
        h.insert(
            "retry-after",
            HeaderValue::from_static("99999999999999999999"),
        );
        assert_eq!(retry_after(&h), None);
    }
}
