//! `smallfirst pull NAME|PATH|URL`.

use smallfirst_models::PullOptions;

#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// A catalog name (see `smallfirst models`), a local GGUF path, or an http(s) URL.
    pub spec: String,
    /// Store it under this name.
    #[arg(long)]
    pub name: Option<String>,
    /// Expected sha256, for a path or URL the catalog does not pin.
    #[arg(long)]
    pub sha256: Option<String>,
    /// The most bytes the file may have, where the catalog does not know its size
    /// [default: 64 GiB]; a server's Content-Length bounds it too.
    #[arg(long, value_name = "BYTES")]
    pub max_size: Option<u64>,
    /// Seconds a download may send nothing before it is given up on [default: 60].
    #[arg(long, value_name = "SECONDS")]
    pub idle_timeout: Option<f64>,
    /// Add the file even when its safety scan finds something critical.
    #[arg(long)]
    pub allow_unsafe: bool,
}

pub(crate) fn run(args: Args) -> anyhow::Result<()> {
    let puller = super::puller();
    let idle_timeout = match args.idle_timeout {
        None => None,
        Some(s) => Some(
            std::time::Duration::try_from_secs_f64(s)
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or_else(|| {
                    anyhow::anyhow!("`--idle-timeout {s}` is not a positive number of seconds")
                })?,
        ),
    };
    let options = PullOptions {
        name: args.name,
        sha256: args.sha256,
        max_size: args.max_size,
        allow_unsafe: args.allow_unsafe,
        idle_timeout,
    };
    let pulled = puller.pull(&args.spec, &options)?;
    for f in &pulled.findings {
        eprintln!("warning: {} ({f})", pulled.name);
    }
    let verb = if pulled.fresh { "pulled" } else { "verified" };
    eprintln!(
        "{verb} {} ({:.1} MB, sha256 {}) at {}",
        pulled.name,
        pulled.entry.size as f64 / 1e6,
        pulled.entry.sha256,
        pulled.path.display()
    );
    Ok(())
}
