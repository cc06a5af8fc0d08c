//! `GET /v1/models`.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelList {
    pub object: String,
    pub data: Vec<ModelObject>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelObject {
    pub id: String,
    pub object: String,
    pub created: u64,
    pub owned_by: String,
}

impl ModelObject {
    pub fn new(id: impl Into<String>, created: u64) -> Self {
        ModelObject {
            id: id.into(),
            object: "model".into(),
            created,
            owned_by: "smallfirst".into(),
        }
    }
}

impl ModelList {
    pub fn new(data: Vec<ModelObject>) -> Self {
        ModelList {
            object: "list".into(),
            data,
        }
    }
}
