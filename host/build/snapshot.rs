//! The build's pre-initialisation of the guest: boot the VM once, here, and
//! ship the booted state (Wizer), then compile that for this machine's
//! engine (wasmtime's precompiled form), so that no process boots QuickJS
//! or runs Cranelift when it starts.
//!
//! The boot runs against stubs, not WASI: a clock that always says 0, a
//! random source of zeros, and the host interface's `log` and
//! `should-interrupt`; anything else the guest imports traps, and the
//! build fails saying which. So nothing of the build machine (its time, its
//! randomness, its environment) is baked into the snapshot, and the same
//! guest always gives the same snapshot. What the boot computes from them
//! is baked in: QuickJS's `Math.random` state (seeded from the clock when
//! the context is made) and Rust's hash keys; see docs/architecture.md.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use wasmtime::component::{
    Component, ComponentExportIndex, Instance, Lift, Linker, Val, WasmList, types,
};
use wasmtime::{Engine, Result, Store, bail, error::Context as _};
use wasmtime_wizer::{ComponentInstanceState, Wizer};

/// The guest's export that boots the VM (`world guest` in the WIT).
const INIT: &str = "wizer-initialize";

/// The guest booted and snapshotted: a component of the `marionette` world
/// whose every instance starts with the VM booted and locked down.
pub fn snapshot(engine: &Engine, wasm: &[u8]) -> Result<Vec<u8>> {
    let wizer = {
        let mut w = Wizer::new();
        w.init_func(INIT);
        // Wizer 48 removes the export from the core module but leaves the
        // component's alias of it, and the result does not validate. Kept,
        // it is harmless: booting a booted VM does nothing.
        w.keep_init_func(true);
        w
    };
    let (cx, instrumented) = wizer
        .instrument_component(wasm)
        .context("preparing the guest for its snapshot")?;
    let component =
        Component::new(engine, &instrumented).context("compiling the guest for its boot")?;
    let mut linker = Linker::<()>::new(engine);
    stub_imports(engine, &component, &mut linker)?;
    linker.define_unknown_imports_as_traps(&component)?;
    let mut store = Store::new(engine, ());
    // The build's boot has no deadline (nothing advances this engine's epoch).
    store.set_epoch_deadline(u64::MAX);
    let instance = linker
        .instantiate(&mut store, &component)
        .context("instantiating the guest for its boot")?;
    let init = instance
        .get_typed_func::<(), ()>(&mut store, INIT)
        .context("the guest has no `wizer-initialize` export (world `guest`)")?;
    init.call(&mut store, ())
        .context("booting the guest (`wizer-initialize`) failed")?;
    let mut state = Booted {
        store: &mut store,
        instance,
    };
    ready(wizer.snapshot_component(&cx, &mut state)).context("snapshotting the booted guest")
}

/// Defines the imports the boot may call (see the module's docs).
fn stub_imports(engine: &Engine, component: &Component, linker: &mut Linker<()>) -> Result<()> {
    for (name, item) in component.component_type().imports(engine) {
        let types::ComponentItem::ComponentInstance(instance) = item.ty else {
            continue;
        };
        let interface = name.split('@').next().unwrap_or(name);
        let stubbed: &[&str] = match interface {
            "wasi:clocks/wall-clock" | "wasi:clocks/monotonic-clock" => &["now", "resolution"],
            "wasi:random/random" => &["get-random-bytes", "get-random-u64"],
            "wasi:random/insecure" => &["get-insecure-random-bytes", "get-insecure-random-u64"],
            "wasi:random/insecure-seed" => &["insecure-seed"],
            "marionette:runtime/host" => &["log", "should-interrupt"],
            _ => continue,
        };
        let mut target = linker.instance(name)?;
        for (func, ty) in instance.exports(engine) {
            if !stubbed.contains(&func) {
                continue;
            }
            if !matches!(ty.ty, types::ComponentItem::ComponentFunc(_)) {
                continue;
            }
            let func_name = func.to_string();
            target.func_new(func, move |_store, ty, params, results| {
                answer(&func_name, &ty, params, results)
            })?;
        }
    }
    Ok(())
}

/// What a stub answers: zeros, empty answers, the log on cargo's output.
fn answer(
    func: &str,
    ty: &types::ComponentFunc,
    params: &[Val],
    results: &mut [Val],
) -> Result<()> {
    match (func, params) {
        ("log", [_, Val::String(message)]) => {
            println!("cargo:warning=the guest's boot logged: {message}");
            return Ok(());
        }
        ("get-random-bytes" | "get-insecure-random-bytes", [Val::U64(len)]) => {
            results[0] = Val::List(vec![Val::U8(0); usize::try_from(*len)?]);
            return Ok(());
        }
        _ => {}
    }
    for (slot, ty) in results.iter_mut().zip(ty.results()) {
        *slot = zero(&ty)?;
    }
    Ok(())
}

/// The zero of a result type (`none` for an option).
fn zero(ty: &types::Type) -> Result<Val> {
    Ok(match ty {
        types::Type::U64 => Val::U64(0),
        types::Type::U32 => Val::U32(0),
        types::Type::Option(_) => Val::Option(None),
        types::Type::Tuple(t) => Val::Tuple(t.types().map(|t| zero(&t)).collect::<Result<_>>()?),
        types::Type::Record(r) => Val::Record(
            r.fields()
                .map(|f| Ok((f.name.to_string(), zero(&f.ty)?)))
                .collect::<Result<_>>()?,
        ),
        other => bail!("the boot's stubs have no answer of type {other:?}"),
    })
}

/// The booted instance, read by Wizer through the exports its
/// instrumentation added.
struct Booted<'a> {
    store: &'a mut Store<()>,
    instance: Instance,
}

impl Booted<'_> {
    fn call<R: Lift + Send + Sync + 'static>(&mut self, instance: &str, func: &str) -> R {
        let index = self.export(instance, func);
        let typed = self
            .instance
            .get_typed_func::<(), (R,)>(&mut *self.store, index)
            .expect("Wizer's accessor has the type Wizer expects");
        typed
            .call(&mut *self.store, ())
            .expect("Wizer's accessor does not trap")
            .0
    }

    fn export(&mut self, instance: &str, func: &str) -> ComponentExportIndex {
        let (_, parent) = self
            .instance
            .get_export(&mut *self.store, None, instance)
            .expect("Wizer's instrumentation exports its accessor instance");
        let (_, index) = self
            .instance
            .get_export(&mut *self.store, Some(&parent), func)
            .expect("Wizer's accessor instance exports what Wizer asks for");
        index
    }
}

impl ComponentInstanceState for Booted<'_> {
    async fn call_func_ret_list_u8(
        &mut self,
        instance: &str,
        func: &str,
        contents: impl FnOnce(&[u8]) + Send,
    ) {
        let list: WasmList<u8> = self.call(instance, func);
        contents(list.as_le_slice(&*self.store));
    }

    async fn call_func_ret_s32(&mut self, instance: &str, func: &str) -> i32 {
        self.call(instance, func)
    }

    async fn call_func_ret_s64(&mut self, instance: &str, func: &str) -> i64 {
        self.call(instance, func)
    }

    async fn call_func_ret_f32(&mut self, instance: &str, func: &str) -> u32 {
        self.call::<f32>(instance, func).to_bits()
    }

    async fn call_func_ret_f64(&mut self, instance: &str, func: &str) -> u64 {
        self.call::<f64>(instance, func).to_bits()
    }
}

/// Runs a future that never waits (every call above is synchronous).
fn ready<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("the snapshot waited on something; it has nothing to wait on"),
    }
}
