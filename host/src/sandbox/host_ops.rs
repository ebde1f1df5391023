//! The work a script asks of the host beyond timers: running a host engine,
//! a host tool or a host middleware (whose `next` comes back into the guest
//! as a task). Each returns the outcome `tasks.resume` hands back to the
//! script.

use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde_json::{Map, Value as Json};

use super::provided::{Part, Provided, Raised};
use super::services::HostServices;
use super::{WeakSandbox, check_nesting, check_turn_nesting, convert};
use crate::bindings::marionette::runtime::types as wit;
use crate::error::{Error, Op, ProviderErrorKind};
use crate::model::{ToolCall, Turn};
use crate::session::{
    AfterDecision, BeforeDecision, Engine, ErrorDecision, EventEmitter, EventSink, HookPayload,
    InferenceContext, Middleware, MiddlewareContext, Next, ToolChoice, ToolContext, ToolSet,
};

/// How a host failure reaches the script awaiting it: an `Error` with the
/// same meaning (a script error keeps its own name and location).
pub(crate) fn error_for_script(e: &Error) -> wit::ScriptError {
    match e {
        Error::Script { error, .. } => convert::script_error_to_wit(error),
        Error::Canceled { .. } => convert::host_error("AbortError", e.to_string()),
        Error::Timeout { .. } => convert::host_error("TimeoutError", e.to_string()),
        // Names a script can branch on (`e.name === "RateLimitError"`).
        Error::Provider { kind, .. } => convert::host_error(
            match kind {
                ProviderErrorKind::Unauthorized => "AuthenticationError",
                ProviderErrorKind::RateLimited => "RateLimitError",
                ProviderErrorKind::Timeout => "TimeoutError",
                _ => "ProviderError",
            },
            e.to_string(),
        ),
        // The cause alone: the `op` label names a Rust operation, which
        // means nothing to a script or a model.
        Error::Host { source, .. } => convert::host_error("Error", format!("{source:#}")),
        _ => convert::host_error("Error", e.to_string()),
    }
}

fn type_error(message: impl Into<String>) -> wit::ScriptError {
    convert::host_error("TypeError", message)
}

/// The context fields a script may pass along (`{sessionId, tags, ...}`).
#[derive(Default)]
struct ContextSpec {
    session_id: String,
    inference_id: String,
    turn_id: String,
    tags: Map<String, Json>,
    deadline_ms: Option<u64>,
}

impl ContextSpec {
    /// Reads the context a script handed to a host engine. A missing or
    /// `null` context or field is empty; fields the host does not read (a
    /// middleware's `middlewareName`, ...) are ignored. A field of the
    /// wrong type is a `TypeError` that names it, not an empty context.
    fn from_json(text: &str) -> Result<ContextSpec, wit::ScriptError> {
        let malformed = |why: String| type_error(format!("malformed inference context: {why}"));
        let mut fields = match serde_json::from_str::<Json>(text) {
            Ok(Json::Object(fields)) => fields,
            Ok(Json::Null) => return Ok(ContextSpec::default()),
            Ok(other) => {
                let kind = convert::kind_of(&other);
                return Err(malformed(format!("it must be an object, not {kind}")));
            }
            Err(e) => return Err(malformed(format!("not valid JSON: {e}"))),
        };
        Ok(ContextSpec {
            session_id: field(&mut fields, "sessionId").map_err(malformed)?,
            inference_id: field(&mut fields, "inferenceId").map_err(malformed)?,
            turn_id: field(&mut fields, "turnId").map_err(malformed)?,
            tags: field(&mut fields, "tags").map_err(malformed)?,
            deadline_ms: field(&mut fields, "deadlineMs").map_err(malformed)?,
        })
    }
}

/// The field `name` of an object a script handed over (missing or `null`:
/// the default), or what is wrong with it, naming it.
fn field<T: DeserializeOwned + Default>(
    fields: &mut Map<String, Json>,
    name: &str,
) -> Result<T, String> {
    match fields.remove(name) {
        None | Some(Json::Null) => Ok(T::default()),
        Some(value) => serde_json::from_value(value).map_err(|e| format!("{name}: {e}")),
    }
}

/// An inference on a host engine (`infer`): by the guest's session loop, or
/// by a script's own `engines.host(name).infer(turn, ctx)`. The engine gets
/// everything the request carries (tools, tool choice, tags, deadline);
/// its stream events go to `events`, which the owner hands back to the
/// guest as progress of the op.
pub(crate) async fn infer(
    services: Arc<HostServices>,
    provided: Arc<Provided>,
    request: wit::HostInference,
    events: EventSink,
) -> wit::Outcome {
    let (engine, raised): (Arc<dyn Engine>, _) =
        match request.engine.as_deref().and_then(|n| provided.get(n)) {
            Some(entry) => match entry.part {
                Part::Engine(engine) => (engine, Some(entry.raised)),
                _ => return Err(type_error("a session's part is not an engine")),
            },
            None => (
                services
                    .engines
                    .get(request.engine.as_deref())
                    .map_err(|e| error_for_script(&e))?,
                None,
            ),
        };
    let turn = convert::turn_from_wit(request.input).map_err(|e| type_error(format!("{e:#}")))?;
    let spec = ContextSpec::from_json(&request.context)?;
    let tools = convert::tool_definitions(request.tools)
        .map_err(|e| type_error(format!("the tools offered to the engine: {e:#}")))?;
    let ctx = InferenceContext {
        events: EventEmitter::new(spec.session_id.clone(), vec![events])
            .for_inference(&spec.inference_id, &spec.turn_id),
        session_id: spec.session_id,
        inference_id: spec.inference_id,
        turn_id: spec.turn_id,
        tags: spec.tags,
        deadline_ms: spec.deadline_ms,
        tools: Arc::from(tools),
        tool_choice: match request.tool_choice {
            wit::ToolChoice::Auto => ToolChoice::Auto,
            wit::ToolChoice::None => ToolChoice::None,
            wit::ToolChoice::Required => ToolChoice::Required,
        },
    };
    let out = engine
        .infer(turn, ctx)
        .await
        .map_err(|e| raise(raised.as_deref(), e))?;
    let op: Op = format!("host engine {}", engine.name()).into();
    check_turn_nesting(&op, &out).map_err(|e| error_for_script(&e))?;
    Ok(wit::Value::Turn(convert::turn_to_wit(&out)))
}

/// A host tool (`call-tool`). The arguments are checked against the tool's
/// schema here: the guest checks only its own tools.
pub(crate) async fn call_tool(
    services: Arc<HostServices>,
    provided: Arc<Provided>,
    request: wit::HostToolCall,
) -> wit::Outcome {
    let call = request.call;
    // A session's own tool set, or the sandbox's host tools.
    let (tools, checked) = match request.provider.as_deref() {
        Some(name) => match provided.get(name).map(|e| e.part) {
            Some(Part::Tools(tools)) => (tools, true),
            Some(_) => return Err(type_error(format!("{name:?} is not a tool set"))),
            None => {
                return Err(type_error(format!(
                    "no tool set {name:?}: its session run is over"
                )));
            }
        },
        None => (
            services.all_tools().map_err(|e| error_for_script(&e))?,
            false,
        ),
    };
    let arguments: Json = serde_json::from_str(&call.arguments).map_err(|e| {
        type_error(format!(
            "the arguments of tool {:?} are not valid JSON: {e}",
            call.name
        ))
    })?;
    let definition = tools
        .get(&call.name)
        .ok_or_else(|| type_error(format!("the host provides no tool named {:?}", call.name)))?;
    // The session loop checked the arguments of its own tools already
    // (through `validate-arguments`); a script's direct call was not.
    if !checked {
        let validator = crate::schema::compile(&definition.parameters).map_err(type_error)?;
        crate::schema::check(&validator, &arguments).map_err(|problem| {
            type_error(format!(
                "invalid arguments for tool {:?}: {problem}",
                call.name
            ))
        })?;
    }
    let spec = ToolContextSpec::from_json(&request.context)?;
    let ctx = ToolContext {
        tool_name: call.name.clone(),
        call_id: call.id.clone(),
        session_id: spec.session_id,
        inference_id: spec.inference_id,
        tags: spec.tags,
        deadline_ms: spec.deadline_ms,
        attempt: spec.attempt.max(1),
    };
    let op: Op = format!("host tool {}", call.name).into();
    let what = format!("the result of tool {:?}", call.name);
    let call = ToolCall {
        id: call.id,
        name: call.name,
        arguments,
    };
    let value = tools
        .call(call, ctx)
        .await
        .map_err(|e| error_for_script(&e))?;
    check_nesting(&op, &what, &value).map_err(|e| error_for_script(&e))?;
    Ok(wit::Value::Json(value.to_string()))
}

/// The fields of a host tool's context (`call-tool`'s `context`).
#[derive(Default)]
struct ToolContextSpec {
    session_id: String,
    inference_id: String,
    tags: Map<String, Json>,
    deadline_ms: Option<u64>,
    attempt: u32,
}

impl ToolContextSpec {
    fn from_json(text: &str) -> Result<ToolContextSpec, wit::ScriptError> {
        let malformed = |why: String| type_error(format!("malformed tool context: {why}"));
        let mut fields = match serde_json::from_str::<Json>(text) {
            Ok(Json::Object(fields)) => fields,
            Ok(Json::Null) => return Ok(ToolContextSpec::default()),
            Ok(other) => {
                let kind = convert::kind_of(&other);
                return Err(malformed(format!("it must be an object, not {kind}")));
            }
            Err(e) => return Err(malformed(format!("not valid JSON: {e}"))),
        };
        Ok(ToolContextSpec {
            session_id: field(&mut fields, "sessionId").map_err(malformed)?,
            inference_id: field(&mut fields, "inferenceId").map_err(malformed)?,
            tags: field(&mut fields, "tags").map_err(malformed)?,
            deadline_ms: field(&mut fields, "deadlineMs").map_err(malformed)?,
            attempt: field(&mut fields, "attempt").map_err(malformed)?,
        })
    }
}

/// A host middleware (`middleware`). Its `next(turn)` is the rest of the
/// chain in the guest: a `middleware.next` task naming `op`, started while
/// the op is pending; its console lines go where those of `events` go.
pub(crate) async fn middleware(
    services: Arc<HostServices>,
    provided: Arc<Provided>,
    sandbox: WeakSandbox,
    request: wit::HostMiddlewareCall,
    op: u64,
    events: Option<super::owner::EventSink>,
) -> wit::Outcome {
    let options: Json = serde_json::from_str(&request.options).map_err(|e| {
        type_error(format!(
            "the options of middleware {:?} are not valid JSON: {e}",
            request.name
        ))
    })?;
    // A session's own middleware is known by its own name, not by the
    // name it was registered under for the run.
    let (middleware, middleware_name, raised): (Arc<dyn Middleware>, _, _) =
        match provided.get(&request.name) {
            Some(entry) => match entry.part {
                Part::Middleware(m) => {
                    let name = m.name().to_string();
                    (m, name, Some(entry.raised))
                }
                _ => return Err(type_error("a session's part is not a middleware")),
            },
            None => (
                services
                    .middlewares
                    .create(&request.name, &options)
                    .map_err(|e| error_for_script(&e))?,
                request.name.clone(),
                None,
            ),
        };
    let turn = convert::turn_from_wit(request.input).map_err(|e| type_error(format!("{e:#}")))?;
    let spec = ContextSpec::from_json(&request.context)?;
    let ctx = MiddlewareContext {
        middleware_name,
        session_id: spec.session_id,
        inference_id: spec.inference_id,
        turn_id: spec.turn_id,
        tags: spec.tags,
        deadline_ms: spec.deadline_ms,
    };
    let name = request.name;
    let next: Next = Arc::new(move |turn: Turn| {
        let (sandbox, events, name) = (sandbox.clone(), events.clone(), name.clone());
        Box::pin(async move {
            let op_label: Op = format!("next() of host middleware {name}").into();
            let Some(sandbox) = sandbox.upgrade() else {
                return Err(Error::Closed { op: op_label });
            };
            sandbox.middleware_next(op_label, op, &turn, events).await
        })
    });
    let out = middleware
        .handle(turn, ctx, next)
        .await
        .map_err(|e| raise(raised.as_deref(), e))?;
    let op: Op = format!("host middleware {}", middleware.name()).into();
    check_turn_nesting(&op, &out).map_err(|e| error_for_script(&e))?;
    Ok(wit::Value::Turn(convert::turn_to_wit(&out)))
}

/// A tool hook of a session the host started (`hook`): the hooks' decision
/// as the JSON a JavaScript hook would return. A failing hook is the op's
/// error; the guest's loop applies fail-closed or fail-open.
pub(crate) async fn hook(provided: Arc<Provided>, request: wit::HostHookCall) -> wit::Outcome {
    let hooks = match provided.get(&request.provider).map(|e| e.part) {
        Some(Part::Hooks(hooks)) => hooks,
        Some(_) => {
            return Err(type_error(format!(
                "{:?} is not a set of hooks",
                request.provider
            )));
        }
        None => {
            return Err(type_error(format!(
                "no hooks {:?}: their session run is over",
                request.provider
            )));
        }
    };
    let payload: HookPayload = serde_json::from_str(&request.payload)
        .map_err(|e| type_error(format!("malformed hook payload: {e}")))?;
    let decision = match request.hook {
        wit::Hook::BeforeToolCall => hooks
            .before_tool_call(payload)
            .await
            .map(|d: BeforeDecision| d.to_json()),
        wit::Hook::AfterToolCall => hooks
            .after_tool_call(payload)
            .await
            .map(|d: AfterDecision| d.to_json()),
        wit::Hook::OnToolError => hooks
            .on_tool_error(payload)
            .await
            .map(|d: ErrorDecision| d.to_json()),
    }
    .map_err(|e| error_for_script(&e))?;
    Ok(wit::Value::Json(decision.to_string()))
}

/// The script's view of a Rust part's error, remembered for the run so that
/// the run, failing with it, returns the Rust error itself.
fn raise(raised: Option<&Raised>, error: Error) -> wit::ScriptError {
    let seen = error_for_script(&error);
    if let Some(raised) = raised {
        raised.record(&seen, error);
    }
    seen
}
