//! The `marionette` command: run a script's `main`, or describe its exports.
//!
//! Exit codes: 0 success; 1 the script threw or rejected; 2 usage (bad
//! flags, unreadable script, input that is not JSON, a cassette refused);
//! 3 a limit, timeout or trap stopped the script; 4 the host failed; 5 a
//! replay diverged from its cassette.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

mod config;
mod modules;
mod output;
mod replay;
mod terminal;

use clap::{Parser, Subcommand};
use marionette::model::{ExportInfo, ExportKind};
use marionette::policy::{NetAllow, NetPolicy};
use marionette::{Error, HostServices, Policy, Runtime, Sandbox, SandboxOptions, TaskOptions};
use tracing_subscriber::EnvFilter;

/// Sandboxed JavaScript for LLM applications.
#[derive(Parser)]
#[command(name = "marionette", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a script's default export `main(input)` and print its result as
    /// JSON on the last line of stdout (console output goes to stderr).
    Run {
        /// The script (an ES module, JavaScript or TypeScript).
        script: PathBuf,
        #[command(flatten)]
        root: Root,
        /// The input handed to `main`, as JSON.
        #[arg(long, default_value = "{}", value_parser = parse_json)]
        input: serde_json::Value,
        /// Give up after this many milliseconds of wall-clock time.
        #[arg(long, value_name = "N")]
        timeout_ms: Option<u64>,
        /// Print every event (console lines, session events) as a JSON line
        /// on stdout, before the result.
        #[arg(long)]
        events: bool,
        /// Record the run into a cassette (JSON lines, docs/cassette.md),
        /// for `marionette replay`. The run is deterministic: its clock and
        /// randomness are seeded (the seed is in the cassette).
        #[arg(long, value_name = "FILE")]
        record: Option<PathBuf>,
        #[command(flatten)]
        engine: EngineArgs,
        #[command(flatten)]
        limits: Limits,
    },
    /// Run a recorded cassette again, offline: the guest gets the recorded
    /// answers, and must ask for what it asked then. Prints what the run
    /// printed; stops at the first divergence with a diff (exit 5).
    Replay {
        /// The cassette (`marionette run --record FILE`).
        cassette: PathBuf,
        /// The script to replay instead of the recorded one (default: the
        /// recorded script's file as it is now, when it exists).
        #[arg(long, value_name = "PATH")]
        script: Option<PathBuf>,
        /// Replay only these operations from the cassette (comma-separated
        /// kinds: infer, call-tool, middleware, hook, sleep) and perform the
        /// rest for real; the models' answers alone by default.
        #[arg(long, value_name = "KINDS", num_args = 0..=1, default_missing_value = "infer", value_delimiter = ',')]
        partial: Option<Vec<String>>,
        /// Record the cassette again: run the recorded script and input live
        /// (with the engine flags, the environment, the config file) and
        /// write the new recording over FILE.
        #[arg(long)]
        re_record: bool,
        /// Print every event as a JSON line on stdout, as `run --events`.
        #[arg(long)]
        events: bool,
        #[command(flatten)]
        engine: EngineArgs,
    },
    /// List the tools of the script's tool registries, with their parameters.
    Tools {
        /// The script (an ES module, JavaScript or TypeScript).
        script: PathBuf,
        #[command(flatten)]
        root: Root,
        #[command(flatten)]
        limits: Limits,
    },
    /// Print the script's exports as JSON: the name and kind of each, and
    /// for tool registries each tool's name, description and schema.
    Check {
        /// The script (an ES module, JavaScript or TypeScript).
        script: PathBuf,
        #[command(flatten)]
        root: Root,
        #[command(flatten)]
        limits: Limits,
    },
}

/// Where the script's modules come from.
#[derive(clap::Args, Default)]
pub(crate) struct Root {
    /// The folder whose module files (.js .mjs .ts .mts .json; not in
    /// node_modules or dot-folders) the script may import by relative
    /// paths; default: the script's folder. Nothing outside it is read,
    /// and no symlink under it.
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
}

/// Which engine `engines.host()` is (precedence: these flags, then the
/// environment, then the config file).
#[derive(clap::Args)]
struct EngineArgs {
    /// The default engine: openai, anthropic, echo, or a profile of the
    /// config file. The key comes from the provider's usual variable
    /// (OPENAI_API_KEY, ANTHROPIC_API_KEY) or the profile's api_key_env.
    #[arg(long, value_name = "NAME")]
    engine: Option<String>,
    /// The model the engine asks for.
    #[arg(long)]
    model: Option<String>,
    /// The provider's base URL (an OpenAI-compatible server, a proxy).
    #[arg(long, value_name = "URL")]
    base_url: Option<String>,
    /// The config file (default: $MARIONETTE_CONFIG, else
    /// ~/.config/marionette/config.toml when it exists).
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Seconds one provider request may take, streaming included (every
    /// provider engine; default 300, or the profile's timeout_secs).
    #[arg(long, value_name = "SECS", value_parser = parse_seconds)]
    request_timeout_secs: Option<f64>,
    /// Seconds a provider's stream may go without an event (keep-alive
    /// comments do not count; default 120, or the profile's
    /// idle_timeout_secs).
    #[arg(long, value_name = "SECS", value_parser = parse_seconds)]
    idle_timeout_secs: Option<f64>,
    /// Retries of a provider request that failed before its answer began
    /// (HTTP 408, 409, 429, 5xx, connection failures; default 2, or the
    /// profile's max_retries; 0 turns retrying off).
    #[arg(long, value_name = "N")]
    max_retries: Option<u32>,
}

impl EngineArgs {
    /// The resolved engines, or a usage error already printed.
    fn resolve(&self) -> Result<config::Resolved, ExitCode> {
        let env = config::ProcessEnv;
        let path = self
            .config
            .clone()
            .or_else(|| config::ConfigFile::default_path(&env));
        let file = match path {
            Some(path) => config::ConfigFile::load(&path).map_err(|e| {
                eprintln!("marionette: {e:#}");
                ExitCode::from(2)
            })?,
            None => config::ConfigFile::default(),
        };
        let flags = config::EngineFlags {
            engine: self.engine.clone(),
            model: self.model.clone(),
            base_url: self.base_url.clone(),
            network: config::Network {
                timeout_secs: self.request_timeout_secs,
                idle_timeout_secs: self.idle_timeout_secs,
                max_retries: self.max_retries,
                max_retry_wait_secs: None,
            },
        };
        config::resolve(&flags, &env, &file).map_err(|e| {
            eprintln!("marionette: {e:#}");
            ExitCode::from(2)
        })
    }
}

/// Limits of the sandbox the script runs in.
#[derive(clap::Args)]
struct Limits {
    /// Guest memory limit in MiB.
    #[arg(long, value_name = "MIB", default_value_t = Policy::default().memory_limit >> 20)]
    memory_mib: u64,
    /// CPU time one run of the script may take before it waits for the host.
    #[arg(long, value_name = "N", default_value_t = Policy::default().entry_deadline.as_millis() as u64)]
    cpu_ms: u64,
    /// Let the script's fetch reach this origin: HOST (ports 80 and 443),
    /// HOST:PORT, or SCHEME://HOST[:PORT]; repeatable. Without it, fetch
    /// is refused. An IP address given here may be private (127.0.0.1:8080).
    #[arg(long, value_name = "HOST[:PORT]")]
    allow_net: Vec<NetAllow>,
    /// Let allowed names resolve to private, loopback or link-local
    /// addresses (off: such a fetch is refused after DNS, the SSRF rule).
    #[arg(long)]
    allow_private_net: bool,
    /// The only methods fetch may use (repeatable; default: GET, HEAD,
    /// POST, PUT, PATCH, DELETE, OPTIONS).
    #[arg(long, value_name = "METHOD")]
    allow_method: Vec<String>,
}

impl Limits {
    fn policy(&self) -> Policy {
        let mut net = NetPolicy {
            allow: self.allow_net.clone(),
            allow_private: self.allow_private_net,
            ..NetPolicy::default()
        };
        if !self.allow_method.is_empty() {
            net.methods = self.allow_method.clone();
        }
        Policy {
            memory_limit: self.memory_mib << 20,
            entry_deadline: Duration::from_millis(self.cpu_ms),
            net,
            ..Policy::default()
        }
    }
}

fn parse_seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v < 1e9 => Ok(v),
        _ => Err(format!("not a positive number of seconds: {s:?}")),
    }
}

fn parse_json(s: &str) -> Result<serde_json::Value, String> {
    serde_json::from_str(s).map_err(|e| format!("not valid JSON: {e}"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    use std::io::IsTerminal as _;
    let color = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    // The command reports failures itself; the log adds host problems only.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(color)
        .with_env_filter(
            // Console lines are printed by the command itself, as they come.
            EnvFilter::try_from_env("MARIONETTE_LOG")
                .unwrap_or_else(|_| EnvFilter::new("error"))
                .add_directive(
                    "marionette::console=off"
                        .parse()
                        .expect("a valid directive"),
                ),
        )
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("marionette: cannot start the async runtime: {e}");
            return ExitCode::from(4);
        }
    };
    runtime.block_on(async {
        match cli.command {
            Command::Run {
                script,
                root,
                input,
                timeout_ms,
                events,
                record,
                engine,
                limits,
            } => {
                let display = output::Display { events, color };
                let resolved = match engine.resolve() {
                    Ok(resolved) => resolved,
                    Err(code) => return code,
                };
                let live = Live {
                    script,
                    root,
                    input,
                    timeout_ms,
                    policy: limits.policy(),
                    record,
                };
                run(live, display, resolved).await
            }
            Command::Replay {
                cassette,
                script,
                partial,
                re_record,
                events,
                engine,
            } => {
                let display = output::Display { events, color };
                let how = replay::How {
                    script,
                    partial,
                    re_record,
                };
                replay::command(cassette, how, engine, display).await
            }
            Command::Check {
                script,
                root,
                limits,
            } => check(script, root, limits).await,
            Command::Tools {
                script,
                root,
                limits,
            } => tools(script, root, limits).await,
        }
    })
}

/// Reads a script and loads it into a new sandbox with no host services.
async fn open(
    script: &Path,
    root: &Root,
    limits: &Limits,
) -> Result<(Sandbox, String, Vec<ExportInfo>), ExitCode> {
    open_with(
        script,
        root,
        limits.policy(),
        HostServices::default(),
        SandboxOptions::default(),
    )
    .await
}

/// Reads a script and the module files it may import (see `modules`) and
/// loads them into a new sandbox offering `services`. The script's name
/// is its path under the root.
async fn open_with(
    script: &Path,
    root: &Root,
    policy: Policy,
    services: HostServices,
    options: SandboxOptions,
) -> Result<(Sandbox, String, Vec<ExportInfo>), ExitCode> {
    let modules::Collected { entry, modules } = modules::collect(script, root.root.as_deref())
        .map_err(|e| {
            eprintln!("marionette: {e}");
            ExitCode::from(2)
        })?;
    let runtime = tokio::task::spawn_blocking(Runtime::shared)
        .await
        .map_err(|e| report(&Error::host("runtime", e)))?
        .map_err(|e| report(&Error::host("runtime", e)))?;
    let sandbox = Sandbox::with_options(runtime, policy, services, options)
        .await
        .map_err(|e| report(&e))?;
    let exports = sandbox
        .load_modules(entry.clone(), modules)
        .await
        .map_err(|e| report(&e))?;
    Ok((sandbox, entry, exports))
}

/// A live run of `marionette run` (or of `replay --re-record`).
struct Live {
    script: PathBuf,
    root: Root,
    input: serde_json::Value,
    timeout_ms: Option<u64>,
    policy: Policy,
    /// Where to write the cassette, when the run is recorded.
    record: Option<PathBuf>,
}

async fn run(live: Live, display: output::Display, engines: config::Resolved) -> ExitCode {
    let Live {
        script,
        root,
        input,
        timeout_ms,
        policy,
        record,
    } = live;
    let services = match engines.services() {
        Ok(services) => services,
        Err(e) => return report(&e),
    };
    let recorder = record.as_ref().map(|_| {
        let recorder = marionette::cassette::Recorder::new();
        recorder.note(serde_json::json!({"command": "marionette run", "script": script.display().to_string()}));
        recorder
    });
    let options = match &recorder {
        Some(recorder) => SandboxOptions::record(recorder.clone()),
        None => SandboxOptions::default(),
    };
    let (sandbox, name, _) = match open_with(&script, &root, policy, services, options).await {
        Ok(opened) => opened,
        Err(code) => return code,
    };
    if engines.built_in_default {
        eprintln!(
            "marionette: no engine configured; engines.host() is the built-in echo engine (it answers \"READY\"; see --engine)"
        );
    }
    let started = std::time::Instant::now();
    let (events, mut received) = tokio::sync::mpsc::unbounded_channel();
    let tally = output::Tally::default();
    end_line_on_interrupt(tally.mid_line());
    let printer = tokio::spawn(async move {
        let mut tally = tally;
        while let Some(event) = received.recv().await {
            display.event(&event, &mut tally);
        }
        (display, tally)
    });
    let options = TaskOptions {
        timeout: timeout_ms.map(Duration::from_millis),
        events: Some(events),
        ..TaskOptions::default()
    };
    let result = sandbox.run_main(&name, &input, options).await;
    // Every event is shown before the result.
    if let Ok((display, mut tally)) = printer.await {
        display.summary(&mut tally, started.elapsed());
    }
    sandbox.shutdown().await;
    if let (Some(path), Some(recorder)) = (&record, &recorder) {
        let cassette = recorder.finish();
        match cassette.save(path) {
            Ok(()) => eprintln!(
                "marionette: recorded {} entries into {} (replay: marionette replay {})",
                cassette.len(),
                path.display(),
                path.display()
            ),
            Err(e) => {
                eprintln!("marionette: {}: {e}", path.display());
                return ExitCode::from(4);
            }
        }
    }
    finish(result)
}

/// Prints a run's result as the last line of stdout, or its error.
fn finish(result: marionette::Result<serde_json::Value>) -> ExitCode {
    match result {
        Ok(value) => {
            println!("{}", terminal::json_line(&value.to_string()));
            ExitCode::SUCCESS
        }
        Err(e) => report(&e),
    }
}

async fn check(script: PathBuf, root: Root, limits: Limits) -> ExitCode {
    let (sandbox, _, exports) = match open(&script, &root, &limits).await {
        Ok(opened) => opened,
        Err(code) => return code,
    };
    sandbox.shutdown().await;
    match serde_json::to_string_pretty(&exports) {
        Ok(json) => {
            println!("{json}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("marionette: {e}");
            ExitCode::from(4)
        }
    }
}

async fn tools(script: PathBuf, root: Root, limits: Limits) -> ExitCode {
    let (sandbox, name, exports) = match open(&script, &root, &limits).await {
        Ok(opened) => opened,
        Err(code) => return code,
    };
    sandbox.shutdown().await;
    let registries: Vec<_> = exports
        .iter()
        .filter(|e| e.kind == ExportKind::ToolRegistry)
        .collect();
    if registries.is_empty() {
        eprintln!("marionette: {name} exports no tool registry");
        return ExitCode::from(1);
    }
    for registry in registries {
        output::print_tools(&registry.name, &registry.tools);
    }
    ExitCode::SUCCESS
}

/// On Ctrl-C, ends the line of a stream that was interrupted mid-line
/// (the shell's prompt then starts on its own line) and exits 130, as an
/// interrupted command does.
fn end_line_on_interrupt(mid_line: Arc<AtomicBool>) {
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            if mid_line.load(Ordering::SeqCst) {
                eprintln!();
            }
            std::process::exit(130);
        }
    });
}

/// Prints an error the way a person reads it; returns the exit code. What
/// the script or a provider wrote is cleaned for the terminal.
fn report(error: &Error) -> ExitCode {
    match error {
        Error::Script { error, .. } => {
            eprintln!("{}", terminal::clean(&error.to_string()));
            if let Some(stack) = error.stack.as_deref().filter(|s| !s.trim().is_empty()) {
                eprintln!("{}", terminal::clean(stack.trim_end()));
            }
            ExitCode::from(1)
        }
        Error::Timeout { after, .. } => {
            eprintln!(
                "marionette: timeout: the script did not finish within {}ms (--timeout-ms)",
                after.as_millis()
            );
            ExitCode::from(3)
        }
        Error::Limit { limit, detail, .. } => {
            eprintln!(
                "marionette: limit exceeded: {limit}: {}",
                terminal::clean(detail)
            );
            ExitCode::from(3)
        }
        Error::Trapped { message, .. } => {
            eprintln!("marionette: the script was stopped: {message}");
            ExitCode::from(3)
        }
        other => {
            eprintln!("marionette: {}", terminal::clean(&other.to_string()));
            ExitCode::from(4)
        }
    }
}
