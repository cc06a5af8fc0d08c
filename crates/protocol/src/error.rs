//! The OpenAI error body: `{"error":{"message","type","param","code"}}`.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub message: String,
    /// `invalid_request_error`, `not_found_error`, `server_error`, …
    #[serde(rename = "type")]
    pub kind: String,
    pub param: Option<String>,
    pub code: Option<String>,
}

impl ErrorBody {
    pub fn new(
        message: impl Into<String>,
        kind: impl Into<String>,
        param: Option<String>,
        code: Option<String>,
    ) -> Self {
        ErrorBody {
            error: ErrorDetail {
                message: message.into(),
                kind: kind.into(),
                param,
                code,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_has_all_four_keys() {
        let body = ErrorBody::new("bad", "invalid_request_error", None, Some("x".into()));
        let v = serde_json::to_value(&body).expect("serializes");
        let e = &v["error"];
        assert_eq!(e["message"], "bad");
        assert_eq!(e["type"], "invalid_request_error");
        assert!(e["param"].is_null() && e.as_object().is_some_and(|o| o.contains_key("param")));
        assert_eq!(e["code"], "x");
    }
}
