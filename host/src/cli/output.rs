//! What `marionette run` shows while a script runs: console lines and live
//! partial text on stderr, every event as a JSON line on stdout with
//! `--events`, and a summary at the end.

use std::io::Write as _;
use std::time::Duration;

use marionette::model::{Event, LogLevel, ToolDefinition};
use marionette::session::EventKind;

/// How the run is shown.
pub struct Display {
    /// Print every event as a JSON line on stdout.
    pub events: bool,
    /// Colours on stderr (a terminal, and `NO_COLOR` unset).
    pub color: bool,
}

/// Counts what a run did, for the summary.
#[derive(Debug, Default)]
pub struct Tally {
    inferences: usize,
    /// Tokens in and out, summed over the inferences that reported usage.
    tokens_in: u64,
    tokens_out: u64,
    tool_calls: usize,
    tool_errors: usize,
    /// Whether partial text is mid-line on stderr.
    streaming: bool,
}

impl Display {
    /// Shows one event as it happens.
    pub fn event(&self, event: &Event, tally: &mut Tally) {
        if self.events {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{}", event.to_json());
        }
        match event {
            Event::Console { level, message } => {
                tally.end_stream();
                match level {
                    LogLevel::Debug | LogLevel::Info => eprintln!("{message}"),
                    LogLevel::Warn => {
                        eprintln!("{}", self.paint("33", &format!("warn: {message}")))
                    }
                    LogLevel::Error => {
                        eprintln!("{}", self.paint("31", &format!("error: {message}")))
                    }
                }
            }
            Event::Session(e) => match &e.kind {
                EventKind::Start => tally.inferences += 1,
                EventKind::Partial { delta, .. } => {
                    let mut err = std::io::stderr().lock();
                    let _ = write!(err, "{delta}");
                    let _ = err.flush();
                    tally.streaming = true;
                }
                EventKind::Final { usage, .. } => {
                    tally.end_stream();
                    if let Some(usage) = usage {
                        tally.add_usage(usage);
                    }
                }
                EventKind::ToolCall { .. } => tally.tool_calls += 1,
                EventKind::ToolResult { tool_result } => {
                    if tool_result.error.is_some() {
                        tally.tool_errors += 1;
                    }
                }
                EventKind::Error { .. } => tally.end_stream(),
            },
            _ => {}
        }
    }

    /// The one-line summary on stderr: inferences, tool calls, tokens, time.
    pub fn summary(&self, tally: &mut Tally, elapsed: Duration) {
        tally.end_stream();
        if tally.inferences == 0 && tally.tool_calls == 0 {
            return;
        }
        let errors = if tally.tool_errors > 0 {
            format!(" ({} failed)", tally.tool_errors)
        } else {
            String::new()
        };
        let tokens = if tally.tokens_in + tally.tokens_out > 0 {
            format!(", {} tokens in, {} out", tally.tokens_in, tally.tokens_out)
        } else {
            String::new()
        };
        let line = format!(
            "{} inference{}, {} tool call{}{errors}{tokens}, {:.2}s",
            tally.inferences,
            plural(tally.inferences),
            tally.tool_calls,
            plural(tally.tool_calls),
            elapsed.as_secs_f64()
        );
        eprintln!("{}", self.paint("2", &line));
    }

    fn paint(&self, code: &str, text: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }
}

impl Tally {
    /// Adds an inference's usage, in OpenAI's or Anthropic's field names.
    fn add_usage(&mut self, usage: &serde_json::Value) {
        let field = |names: &[&str]| names.iter().find_map(|n| usage[*n].as_u64()).unwrap_or(0);
        self.tokens_in += field(&["prompt_tokens", "input_tokens"]);
        self.tokens_out += field(&["completion_tokens", "output_tokens"]);
    }

    /// Ends a line of streamed text, so what follows starts on its own line.
    fn end_stream(&mut self) {
        if self.streaming {
            eprintln!();
            self.streaming = false;
        }
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// Tools of a registry, readably: name, description, then each parameter
/// with its type and whether it is required.
pub fn print_tools(registry: &str, tools: &[ToolDefinition]) {
    println!("{registry}:");
    for tool in tools {
        println!("  {}  {}", tool.name, tool.description);
        let required: Vec<&str> = tool.parameters["required"]
            .as_array()
            .map(|r| r.iter().filter_map(|v| v.as_str()).collect())
            .unwrap_or_default();
        if let Some(properties) = tool.parameters["properties"].as_object() {
            for (name, schema) in properties {
                let kind = schema["type"].as_str().unwrap_or("any");
                let req = if required.contains(&name.as_str()) {
                    ", required"
                } else {
                    ""
                };
                let about = schema["description"]
                    .as_str()
                    .map(|d| format!("  {d}"))
                    .unwrap_or_default();
                println!("      {name}: {kind}{req}{about}");
            }
        }
    }
}
