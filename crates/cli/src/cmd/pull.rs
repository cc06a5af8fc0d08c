//! `smallfirst pull NAME|PATH|URL`.

use smallfirst_models::PullOptions;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A catalog name (see `smallfirst models`), a local GGUF path, or an http(s) URL.
    pub spec: String,
    /// Store it under this name.
    #[arg(long)]
    pub name: Option<String>,
    /// Expected sha256, for a path or URL the catalog does not pin.
    #[arg(long)]
    pub sha256: Option<String>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let puller = super::puller();
    let options = PullOptions {
        name: args.name,
        sha256: args.sha256,
    };
    let pulled = puller.pull(&args.spec, &options)?;
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
