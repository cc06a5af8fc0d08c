//! `smallfirst chat "prompt"`: one answer from the embedded model, streamed to stdout.

use std::io::{IsTerminal, Read, Write};

use anyhow::Context;
use smallfirst_engine::{ChatMessage, Event, GenerateParams, SamplingParams};

use super::ModelArgs;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The prompt; read from stdin when absent.
    pub prompt: Option<String>,
    #[command(flatten)]
    pub model: ModelArgs,
    /// A system message before the prompt.
    #[arg(long)]
    pub system: Option<String>,
    #[arg(long, default_value_t = 0.7)]
    pub temperature: f32,
    #[arg(long)]
    pub max_tokens: Option<u32>,
    #[arg(long)]
    pub seed: Option<u64>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if !(0.0..=2.0).contains(&args.temperature) {
        anyhow::bail!(
            "--temperature must be between 0 and 2, got {}",
            args.temperature
        );
    }
    let prompt = match args.prompt {
        Some(p) => p,
        None => {
            if std::io::stdin().is_terminal() {
                eprintln!("(reading the prompt from stdin; end it with Ctrl-D)");
            }
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("cannot read the prompt from stdin")?;
            s
        }
    };
    if prompt.trim().is_empty() {
        anyhow::bail!("the prompt is empty; pass it as an argument or on stdin");
    }
    let (_, engine) = super::load_engine(&args.model)?;
    let mut messages = Vec::new();
    if let Some(system) = args.system {
        messages.push(ChatMessage::new("system", system));
    }
    messages.push(ChatMessage::new("user", prompt));
    let rendered = engine.render(&messages)?;
    let params = GenerateParams {
        max_tokens: args.max_tokens,
        sampling: SamplingParams {
            temperature: args.temperature,
            seed: args.seed,
            ..SamplingParams::default()
        },
        ..GenerateParams::default()
    };
    super::runtime()?.block_on(async move {
        let mut generation = engine.generate(rendered, params).await?;
        let mut out = std::io::stdout().lock();
        while let Some(event) = generation.events.recv().await {
            match event {
                Event::Delta(d) => {
                    out.write_all(d.text.as_bytes())
                        .context("cannot write to stdout")?;
                    out.flush().context("cannot write to stdout")?;
                }
                Event::Done(_) => break,
                Event::Failed(reason) => anyhow::bail!("generation failed: {reason}"),
            }
        }
        writeln!(out).context("cannot write to stdout")?;
        Ok(())
    })
}
