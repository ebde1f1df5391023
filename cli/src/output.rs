//! What `marionette run` shows while a script runs: console lines and live
//! partial text on stderr, every event as a JSON line on stdout with
//! `--events`, and a summary at the end.
//!
//! Model text and console lines are untrusted: on stderr they pass through
//! [`terminal`](crate::terminal) first, so only printable text, newlines
//! and tabs reach a person's terminal. Streamed text of one session is one
//! line of its own; once a second session streams, every line of streamed
//! text starts with the label of its session.

use std::collections::HashMap;
use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use marionette::model::{Event, LogLevel, ToolDefinition};
use marionette::session::EventKind;

use crate::terminal::{self, Sanitizer};

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
    /// The streams of partial text.
    streams: Streams,
}

/// The sessions whose text streams to stderr.
#[derive(Default)]
struct Streams {
    /// Each session that streamed: its label number and its sanitizer.
    sessions: HashMap<String, (usize, Sanitizer)>,
    /// The session whose text is mid-line on stderr.
    open: Option<String>,
    /// Whether a line is open, shared with the Ctrl-C handler so that an
    /// interrupted stream's line is ended too.
    mid_line: Arc<AtomicBool>,
}

impl std::fmt::Debug for Streams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Streams")
            .field("sessions", &self.sessions.len())
            .field("open", &self.open)
            .finish()
    }
}

impl Display {
    /// Shows one event as it happens.
    pub fn event(&self, event: &Event, tally: &mut Tally) {
        if self.events {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{}", terminal::json_line(&event.to_json().to_string()));
        }
        match event {
            Event::Console { level, message } => {
                tally.end_stream();
                let message = terminal::clean(message);
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
                EventKind::Start => {
                    // A new inference starts its own line, even when the
                    // one before was cancelled mid-stream.
                    tally.end_stream();
                    tally.inferences += 1;
                }
                EventKind::Partial { delta, .. } => {
                    let text = tally.streams.text(&e.session_id, delta, self);
                    let mut err = std::io::stderr().lock();
                    let _ = write!(err, "{text}");
                    let _ = err.flush();
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
        if self.streams.open.take().is_some() {
            self.streams.mid_line.store(false, Ordering::SeqCst);
            eprintln!();
        }
    }

    /// A flag that is set while streamed text is mid-line on stderr.
    pub fn mid_line(&self) -> Arc<AtomicBool> {
        self.streams.mid_line.clone()
    }
}

impl Streams {
    /// What to write for `delta` of `session`: the text cleaned, the open
    /// line of another session ended first, and each new line labelled once
    /// more than one session has streamed.
    fn text(&mut self, session: &str, delta: &str, display: &Display) -> String {
        let count = self.sessions.len();
        let (number, sanitizer) = self
            .sessions
            .entry(session.to_string())
            .or_insert_with(|| (count + 1, Sanitizer::default()));
        let clean = sanitizer.clean(delta);
        let number = *number;
        let labelled = self.sessions.len() > 1;
        let mut out = String::new();
        if clean.is_empty() {
            return out;
        }
        if self.open.as_deref().is_some_and(|open| open != session) {
            out.push('\n');
            self.open = None;
        }
        let label = display.paint("2", &format!("[session {number}] "));
        for (i, piece) in clean.split('\n').enumerate() {
            if i > 0 {
                out.push('\n');
                self.open = None;
            }
            if piece.is_empty() {
                continue;
            }
            if self.open.is_none() {
                if labelled {
                    out.push_str(&label);
                }
                self.open = Some(session.to_string());
            }
            out.push_str(piece);
        }
        self.mid_line.store(self.open.is_some(), Ordering::SeqCst);
        out
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_session_streams_its_own_lines_labelled_once_two_have_streamed() {
        let display = Display {
            events: false,
            color: false,
        };
        let mut streams = Streams::default();
        let out: String = [
            ("a", "one "),
            ("a", "line\x1b]0;"),
            ("b", "two\nlines"),
            ("a", "title\x07 more\n"),
            ("a", "again"),
        ]
        .iter()
        .map(|(session, delta)| streams.text(session, delta, &display))
        .collect();
        assert_eq!(
            out,
            "one line\n[session 2] two\n[session 2] lines\n[session 1]  more\n[session 1] again"
        );
        assert!(streams.mid_line.load(Ordering::SeqCst));
    }
}
