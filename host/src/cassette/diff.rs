//! Where a replay parts from its cassette, and a readable diff of it.

use serde_json::Value as Json;

use crate::bindings::marionette::runtime::types as wit;

/// The first place where the guest did or asked something other than what
/// the cassette recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Divergence {
    /// The recorded entry (from 0), or in a partial replay the operation's
    /// place among the recorded operations of its kind (from 0).
    pub entry: usize,
    /// The export of that entry (`tasks.resume`, `script.run-main`...), or
    /// in a partial replay the operation's kind.
    pub export: String,
    /// The task the entry or the operation is for.
    pub task: u64,
    /// What differs, in words: `the request for infer (op 3)`, `a console
    /// line`, `the done of task 2`...
    pub what: String,
    /// What was recorded, as indented JSON (`(nothing)` when the replay
    /// produced more than was recorded).
    pub recorded: String,
    /// What the replay produced instead.
    pub asked: String,
    /// The lines that differ, `-` recorded, `+` asked, with some context.
    pub diff: String,
}

impl std::fmt::Display for Divergence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the replay diverged at entry {} ({}, task {}): {} is not what was recorded\n{}",
            self.entry, self.export, self.task, self.what, self.diff
        )
    }
}

/// What an effect is, in words.
pub(crate) fn describe(effect: &wit::Effect) -> String {
    match effect {
        wit::Effect::Request(r) => format!("the request for {} (op {})", op_kind(&r.what), r.op),
        wit::Effect::Release(op) => format!("the release of op {op}"),
        wit::Effect::Event(e) => match &e.event {
            wit::Event::Console(_) => format!("a console line of task {}", e.task),
            wit::Event::Session(json) => {
                let kind = serde_json::from_str::<Json>(json)
                    .ok()
                    .and_then(|v| v.get("type").and_then(Json::as_str).map(str::to_string))
                    .unwrap_or_else(|| "?".into());
                format!("a session event ({kind}) of task {}", e.task)
            }
        },
        wit::Effect::Done(d) => format!("the done of task {}", d.task),
    }
}

/// The kind of a host operation, as docs/protocol.md names it.
pub(crate) fn op_kind(op: &wit::HostOp) -> &'static str {
    match op {
        wit::HostOp::Sleep(_) => "sleep",
        wit::HostOp::Next(_) => "next",
        wit::HostOp::Infer(_) => "infer",
        wit::HostOp::CallTool(_) => "call-tool",
        wit::HostOp::Middleware(_) => "middleware",
        wit::HostOp::Hook(_) => "hook",
        wit::HostOp::Fetch(_) => "fetch",
    }
}

/// Compares the effects an entry returned with those recorded; the first
/// that differs, as (what, recorded, asked, diff).
pub(crate) fn compare(
    recorded: &[wit::Effect],
    asked: &[wit::Effect],
) -> Option<(String, String, String, String)> {
    let n = recorded.len().max(asked.len());
    for i in 0..n {
        let (r, a) = (recorded.get(i), asked.get(i));
        if r == a {
            continue;
        }
        let what = match (r, a) {
            (_, Some(a)) => describe(a),
            (Some(r), None) => {
                format!("the end of the entry's effects (recorded: {})", describe(r))
            }
            (None, None) => unreachable!("i < n"),
        };
        let (r, a) = (pretty(r), pretty(a));
        let diff = diff_lines(&r, &a);
        return Some((what, r, a, diff));
    }
    None
}

/// Indented JSON of a recorded or replayed value, with the JSON that
/// travels inside strings (turn payloads, contexts, events) opened up, so
/// that a diff shows the field that changed.
pub(crate) fn pretty<T: serde::Serialize>(value: Option<&T>) -> String {
    let Some(value) = value else {
        return "(nothing)".into();
    };
    let mut json = serde_json::to_value(value).unwrap_or(Json::Null);
    open_strings(&mut json, 0);
    serde_json::to_string_pretty(&json).unwrap_or_default()
}

fn open_strings(value: &mut Json, depth: usize) {
    if depth > 64 {
        return;
    }
    match value {
        Json::String(s) if s.starts_with('{') || s.starts_with('[') => {
            if let Ok(mut inner) = serde_json::from_str::<Json>(s) {
                open_strings(&mut inner, depth + 1);
                *value = inner;
            }
        }
        Json::Array(items) => items.iter_mut().for_each(|v| open_strings(v, depth + 1)),
        Json::Object(map) => map.values_mut().for_each(|v| open_strings(v, depth + 1)),
        _ => {}
    }
}

/// Lines kept around a change.
const CONTEXT: usize = 3;

/// A diff of two texts by lines: what they share at the start and the end
/// is left out but for [`CONTEXT`] lines; the middle is `-` recorded, `+`
/// asked. Enough for one changed field or block, which is what a replay
/// stops at (a full longest-common-subsequence diff would need a crate
/// for little gain here).
pub(crate) fn diff_lines(recorded: &str, asked: &str) -> String {
    let r: Vec<&str> = recorded.lines().collect();
    let a: Vec<&str> = asked.lines().collect();
    let prefix = r.iter().zip(&a).take_while(|(x, y)| x == y).count();
    let suffix = r[prefix..]
        .iter()
        .rev()
        .zip(a[prefix..].iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    let mut out = Vec::new();
    let from = prefix.saturating_sub(CONTEXT);
    if from > 0 {
        out.push(format!("  ... ({from} lines)"));
    }
    out.extend(r[from..prefix].iter().map(|l| format!("  {l}")));
    out.extend(r[prefix..r.len() - suffix].iter().map(|l| format!("- {l}")));
    out.extend(a[prefix..a.len() - suffix].iter().map(|l| format!("+ {l}")));
    let tail = &r[r.len() - suffix..];
    out.extend(tail.iter().take(CONTEXT).map(|l| format!("  {l}")));
    if tail.len() > CONTEXT {
        out.push(format!("  ... ({} lines)", tail.len() - CONTEXT));
    }
    out.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_diff_shows_the_changed_line_with_context() {
        let r = "a\nb\nc\nd\ne\nf\ng\nh";
        let a = "a\nb\nc\nd\nE\nf\ng\nh";
        let diff = diff_lines(r, a);
        assert_eq!(
            diff,
            "  ... (1 lines)\n  b\n  c\n  d\n- e\n+ E\n  f\n  g\n  h"
        );
    }

    #[test]
    fn strings_holding_json_are_opened() {
        let v = serde_json::json!({"payload": "{\"text\":\"hi\"}"});
        let text = pretty(Some(&v));
        assert!(text.contains("\"text\": \"hi\""), "{text}");
    }
}
