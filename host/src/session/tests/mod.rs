//! Tests of the Rust session API as a whole: Rust engines, middleware,
//! tools and hooks, run by the guest's session loop in a sandbox the
//! session makes for itself. Time runs for real: the loop's timers are
//! host operations, answered while the guest works on its own thread, and
//! tokio's paused clock would jump past them. No test asserts an upper
//! bound on time.

mod hook_tests;
mod loop_tests;
mod run_tests;
mod spec_tests;
mod tool_tests;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde_json::{Map, Value, json};

use super::*;
use crate::error::{Error, Result};
use crate::model::{Block, BlockKind, ToolDefinition, Turn};

/// A turn with one user block.
fn user_turn(text: &str) -> Turn {
    let Value::Object(payload) = json!({ "text": text }) else {
        unreachable!()
    };
    Turn {
        id: "t1".into(),
        blocks: vec![Block {
            id: "u1".into(),
            kind: BlockKind::User,
            role: Some("user".into()),
            payload,
            metadata: Map::new(),
        }],
        ..Turn::default()
    }
}

fn def(name: &str, parameters: Value) -> ToolDefinition {
    ToolDefinition {
        name: name.into(),
        description: format!("the {name} tool"),
        parameters,
    }
}

fn numbers_schema() -> Value {
    json!({
        "type": "object",
        "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
        "required": ["a", "b"]
    })
}

/// `add` and `mul` on numbers.
fn calculator() -> HostTools {
    HostTools::new("calculator")
        .register(def("add", numbers_schema()), |args, _| async move {
            Ok(json!(
                args["a"].as_f64().unwrap_or(0.0) + args["b"].as_f64().unwrap_or(0.0)
            ))
        })
        .register(def("mul", numbers_schema()), |args, _| async move {
            Ok(json!(
                args["a"].as_f64().unwrap_or(0.0) * args["b"].as_f64().unwrap_or(0.0)
            ))
        })
}

/// A tool `flaky` that fails its first `failures` attempts, counting them;
/// it records the attempt numbers its contexts carried.
#[derive(Clone, Default)]
struct Flaky {
    calls: Arc<AtomicU32>,
    attempts: Arc<Mutex<Vec<u32>>>,
}

impl Flaky {
    fn tools(&self, failures: u32) -> HostTools {
        let me = self.clone();
        HostTools::new("flaky").register(def("flaky", Value::Null), move |_, ctx| {
            let me = me.clone();
            async move {
                me.attempts.lock().unwrap().push(ctx.attempt);
                let n = me.calls.fetch_add(1, Ordering::SeqCst) + 1;
                if n <= failures {
                    Err(Error::host("flaky", anyhow::anyhow!("failure {n}")))
                } else {
                    Ok(json!("ok"))
                }
            }
        })
    }

    fn calls(&self) -> u32 {
        self.calls.load(Ordering::SeqCst)
    }
}

fn scripted(responses: Vec<ScriptedResponse>) -> Arc<ScriptedEngine> {
    Arc::new(ScriptedEngine::new(responses))
}

/// The model calls `name(args)` once, then answers `done`.
fn call_then_done(name: &str, args: Value) -> Arc<ScriptedEngine> {
    scripted(vec![
        ScriptedResponse::calls().tool_call("c1", name, args),
        ScriptedResponse::text("done"),
    ])
}

fn build(engine: Arc<dyn Engine>, tools: HostTools, settings: ToolLoopSettings) -> Session {
    Session::builder()
        .engine(engine)
        .tools(Arc::new(tools))
        .tool_loop(settings)
        .build()
        .unwrap()
}

/// The payloads of the turn's `tool_use` blocks, in order.
fn tool_uses(turn: &Turn) -> Vec<Map<String, Value>> {
    turn.blocks
        .iter()
        .filter(|b| b.kind == BlockKind::ToolUse)
        .map(|b| b.payload.clone())
        .collect()
}

/// The `RunError` inside an error, which must have one.
fn run_error(error: &Error) -> &RunError {
    match error {
        Error::Host { source, .. } => source
            .downcast_ref::<RunError>()
            .unwrap_or_else(|| panic!("not a RunError: {error}")),
        other => panic!("not a host error: {other}"),
    }
}

fn drain(rx: &mut tokio::sync::mpsc::UnboundedReceiver<SessionEvent>) -> Vec<SessionEvent> {
    let mut events = Vec::new();
    while let Ok(event) = rx.try_recv() {
        events.push(event);
    }
    events
}

/// An engine that records what each inference was offered, then answers
/// through another engine.
struct Spy {
    inner: Arc<dyn Engine>,
    seen: Mutex<Vec<(Vec<String>, ToolChoice)>>,
}

impl Spy {
    fn new(inner: Arc<dyn Engine>) -> Arc<Self> {
        Arc::new(Spy {
            inner,
            seen: Mutex::new(Vec::new()),
        })
    }

    fn seen(&self) -> Vec<(Vec<String>, ToolChoice)> {
        self.seen.lock().unwrap().clone()
    }
}

#[async_trait]
impl Engine for Spy {
    fn name(&self) -> &str {
        "spy"
    }

    async fn infer(&self, turn: Turn, ctx: InferenceContext) -> Result<Turn> {
        let tools = ctx.tools.iter().map(|t| t.name.clone()).collect();
        self.seen.lock().unwrap().push((tools, ctx.tool_choice));
        self.inner.infer(turn, ctx).await
    }
}

/// Says whether a future holding one of its guards was dropped (and
/// whether one was made: a tool's future that is aborted before it first
/// runs never makes its guard, so a test cancels only once one exists).
#[derive(Clone, Default)]
struct Dropped(
    Arc<(
        std::sync::atomic::AtomicBool,
        tokio::sync::Notify,
        tokio::sync::Notify,
    )>,
);

impl Dropped {
    fn guard(&self) -> DropFlag {
        self.0.2.notify_one();
        DropFlag(self.clone())
    }

    /// Waits until a guard was made (the tool started running).
    async fn started(&self) {
        self.0.2.notified().await;
    }

    /// Whether a guard was dropped, waiting up to 10 s for it: a tool's
    /// future is dropped once the guest has released its operation, which
    /// the run's end does not wait for.
    async fn wait(&self) -> bool {
        let dropped = async {
            loop {
                let notified = self.0.1.notified();
                if self.0.0.load(Ordering::SeqCst) {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(10), dropped)
            .await
            .is_ok()
    }
}

/// Sets its flag when dropped: shows that a future holding it was dropped.
struct DropFlag(Dropped);

impl Drop for DropFlag {
    fn drop(&mut self) {
        (self.0).0.0.store(true, Ordering::SeqCst);
        (self.0).0.1.notify_waiters();
    }
}

#[test]
fn shared_types_are_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Session>();
    send_sync::<SessionBuilder>();
    send_sync::<RunHandle>();
    send_sync::<Tools>();
    send_sync::<EventEmitter>();
    send_sync::<InferenceContext>();
    send_sync::<MiddlewareContext>();
    send_sync::<ToolContext>();
    send_sync::<EngineRegistry>();
    send_sync::<MiddlewareRegistry>();
}

/// `Next` is the sandbox's `NextFn`: a JS middleware's `next()` can be the
/// rest of a Rust chain as it is.
#[test]
fn next_is_the_sandbox_next_fn() {
    let engine = Arc::new(EchoEngine::default());
    let next: Next = Arc::new(move |turn: Turn| {
        let engine = engine.clone();
        Box::pin(async move { engine.infer(turn, InferenceContext::default()).await })
    });
    let _: crate::sandbox::NextFn = next;
}
