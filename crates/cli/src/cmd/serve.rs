//! `smallfirst serve`: the OpenAI-compatible API on the embedded model.

use std::net::{IpAddr, SocketAddr};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use smallfirst_heads::Head;
use smallfirst_router::{Config, Policy, RemoteTier, remote};
use smallfirst_server::{AppState, Book, Budgets, EmbeddedTier, Keys, Limits, Options, serve};

use super::ModelArgs;

#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Address to bind [default: the config's, else 127.0.0.1]. Loopback by default: nothing
    /// outside this machine can reach it.
    #[arg(long)]
    pub host: Option<IpAddr>,
    /// Port [default: the config's, else 8080].
    #[arg(long, short = 'p')]
    pub port: Option<u16>,
    /// Local requests that may wait while one generates; past it, 429 with Retry-After
    /// [default: the config's, else 64].
    #[arg(long, value_name = "N")]
    pub max_queue: Option<usize>,
    /// Longest a local request may take, in seconds [default: the config's, else 600].
    #[arg(long, value_name = "SECONDS")]
    pub request_timeout: Option<f64>,
    /// After SIGTERM / Ctrl-C, how long in-flight requests may finish, in seconds
    /// [default: the config's, else 30].
    #[arg(long, value_name = "SECONDS")]
    pub drain_timeout: Option<f64>,
    /// Prefill every prompt in full, keeping nothing from the previous request.
    #[arg(long)]
    pub no_prefix_reuse: bool,
    /// A `smallfirst.toml`; command-line options override what it says.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Listen on a non-loopback address without API keys: anyone who can reach the port may
    /// use the API (and the remote tiers' keys).
    #[arg(long)]
    pub insecure_no_auth: bool,
}

/// The API keys the `[server]` table names, read now.
fn keys(config: &Config) -> anyhow::Result<Keys> {
    let mut keys = Keys::none();
    if let Some(var) = &config.server.api_keys_env {
        keys = Keys::from_env(var)?;
    }
    if let Some(path) = &config.server.api_keys_file {
        keys = keys.merge(Keys::from_file(path)?)?;
    }
    Ok(keys)
}

/// The configuration to serve: the file's, else one local embedded tier.
fn config(args: &Args) -> anyhow::Result<Config> {
    match &args.config {
        None => Ok(Config::embedded(smallfirst_models::DEFAULT_MODEL)),
        Some(path) => Ok(Config::load(path)?),
    }
}

/// The remote tiers, ready to take requests.
pub(crate) fn remotes(config: &Config) -> anyhow::Result<Vec<RemoteTier>> {
    let mut out = Vec::new();
    for tier in &config.tiers {
        if let Some(remote) = remote::build(tier)? {
            out.push(remote);
        }
    }
    Ok(out)
}

pub(crate) fn run(args: Args) -> anyhow::Result<()> {
    let config = config(&args)?;
    let keys = keys(&config)?;
    let remotes = remotes(&config)?;
    let mut model = args.model.clone();
    let embedded = config.embedded_tier();
    let local_tier = embedded.map_or("local".to_string(), |(t, _)| t.name.clone());
    if let Some((_, e)) = embedded {
        model.model = model.model.or_else(|| Some(e.model.to_string()));
        model.threads = model.threads.or(e.threads);
        model.ctx = model.ctx.or(e.ctx);
        model.parallel = model.parallel.or(e.parallel);
    }
    let host = match args.host {
        Some(h) => h,
        None => config.server.host.parse().with_context(|| {
            format!("server.host `{}` is not an IP address", config.server.host)
        })?,
    };
    let port = args.port.unwrap_or(config.server.port);
    if !host.is_loopback() && keys.is_empty() && !args.insecure_no_auth {
        anyhow::bail!(
            "refusing to listen on {host} without API keys: anyone who reaches the port could use \
             the API (hint: set `[server] api_keys_env` or `api_keys_file`, or pass \
             --insecure-no-auth)"
        );
    }
    // A configuration of remote tiers only loads no model, unless one is asked for here.
    let wants_engine = args.config.is_none() || embedded.is_some() || args.model.model.is_some();
    if !wants_engine
        && let Some((task, t)) = config
            .policy
            .tasks
            .iter()
            .find(|(_, t)| t.head.is_some() || t.verifier.is_some())
    {
        let what = if t.head.is_some() { "head" } else { "verifier" };
        anyhow::bail!(
            "tasks.{task}.{what}: a {what} runs on the embedded model, and this configuration has no embedded tier (hint: add a tier with backend = \"embedded\", or drop the {what})"
        );
    }
    let local = if wants_engine {
        let (name, engine) = super::load_engine(&model)?;
        if engine.template().is_fallback() {
            tracing::warn!(model = %name, "the model has no chat template; prompts use ChatML");
        }
        let heads = heads(&config, args.config.as_deref(), &engine)?;
        let verifiers = verifiers(&config, args.config.as_deref(), &engine, None)?;
        Some(EmbeddedTier {
            engine,
            model_id: name,
            name: local_tier,
            heads,
            verifiers,
            priors: Default::default(),
        })
    } else {
        None
    };
    if !host.is_loopback() && keys.is_empty() {
        tracing::warn!(host = %host, "listening on a non-loopback address without API keys (--insecure-no-auth)");
    }
    if !keys.is_empty() {
        tracing::info!(keys = ?keys.names().collect::<Vec<_>>(), "API keys required");
    }
    let options = Options::from_config(&config.server, keys, host.is_loopback());
    let ledger = super::report::open_ledger(&config, args.config.as_deref())?.map(Arc::new);
    let runtime = super::runtime()?;
    let recording = ledger.clone();
    let served = runtime.block_on(async move {
        let addr = SocketAddr::new(host, port);
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        let addr = listener.local_addr().context("no local address")?;
        match &local {
            Some(l) => {
                let info = l.engine.info();
                tracing::info!(
                    tier = %l.name,
                    model = %l.model_id,
                    arch = %info.architecture,
                    n_ctx = info.n_ctx,
                    parallel = info.slots,
                    threads = info.threads,
                    "listening on http://{addr}/v1"
                );
            }
            None => tracing::info!("listening on http://{addr}/v1 (no embedded model)"),
        }
        for t in &remotes {
            tracing::info!(tier = %t.name(), model = %t.model(), fallback = ?t.fallback(), "remote tier");
        }
        let window = local.as_ref().map(|l| l.engine.info().n_ctx);
        let policy = Policy::new(&config, window);
        let limits = Limits {
            max_queue: args.max_queue.unwrap_or(config.server.max_queue),
            slots: local.as_ref().map_or(1, |l| l.engine.info().slots),
            request_timeout: secs(args.request_timeout, config.server.request_timeout)?,
            prefix_reuse: !args.no_prefix_reuse,
        };
        let drain = secs(args.drain_timeout, config.server.drain_timeout)?;
        let model_id = local.as_ref().map(|l| l.model_id.clone());
        let state = AppState::with_tiers(local, remotes, policy, limits, options);
        if let Some(l) = &recording {
            let priced = config
                .tiers
                .iter()
                .filter(|t| t.prices.priced())
                .map(|t| t.name.clone())
                .collect();
            let budgets = Budgets::start(&config.budgets, priced, Arc::clone(l));
            if let Some(b) = &budgets {
                state.gateway().set_budgets(Arc::clone(b));
            }
            let book = Book::new(Arc::clone(l), &config, model_id.as_deref()).with_budgets(budgets);
            state.set_book(Arc::new(book));
        }
        // On a signal the server stops accepting and lets in-flight requests finish; past the
        // drain deadline they are cut (their generations stop at the next token).
        let (signalled, on_signal) = tokio::sync::oneshot::channel::<()>();
        let server = serve(listener, state, async move {
            shutdown_signal().await;
            let _ = signalled.send(());
        });
        tokio::select! {
            result = server => result.context("server failed"),
            () = async move {
                if on_signal.await.is_ok() {
                    tokio::time::sleep(drain).await;
                } else {
                    std::future::pending::<()>().await;
                }
            } => {
                tracing::warn!(drain_s = drain.as_secs_f64(), "drain deadline passed; cutting the requests still in flight");
                Ok(())
            }
        }
    });
    // The runtime's tasks first (a stream cut at the deadline records itself as it is
    // dropped), then the ledger, which commits what is left.
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    if let Some(l) = ledger {
        l.close().context("the ledger did not close cleanly")?;
        tracing::info!(ledger = %l.target(), "ledger closed");
    }
    served
}

/// The files a task names under `key` (`head` or `verifier`), each read and checked against
/// the embedded model's file: one trained on another model, or of the other kind, is refused
/// (the server does not start). `except`'s is skipped.
fn task_files(
    config: &Config,
    file: Option<&Path>,
    engine: &smallfirst_engine::Engine,
    verifier: bool,
    except: Option<&str>,
) -> anyhow::Result<Vec<(String, PathBuf, Head)>> {
    let (key, other) = if verifier {
        ("verifier", "head")
    } else {
        ("head", "verifier")
    };
    let wanted: Vec<_> = config
        .policy
        .tasks
        .iter()
        .filter(|(name, _)| Some(name.as_str()) != except)
        .filter_map(|(name, t)| {
            let path = if verifier { &t.verifier } else { &t.head };
            path.as_ref().map(|p| (name, p))
        })
        .collect();
    if wanted.is_empty() {
        return Ok(Vec::new());
    }
    let model = &engine.info().path;
    let sha = super::train::model_sha256(model)?;
    let binding = super::train::model_binding(&sha, model);
    let mut out = Vec::with_capacity(wanted.len());
    for (task, path) in wanted {
        let path = super::train::beside(file, path);
        let head = Head::load(&path)?;
        if head.is_verifier() != verifier {
            let what = if verifier {
                "a classification head, not a verifier"
            } else {
                "a verifier, not a classification head"
            };
            anyhow::bail!(
                "tasks.{task}.{key}: {} is {what} (hint: name it as `{other} = …`)",
                path.display()
            );
        }
        head.check_model(task, &sha, &binding.file)?;
        out.push((task.clone(), path, head));
    }
    Ok(out)
}

/// The configured tasks' heads ([`task_files`]), each also checked against its task's labels.
pub(crate) fn heads(
    config: &Config,
    file: Option<&Path>,
    engine: &smallfirst_engine::Engine,
) -> anyhow::Result<BTreeMap<String, Arc<Head>>> {
    let mut out = BTreeMap::new();
    for (task, path, head) in task_files(config, file, engine, false, None)? {
        let same = |a: &[String], b: &[String]| {
            a.iter().collect::<std::collections::BTreeSet<_>>()
                == b.iter().collect::<std::collections::BTreeSet<_>>()
        };
        if let Some(labels) = config
            .policy
            .tasks
            .get(&task)
            .and_then(|t| t.labels.as_ref())
            && !same(labels, &head.labels)
        {
            anyhow::bail!(
                "tasks.{task}: the head {} has labels other than the task's `labels` (hint: retrain it, or drop `labels` and let the head's stand)",
                path.display()
            );
        }
        tracing::info!(task = %task, head = %path.display(), labels = head.labels.len(), accuracy = head.trained.holdout_accuracy, "task head");
        out.insert(task, Arc::new(head));
    }
    Ok(out)
}

/// The configured tasks' verifiers ([`task_files`]), but `except`'s when one is being trained.
pub(crate) fn verifiers(
    config: &Config,
    file: Option<&Path>,
    engine: &smallfirst_engine::Engine,
    except: Option<&str>,
) -> anyhow::Result<BTreeMap<String, Arc<Head>>> {
    let mut out = BTreeMap::new();
    for (task, path, verifier) in task_files(config, file, engine, true, except)? {
        tracing::info!(task = %task, verifier = %path.display(), accuracy = verifier.trained.holdout_accuracy, "task verifier");
        out.insert(task, Arc::new(verifier));
    }
    Ok(out)
}

/// A command-line number of seconds, else the configuration's.
fn secs(arg: Option<f64>, config: std::time::Duration) -> anyhow::Result<std::time::Duration> {
    match arg {
        None => Ok(config),
        Some(s) => std::time::Duration::try_from_secs_f64(s)
            .ok()
            .filter(|d| !d.is_zero())
            .ok_or_else(|| anyhow::anyhow!("`{s}` is not a positive number of seconds")),
    }
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down");
}
