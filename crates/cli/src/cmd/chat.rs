//! `smallfirst chat "prompt"`: one answer from the embedded model, streamed to stdout.

use std::io::{IsTerminal, Read, Write};

use std::path::{Path, PathBuf};

use anyhow::Context;
use smallfirst_engine::tools::{CallScanner, Scanned, ToolCall};
use smallfirst_engine::{ChatMessage, Event, GenerateParams, SamplingParams};
use smallfirst_protocol::tools::JsonSchemaFormat;
use smallfirst_protocol::{ChatRequest, ResponseFormat, Tool};

use super::ModelArgs;

#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// The prompt; read from stdin when absent.
    pub prompt: Option<String>,
    #[command(flatten)]
    pub model: ModelArgs,
    /// A system message before the prompt.
    #[arg(long)]
    pub system: Option<String>,
    /// Sampling temperature (default: the model's recommended, see `smallfirst models --json`).
    #[arg(long)]
    pub temperature: Option<f32>,
    #[arg(long)]
    pub max_tokens: Option<u32>,
    #[arg(long)]
    pub seed: Option<u64>,
    /// A JSON Schema file: the answer is JSON that validates against it (strict mode).
    #[arg(long, value_name = "FILE.json")]
    pub schema: Option<PathBuf>,
    /// A JSON file with a list of OpenAI tool objects; calls print as one JSON object a line.
    #[arg(long, value_name = "FILE.json")]
    pub tools: Option<PathBuf>,
}

fn read_json(path: &Path, what: &str) -> anyhow::Result<serde_json::Value> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read {what} file `{}`", path.display()))?;
    serde_json::from_str(&text)
        .with_context(|| format!("{what} file `{}` is not valid JSON", path.display()))
}

/// The request's shape options as the server would take them, so both refuse alike.
fn shape(args: &Args) -> anyhow::Result<ChatRequest> {
    if args.schema.is_some() && args.tools.is_some() {
        anyhow::bail!("--schema and --tools cannot be combined; give one of them");
    }
    let response_format = match &args.schema {
        None => None,
        Some(path) => Some(ResponseFormat::JsonSchema {
            json_schema: JsonSchemaFormat {
                name: "answer".into(),
                description: None,
                schema: Some(read_json(path, "--schema")?),
                strict: Some(true),
            },
        }),
    };
    let tools = match &args.tools {
        None => None,
        Some(path) => Some(
            serde_json::from_value::<Vec<Tool>>(read_json(path, "--tools")?).with_context(|| {
                format!(
                    "--tools file `{}` must hold a list of {{\"type\": \"function\", \"function\": {{...}}}} objects",
                    path.display()
                )
            })?,
        ),
    };
    Ok(ChatRequest {
        response_format,
        tools,
        ..ChatRequest::default()
    })
}

fn print_calls(out: &mut impl Write, calls: &[ToolCall]) -> anyhow::Result<()> {
    for call in calls {
        let arguments: serde_json::Value =
            serde_json::from_str(&call.arguments).unwrap_or(serde_json::Value::Null);
        let line = serde_json::json!({"name": call.name, "arguments": arguments});
        writeln!(out, "{line}").context("cannot write to stdout")?;
    }
    Ok(())
}

pub(crate) fn run(args: Args) -> anyhow::Result<()> {
    if let Some(t) = args.temperature
        && !(0.0..=2.0).contains(&t)
    {
        anyhow::bail!("--temperature must be between 0 and 2, got {t}");
    }
    let shape = shape(&args)?;
    let structure = smallfirst_server::structure(&shape).map_err(|e| anyhow::anyhow!("{e}"))?;
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
    let rendered = engine.render_with_tools(&messages, &structure.tools)?;
    let params = GenerateParams {
        max_tokens: args.max_tokens,
        sampling: SamplingParams {
            temperature: args
                .temperature
                .unwrap_or(engine.info().sampling.temperature.value),
            seed: args.seed,
            ..engine.info().sampling.params()
        },
        constraint: structure.constraint.clone(),
        ..GenerateParams::default()
    };
    let mut scanner = structure.calls.then(CallScanner::new);
    super::runtime()?.block_on(async move {
        let mut generation = engine.generate(rendered, params).await?;
        let mut out = std::io::stdout().lock();
        while let Some(event) = generation.events.recv().await {
            match event {
                Event::Delta(d) => {
                    let scanned = match scanner.as_mut() {
                        None => Some(Scanned::Text(d.text)),
                        Some(s) => s.push(&d.text),
                    };
                    match scanned {
                        Some(Scanned::Text(t)) => out
                            .write_all(t.as_bytes())
                            .context("cannot write to stdout")?,
                        Some(Scanned::Calls(calls)) => print_calls(&mut out, &calls)?,
                        None => {}
                    }
                    out.flush().context("cannot write to stdout")?;
                }
                Event::Done(_) => {
                    if let Some(Scanned::Text(t)) = scanner.as_mut().and_then(CallScanner::finish) {
                        out.write_all(t.as_bytes())
                            .context("cannot write to stdout")?;
                    }
                    if scanner.as_ref().is_some_and(CallScanner::is_calls) {
                        return Ok(());
                    }
                    break;
                }
                Event::Failed(reason) | Event::FormatFailed(reason) => {
                    anyhow::bail!("generation failed: {reason}")
                }
            }
        }
        writeln!(out).context("cannot write to stdout")?;
        Ok(())
    })
}
