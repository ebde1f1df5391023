//! What a run reports while it goes: the event types and the emitter that
//! fans them out to the run's sinks.

use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::unix_ms;

/// Where a run's events go. Unbounded so an event is never dropped and
/// emitting never waits; a receiver that was dropped is skipped silently,
/// so a listener that went away never breaks the run.
pub type EventSink = tokio::sync::mpsc::UnboundedSender<SessionEvent>;

/// One event of a run, in the shape JavaScript sees it:
/// `{type, timestampMs, sessionId, inferenceId, turnId, ...}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionEvent {
    /// When it happened, in milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// The session that runs.
    pub session_id: String,
    /// The inference (one engine call of the loop) it belongs to; empty for
    /// an `error` raised before the first inference started.
    pub inference_id: String,
    /// The id of the turn the inference works on.
    pub turn_id: String,
    /// What happened, with its own fields (flattened beside the ids).
    #[serde(flatten)]
    pub kind: EventKind,
}

/// What an event reports; its serde tag is the JavaScript event `type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "kebab-case",
    rename_all_fields = "camelCase"
)]
pub enum EventKind {
    /// An inference starts (one per engine call of the loop).
    Start,
    /// A streaming engine produced more text.
    Partial {
        /// The new text.
        delta: String,
        /// All the text of this inference so far.
        completion: String,
    },
    /// An inference ended; every inference that returns emits one.
    Final {
        /// The text of the `llm_text` blocks the inference appended, joined
        /// with newlines (empty when it appended none).
        text: String,
        /// The inference's token usage, as the provider reported it, when
        /// the engine reported any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        usage: Option<Value>,
    },
    /// A tool call is about to be executed.
    ToolCall {
        /// The call, as the model made it.
        tool_call: EventToolCall,
    },
    /// A tool call finished (in completion order when calls run in
    /// parallel; the `tool_use` blocks themselves are in call order).
    ToolResult {
        /// Its result.
        tool_result: EventToolResult,
    },
    /// The run failed.
    Error {
        /// Why, in words.
        error: String,
    },
}

impl EventKind {
    /// The JavaScript `type` of the event (`start`, `tool-call`, ...), for
    /// filtering listeners.
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::Start => "start",
            EventKind::Partial { .. } => "partial",
            EventKind::Final { .. } => "final",
            EventKind::ToolCall { .. } => "tool-call",
            EventKind::ToolResult { .. } => "tool-result",
            EventKind::Error { .. } => "error",
        }
    }
}

/// A tool call as a `tool-call` event carries it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventToolCall {
    /// The call's id.
    pub id: String,
    /// The tool's name.
    pub name: String,
    /// Its arguments, as JSON (not JSON text).
    pub input: Value,
}

/// A tool result as a `tool-result` event carries it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventToolResult {
    /// The call's id.
    pub id: String,
    /// What the tool returned (`null` when it failed).
    pub result: Value,
    /// Why it failed, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Sends a run's events to its sinks, stamped with the session, inference
/// and turn ids.
///
/// Cheap to clone; engines get one scoped to their inference in
/// [`InferenceContext::events`](super::InferenceContext::events) and emit
/// `partial` events through [`partial`](Self::partial). The default emitter
/// has no sink and drops everything, for contexts built outside a run.
#[derive(Clone, Default)]
pub struct EventEmitter {
    sinks: Arc<[EventSink]>,
    session_id: Arc<str>,
    inference_id: Arc<str>,
    turn_id: Arc<str>,
    /// The ids of the latest inference of the run, shared by every clone, so
    /// an `error` raised outside any inference still names where it was.
    latest: Arc<Mutex<(Arc<str>, Arc<str>)>>,
}

impl std::fmt::Debug for EventEmitter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventEmitter")
            .field("sinks", &self.sinks.len())
            .field("session_id", &self.session_id)
            .field("inference_id", &self.inference_id)
            .field("turn_id", &self.turn_id)
            .finish()
    }
}

impl EventEmitter {
    /// An emitter for a run of session `session_id` that sends to `sinks`.
    pub fn new(session_id: impl Into<String>, sinks: Vec<EventSink>) -> Self {
        EventEmitter {
            sinks: sinks.into(),
            session_id: Arc::from(session_id.into()),
            ..EventEmitter::default()
        }
    }

    /// The same sinks, scoped to one inference on one turn. Also records
    /// these ids as the run's latest, for a later [`error`](Self::error).
    pub fn for_inference(&self, inference_id: &str, turn_id: &str) -> Self {
        let (inference_id, turn_id): (Arc<str>, Arc<str>) = (inference_id.into(), turn_id.into());
        if let Ok(mut latest) = self.latest.lock() {
            *latest = (inference_id.clone(), turn_id.clone());
        }
        EventEmitter {
            inference_id,
            turn_id,
            ..self.clone()
        }
    }

    /// Whether anyone listens (an engine may skip building deltas if not).
    pub fn has_sinks(&self) -> bool {
        self.sinks.iter().any(|s| !s.is_closed())
    }

    /// Sends an event of this emitter's inference to every sink.
    pub fn emit(&self, kind: EventKind) {
        self.send(&self.inference_id, &self.turn_id, kind);
    }

    /// Sends a `partial` event: a streaming engine produced `delta`, and
    /// `completion` is all its text so far.
    pub fn partial(&self, delta: impl Into<String>, completion: impl Into<String>) {
        self.emit(EventKind::Partial {
            delta: delta.into(),
            completion: completion.into(),
        });
    }

    /// Sends an `error` event, stamped with the run's latest inference.
    pub fn error(&self, error: impl Into<String>) {
        let (inference_id, turn_id) = match self.latest.lock() {
            Ok(latest) => latest.clone(),
            Err(_) => (self.inference_id.clone(), self.turn_id.clone()),
        };
        self.send(
            &inference_id,
            &turn_id,
            EventKind::Error {
                error: error.into(),
            },
        );
    }

    /// Sends an event made elsewhere (by the guest's session loop) as it is,
    /// and records its inference as the run's latest, for a later
    /// [`error`](Self::error).
    pub(crate) fn forward(&self, event: SessionEvent) {
        if let Ok(mut latest) = self.latest.lock() {
            *latest = (
                Arc::from(event.inference_id.as_str()),
                Arc::from(event.turn_id.as_str()),
            );
        }
        for sink in self.sinks.iter() {
            // A receiver that was dropped just stopped listening.
            let _ = sink.send(event.clone());
        }
    }

    fn send(&self, inference_id: &str, turn_id: &str, kind: EventKind) {
        if self.sinks.is_empty() {
            return;
        }
        let event = SessionEvent {
            timestamp_ms: unix_ms(),
            session_id: self.session_id.to_string(),
            inference_id: inference_id.to_string(),
            turn_id: turn_id.to_string(),
            kind,
        };
        for sink in self.sinks.iter() {
            // A receiver that was dropped just stopped listening.
            let _ = sink.send(event.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn events_have_the_javascript_shape() {
        let event = SessionEvent {
            timestamp_ms: 7,
            session_id: "s".into(),
            inference_id: "i".into(),
            turn_id: "t".into(),
            kind: EventKind::ToolResult {
                tool_result: EventToolResult {
                    id: "c1".into(),
                    result: json!(3),
                    error: None,
                },
            },
        };
        let value = serde_json::to_value(&event).unwrap();
        assert_eq!(
            value,
            json!({"type": "tool-result", "timestampMs": 7, "sessionId": "s", "inferenceId": "i",
                   "turnId": "t", "toolResult": {"id": "c1", "result": 3}})
        );
        assert_eq!(
            serde_json::from_value::<SessionEvent>(value).unwrap(),
            event
        );
        let start = serde_json::to_value(EventKind::Start).unwrap();
        assert_eq!(start, json!({"type": "start"}));
        let call = EventKind::ToolCall {
            tool_call: EventToolCall {
                id: "c".into(),
                name: "n".into(),
                input: json!({}),
            },
        };
        assert_eq!(
            serde_json::to_value(call).unwrap(),
            json!({"type": "tool-call", "toolCall": {"id": "c", "name": "n", "input": {}}})
        );
    }

    #[test]
    fn a_closed_sink_does_not_break_the_others() {
        let (gone, rx) = tokio::sync::mpsc::unbounded_channel();
        drop(rx);
        let (live, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let emitter = EventEmitter::new("s", vec![gone, live]).for_inference("i", "t");
        emitter.partial("a", "a");
        emitter.error("boom");
        assert_eq!(rx.try_recv().unwrap().kind.name(), "partial");
        let error = rx.try_recv().unwrap();
        assert_eq!(
            (error.kind.name(), error.inference_id.as_str()),
            ("error", "i")
        );
    }
}
