//! [`AppState`]: what every handler shares, the core above all.

use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use smallfirst_engine::Engine;
use smallfirst_router::{Policy, RemoteTier};

use crate::gateway::{EmbeddedTier, Gateway};
use crate::ledger::Book;
use crate::metrics::{Limits, Metrics};
use crate::options::Options;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub(crate) inner: Arc<StateInner>,
}

pub(crate) struct StateInner {
    /// The tiers, the policy, and the path requests take through them.
    pub gateway: Gateway,
    pub created: u64,
    pub metrics: Arc<Metrics>,
    /// Who may call, from where, how fast.
    pub options: Options,
    /// Where every request is recorded, once set.
    pub book: OnceLock<Arc<Book>>,
}

impl AppState {
    /// The embedded engine alone, as tier `local`.
    pub fn new(engine: Engine, model_id: impl Into<String>) -> Self {
        let local = EmbeddedTier {
            engine,
            model_id: model_id.into(),
            name: "local".into(),
            heads: Default::default(),
            verifiers: Default::default(),
            priors: Default::default(),
        };
        let window = local.engine.info().n_ctx;
        let config = smallfirst_router::Config::embedded(&local.model_id);
        AppState::with_tiers(
            Some(local),
            Vec::new(),
            Policy::new(&config, Some(window)),
            Limits::default(),
            Options::default(),
        )
    }

    /// The embedded tier, if one is configured, plus remote tiers, routed by `policy`, the
    /// embedded engine's work bounded by `limits`, requests let in as `options` say.
    pub fn with_tiers(
        embedded: Option<EmbeddedTier>,
        remotes: Vec<RemoteTier>,
        policy: Policy,
        limits: Limits,
        options: Options,
    ) -> Self {
        let created = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let metrics = Metrics::new(limits);
        AppState {
            inner: Arc::new(StateInner {
                gateway: Gateway::new(embedded, remotes, policy, Arc::clone(&metrics)),
                created,
                metrics,
                options,
                book: OnceLock::new(),
            }),
        }
    }

    /// Records every request from now on in `book`'s ledger; a second call changes nothing
    /// and says so.
    pub fn set_book(&self, book: Arc<Book>) -> bool {
        self.inner.book.set(book).is_ok()
    }

    /// The ledger requests are recorded in, when there is one.
    pub fn book(&self) -> Option<&Arc<Book>> {
        self.inner.book.get()
    }

    /// The core, for callers without HTTP (evals, tests).
    pub fn gateway(&self) -> &Gateway {
        &self.inner.gateway
    }
}
