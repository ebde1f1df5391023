//! The work a script asks of the host beyond timers: running a host engine,
//! a host tool, or a whole session whose JavaScript parts are called back by
//! handle. Each returns the outcome `tasks.resume` hands back to the script.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value as Json};

use super::parts::{JsEngine, JsHooks, JsMiddleware, JsTools, Link};
use super::services::{ChosenTools, HostServices};
use super::{WeakSandbox, check_nesting, check_turn_nesting, convert};
use crate::bindings::marionette::runtime::types as wit;
use crate::error::{Error, Op, ProviderErrorKind};
use crate::model::{ToolCall, ToolDefinition, Turn};
use crate::session::{
    Engine, EventEmitter, EventSink, InferenceContext, Middleware, RunOptions, Session,
    ToolContext, ToolLoopSettings, ToolSet,
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

/// `engines.host(name).infer(turn, ctx)`.
pub(crate) async fn infer(
    services: Arc<HostServices>,
    request: wit::HostInference,
) -> wit::Outcome {
    let engine = services
        .engines
        .get(request.engine.as_deref())
        .map_err(|e| error_for_script(&e))?;
    let turn = convert::turn_from_wit(request.input).map_err(|e| type_error(format!("{e:#}")))?;
    let spec = ContextSpec::from_json(&request.context)?;
    let ctx = InferenceContext {
        events: EventEmitter::new(spec.session_id.clone(), Vec::new()),
        session_id: spec.session_id,
        inference_id: spec.inference_id,
        turn_id: spec.turn_id,
        tags: spec.tags,
        deadline_ms: spec.deadline_ms,
        ..InferenceContext::default()
    };
    let out = engine
        .infer(turn, ctx)
        .await
        .map_err(|e| error_for_script(&e))?;
    let op: Op = format!("host engine {}", engine.name()).into();
    check_turn_nesting(&op, &out).map_err(|e| error_for_script(&e))?;
    Ok(wit::Value::Turn(convert::turn_to_wit(&out)))
}

/// `registry.call(name)` of a host tool the registry uses. The arguments
/// are checked against the tool's schema here: the guest checks only its
/// own tools.
pub(crate) async fn call_tool(services: Arc<HostServices>, call: wit::ToolCall) -> wit::Outcome {
    let tools = services.all_tools().map_err(|e| error_for_script(&e))?;
    let arguments: Json = serde_json::from_str(&call.arguments).map_err(|e| {
        type_error(format!(
            "the arguments of tool {:?} are not valid JSON: {e}",
            call.name
        ))
    })?;
    let definition = tools
        .get(&call.name)
        .ok_or_else(|| type_error(format!("the host provides no tool named {:?}", call.name)))?;
    let validator = crate::schema::compile(&definition.parameters).map_err(type_error)?;
    crate::schema::check(&validator, &arguments).map_err(|problem| {
        type_error(format!(
            "invalid arguments for tool {:?}: {problem}",
            call.name
        ))
    })?;
    let ctx = ToolContext {
        tool_name: call.name.clone(),
        call_id: call.id.clone(),
        attempt: 1,
        ..ToolContext::default()
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

/// A part of a session: JavaScript by handle, or the host's by name.
#[derive(Deserialize)]
#[serde(untagged)]
enum PartSpec {
    Handle {
        handle: u64,
        #[serde(default)]
        name: Option<String>,
    },
    Host {
        host: Option<String>,
        #[serde(default)]
        options: Json,
    },
}

/// Which host tools a registry uses: `"all"`, or a list of names.
#[derive(Deserialize)]
#[serde(untagged)]
enum HostToolsSpec {
    All(AllTools),
    Named(Vec<String>),
}

#[derive(Deserialize)]
enum AllTools {
    #[serde(rename = "all")]
    All,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RegistrySpec {
    handle: u64,
    host_tools: Option<HostToolsSpec>,
    /// The registry's JavaScript tools, as the script sees them (saves
    /// asking the guest again).
    tools: Vec<ToolDefinition>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct HooksSpec {
    handle: u64,
    #[serde(default)]
    fail_open: bool,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct RunSpec {
    timeout_ms: Option<u64>,
    tags: Map<String, Json>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SessionSpec {
    session_id: String,
    engine: PartSpec,
    #[serde(default)]
    middlewares: Vec<PartSpec>,
    #[serde(default)]
    tools: Vec<RegistrySpec>,
    #[serde(default)]
    tool_loop: Option<Json>,
    #[serde(default)]
    hooks: Option<HooksSpec>,
    turn: Turn,
    #[serde(default)]
    options: RunSpec,
}

/// Builds the session a script described and runs it; its events go to
/// `events` as they happen.
pub(crate) async fn run_session(
    services: Arc<HostServices>,
    sandbox: WeakSandbox,
    spec: String,
    events: EventSink,
) -> wit::Outcome {
    let spec: SessionSpec =
        serde_json::from_str(&spec).map_err(|e| type_error(format!("malformed session: {e}")))?;
    let link = Link::Weak(sandbox);
    let op: Op = format!("session {}", spec.session_id).into();

    let engine: Arc<dyn Engine> = match spec.engine {
        PartSpec::Handle { handle, name } => Arc::new(JsEngine {
            link: link.clone(),
            target: wit::Target::Handle(handle),
            name: name.unwrap_or_else(|| "js engine".into()),
        }),
        PartSpec::Host { host, .. } => services
            .engines
            .get(host.as_deref())
            .map_err(|e| error_for_script(&e))?,
    };
    let mut builder = Session::builder()
        .id(spec.session_id.clone())
        .engine(engine);
    for m in spec.middlewares {
        let middleware: Arc<dyn Middleware> = match m {
            PartSpec::Handle { handle, name } => Arc::new(JsMiddleware {
                link: link.clone(),
                target: wit::Target::Handle(handle),
                name: name.unwrap_or_else(|| "middleware".into()),
            }),
            PartSpec::Host { host, options } => {
                let name = host.ok_or_else(|| type_error("a host middleware needs a name"))?;
                services
                    .middlewares
                    .create(&name, &options)
                    .map_err(|e| error_for_script(&e))?
            }
        };
        builder = builder.middleware(middleware);
    }
    let host_tools = Arc::new(services.all_tools().map_err(|e| error_for_script(&e))?);
    let mut chosen: Vec<String> = Vec::new();
    let mut all_host_tools = false;
    for r in spec.tools {
        builder = builder.tools(Arc::new(JsTools {
            link: link.clone(),
            target: wit::Target::Handle(r.handle),
            name: format!("registry {}", r.handle),
            definitions: r.tools,
        }));
        match r.host_tools {
            None => {}
            Some(HostToolsSpec::All(_)) => all_host_tools = true,
            Some(HostToolsSpec::Named(names)) => chosen.extend(names),
        }
    }
    if all_host_tools {
        builder = builder.tools(host_tools.clone() as Arc<dyn ToolSet>);
    } else if !chosen.is_empty() {
        chosen.sort();
        chosen.dedup();
        builder = builder.tools(Arc::new(ChosenTools {
            tools: host_tools,
            names: chosen,
        }));
    }
    if let Some(settings) = spec.tool_loop {
        let settings =
            ToolLoopSettings::from_json(&settings).map_err(|e| type_error(e.to_string()))?;
        builder = builder.tool_loop(settings);
    }
    if let Some(h) = spec.hooks {
        builder = builder.hooks(Arc::new(JsHooks {
            link: link.clone(),
            target: wit::Target::Handle(h.handle),
            fail_open: h.fail_open,
        }));
    }
    let session = builder.build().map_err(|e| error_for_script(&e))?;
    let options = RunOptions {
        timeout: spec.options.timeout_ms.map(Duration::from_millis),
        tags: spec.options.tags,
        cancel: None,
        events: Some(events),
    };
    let out = session.run(Some(spec.turn), options).await.map_err(|e| {
        tracing::debug!(%op, error = %e, "a script's session failed");
        error_for_script(&e)
    })?;
    check_turn_nesting(&op, &out).map_err(|e| error_for_script(&e))?;
    Ok(wit::Value::Turn(convert::turn_to_wit(&out)))
}
