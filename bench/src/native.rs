//! The same JavaScript in QuickJS built for the host: the baseline with no
//! WebAssembly in it.
//!
//! rquickjs 0.12 compiles the QuickJS C sources the guest embeds (javy 8.1
//! builds on the same rquickjs), here with the host's C compiler at the
//! release profile's optimisation level. The module is evaluated once; a
//! benchmark then calls its exported function with Rust numbers, converted
//! to JavaScript numbers by rquickjs, with no JSON on the way. The runtime
//! gets the QuickJS heap limit the sandbox's default policy sets, and no
//! interrupt handler (the guest polls one).

use anyhow::{Context as _, anyhow};
use rquickjs::{Context, Ctx, Function, Module, Object, Persistent, Runtime};

/// A QuickJS runtime with [`crate::fixture::BENCH_JS`] loaded.
pub struct NativeQuickJs {
    // Dropped before the context and runtime it lives in.
    exports: Persistent<Object<'static>>,
    context: Context,
    _runtime: Runtime,
}

impl NativeQuickJs {
    /// Evaluates `source` as the ES module `name`.
    ///
    /// # Errors
    /// When QuickJS cannot be set up or the module does not evaluate.
    pub fn new(name: &str, source: &str) -> anyhow::Result<NativeQuickJs> {
        let runtime = Runtime::new().context("creating a QuickJS runtime")?;
        let limit = marionette::Policy::default().quickjs_memory_limit();
        runtime.set_memory_limit(usize::try_from(limit).unwrap_or(usize::MAX));
        let context = Context::full(&runtime).context("creating a QuickJS context")?;
        let exports = context.with(|ctx| {
            let run = || -> rquickjs::Result<Persistent<Object<'static>>> {
                let (module, done) = Module::declare(ctx.clone(), name, source)?.eval()?;
                done.finish::<()>()?;
                Ok(Persistent::save(&ctx, module.namespace()?))
            };
            run().map_err(|e| anyhow!("evaluating {name}: {}", describe(&ctx, e)))
        })?;
        Ok(NativeQuickJs {
            exports,
            context,
            _runtime: runtime,
        })
    }

    /// Runs `f` inside the context with the exported function `function`.
    /// A benchmark runs its whole timing loop inside `f`, so what it times
    /// is the call alone, not entering the context.
    ///
    /// # Errors
    /// When there is no such exported function.
    pub fn with_function<R>(
        &self,
        function: &str,
        f: impl for<'js> FnOnce(&Ctx<'js>, Function<'js>) -> R,
    ) -> anyhow::Result<R> {
        self.context.with(|ctx| {
            let exports = self.exports.clone().restore(&ctx)?;
            let func: Function = exports
                .get(function)
                .map_err(|e| anyhow!("{function}: {}", describe(&ctx, e)))?;
            Ok(f(&ctx, func))
        })
    }
}

/// An rquickjs error with the pending JavaScript exception, if that is what
/// it is.
fn describe(ctx: &Ctx<'_>, e: rquickjs::Error) -> String {
    if e.is_exception() {
        let exception = ctx.catch();
        if let Some(ex) = exception.as_exception() {
            return format!("{}", ex);
        }
        return format!("{exception:?}");
    }
    e.to_string()
}
