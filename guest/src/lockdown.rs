//! The lockdown's native half: which objects are shared intrinsics, freezing
//! them, and checking that they are frozen.
//!
//! All scripts of a sandbox share one realm, so every object a script can
//! reach without making it (a prototype, a built-in function, the global
//! object) must be frozen, or one script could change what another sees.
//! Which objects those are is not taken from a list written by hand (a list
//! misses what its author forgot: the prototype of what `Iterator.from`
//! returns was missed that way). It is read from QuickJS itself:
//!
//! - every class QuickJS has registered in the runtime (each id below
//!   2^16, the most `JS_NewClass` accepts, asked through
//!   `JS_IsRegisteredClass`) and the prototype the context keeps for it
//!   (`JS_GetClassProto`): this is where QuickJS keeps the prototypes no
//!   global names, the generator, async generator, async-from-sync
//!   iterator, iterator helper, iterator wrapper, regexp string iterator,
//!   array, map, set and string iterator prototypes among them;
//! - `Function.prototype` and the global object;
//! - the roots `js/lockdown.js` returns (the global object and the API);
//! - and everything reachable from those: prototypes, own property values,
//!   getters and setters, symbol keys included.
//!
//! [`lock_down`] freezes all of it; [`report`] walks the same enumeration
//! again and checks each object's own properties one by one, without trusting
//! what the freeze did. Both run wherever the VM is booted (at start-up, or
//! when a snapshot of a booted VM is made).

use std::collections::HashSet;

use rquickjs::{Ctx, Value, qjs};

/// What [`report`] found.
pub struct Report {
    /// Registered classes whose context prototype is an object.
    pub classes: u32,
    /// Objects reached.
    pub objects: u32,
    /// The objects that are not frozen, each as the path it was reached by.
    pub unfrozen: Vec<String>,
}

/// The largest class id plus one: `JS_NewClass` refuses ids from 2^16 on.
const CLASS_ID_END: u32 = 1 << 16;

/// Freezes every intrinsic (see the file) and everything reachable from
/// `roots` (the global object and the API, from `js/lockdown.js`).
pub fn lock_down<'js>(ctx: &Ctx<'js>, roots: Vec<Value<'js>>) -> rquickjs::Result<()> {
    let mut start: Vec<(Value<'js>, String)> =
        roots.into_iter().map(|v| (v, String::new())).collect();
    start.extend(intrinsics(ctx, false).0);
    walk(ctx, start, false, |v, _| {
        // SAFETY: `v` is a live object of `ctx`.
        if unsafe { qjs::JS_FreezeObject(ctx.as_raw().as_ptr(), v.as_raw()) } < 0 {
            return Err(rquickjs::Error::Exception);
        }
        Ok(())
    })
    .map(|_| ())
}

/// Checks that every intrinsic and everything reachable from them is
/// frozen: not extensible, each own property non-configurable and, when it
/// holds a value, read-only.
pub fn report(ctx: &Ctx<'_>) -> rquickjs::Result<Report> {
    let raw = ctx.as_raw().as_ptr();
    let (start, classes) = intrinsics(ctx, true);
    let mut unfrozen = Vec::new();
    let objects = walk(ctx, start, true, |v, path| {
        let v = v.as_raw();
        // SAFETY: `v` is a live object of `ctx`; the property table is
        // freed after use and each descriptor's values are freed as soon as
        // they were read (`Value::from_raw` owns them).
        unsafe {
            let extensible = qjs::JS_IsExtensible(raw, v);
            if extensible < 0 {
                return Err(rquickjs::Error::Exception);
            }
            let mut problem = (extensible > 0).then(|| "extensible".to_string());
            if problem.is_none() {
                let mut table = std::ptr::null_mut();
                let mut len = 0u32;
                let flags = (qjs::JS_GPN_STRING_MASK | qjs::JS_GPN_SYMBOL_MASK) as i32;
                if qjs::JS_GetOwnPropertyNames(raw, &mut table, &mut len, v, flags) < 0 {
                    return Err(rquickjs::Error::Exception);
                }
                for i in 0..len as usize {
                    let atom = (*table.add(i)).atom;
                    let mut desc = std::mem::MaybeUninit::<qjs::JSPropertyDescriptor>::uninit();
                    if qjs::JS_GetOwnProperty(raw, desc.as_mut_ptr(), v, atom) > 0 {
                        let desc = desc.assume_init();
                        drop(Value::from_raw(ctx.clone(), desc.value));
                        drop(Value::from_raw(ctx.clone(), desc.getter));
                        drop(Value::from_raw(ctx.clone(), desc.setter));
                        let flags = desc.flags as u32;
                        let accessor = flags & qjs::JS_PROP_GETSET != 0;
                        if flags & qjs::JS_PROP_CONFIGURABLE != 0
                            || (!accessor && flags & qjs::JS_PROP_WRITABLE != 0)
                        {
                            problem = Some(format!("property {} can change", atom_text(ctx, atom)));
                            break;
                        }
                    }
                }
                qjs::JS_FreePropertyEnum(raw, table, len);
            }
            if let Some(problem) = problem {
                unfrozen.push(format!("{path}: {problem}"));
            }
        }
        Ok(())
    })?;
    Ok(Report {
        classes,
        objects,
        unfrozen,
    })
}

/// The objects every script shares without naming them: the prototype of
/// each registered class, `Function.prototype` and the global object, each
/// with a label (when `labels`) naming how it was found; and how many class
/// prototypes there were.
fn intrinsics<'js>(ctx: &Ctx<'js>, labels: bool) -> (Vec<(Value<'js>, String)>, u32) {
    let raw = ctx.as_raw().as_ptr();
    // SAFETY: `raw` is the live context of `ctx`; each value returned is a
    // new reference, owned at once by a `Value`; `JS_GetClassProto` is only
    // asked for registered ids, which are below the runtime's class count.
    unsafe {
        let rt = qjs::JS_GetRuntime(raw);
        let mut found = vec![
            (
                Value::from_raw(ctx.clone(), qjs::JS_GetGlobalObject(raw)),
                label(labels, || "globalThis".into()),
            ),
            (
                Value::from_raw(ctx.clone(), qjs::JS_GetFunctionProto(raw)),
                label(labels, || "Function.prototype".into()),
            ),
        ];
        let mut classes = 0;
        for id in 1..CLASS_ID_END {
            if !qjs::JS_IsRegisteredClass(rt, id) {
                continue;
            }
            let proto = Value::from_raw(ctx.clone(), qjs::JS_GetClassProto(raw, id));
            if proto.is_object() {
                classes += 1;
                found.push((
                    proto,
                    label(labels, || {
                        format!("<class {} prototype>", class_name(ctx, id))
                    }),
                ));
            }
        }
        (found, classes)
    }
}

fn label(labels: bool, make: impl FnOnce() -> String) -> String {
    if labels { make() } else { String::new() }
}

/// Visits once every object reachable from `roots` through prototypes and
/// own properties (values, getters and setters, symbol keys included), with
/// the path it was first reached by when `labels`; returns how many.
fn walk<'js>(
    ctx: &Ctx<'js>,
    roots: Vec<(Value<'js>, String)>,
    labels: bool,
    mut visit: impl FnMut(&Value<'js>, &str) -> rquickjs::Result<()>,
) -> rquickjs::Result<u32> {
    let raw = ctx.as_raw().as_ptr();
    let mut seen = HashSet::new();
    // Every object visited is kept alive until the walk ends: reading a
    // property may create its value (QuickJS makes some built-ins lazily),
    // and a new object must not get the address of one visited and freed.
    let mut visited = Vec::new();
    let mut pending = roots;
    while let Some((value, path)) = pending.pop() {
        let v = value.as_raw();
        // SAFETY: `v` is a live value of `ctx` (`value` owns a reference);
        // these only read its tag and pointer.
        let object = unsafe {
            qjs::JS_VALUE_GET_TAG(v) == qjs::JS_TAG_OBJECT
                && seen.insert(qjs::JS_VALUE_GET_PTR(v) as usize)
        };
        if !object {
            continue;
        }
        // SAFETY: every value QuickJS hands back here is a new reference,
        // owned at once by a `Value` (which frees it); the property table is
        // freed after use; `desc` is written whole when the call returns 1.
        unsafe {
            pending.push((
                Value::from_raw(ctx.clone(), qjs::JS_GetPrototype(raw, v)),
                label(labels, || format!("{path}.[[Prototype]]")),
            ));
            let mut table = std::ptr::null_mut();
            let mut len = 0u32;
            let flags = (qjs::JS_GPN_STRING_MASK | qjs::JS_GPN_SYMBOL_MASK) as i32;
            if qjs::JS_GetOwnPropertyNames(raw, &mut table, &mut len, v, flags) < 0 {
                return Err(rquickjs::Error::Exception);
            }
            for i in 0..len as usize {
                let atom = (*table.add(i)).atom;
                let mut desc = std::mem::MaybeUninit::<qjs::JSPropertyDescriptor>::uninit();
                if qjs::JS_GetOwnProperty(raw, desc.as_mut_ptr(), v, atom) > 0 {
                    let desc = desc.assume_init();
                    let key = if labels {
                        atom_text(ctx, atom)
                    } else {
                        String::new()
                    };
                    for (part, found) in [
                        ("", desc.value),
                        (" get", desc.getter),
                        (" set", desc.setter),
                    ] {
                        pending.push((
                            Value::from_raw(ctx.clone(), found),
                            label(labels, || format!("{path}.{key}{part}")),
                        ));
                    }
                }
            }
            qjs::JS_FreePropertyEnum(raw, table, len);
        }
        visit(&value, &path)?;
        visited.push(value);
    }
    Ok(visited.len() as u32)
}

/// A property key as text (a symbol in brackets).
fn atom_text(ctx: &Ctx<'_>, atom: qjs::JSAtom) -> String {
    // SAFETY: `atom` is live (held by the property table being read); the
    // value made from it is owned by a `Value`.
    let value = unsafe {
        Value::from_raw(
            ctx.clone(),
            qjs::JS_AtomToValue(ctx.as_raw().as_ptr(), atom),
        )
    };
    if let Some(symbol) = value.as_symbol() {
        let text = symbol
            .description()
            .ok()
            .and_then(|d| d.as_string().and_then(|s| s.to_string().ok()))
            .unwrap_or_default();
        format!("[{text}]")
    } else {
        value
            .as_string()
            .and_then(|s| s.to_string().ok())
            .unwrap_or_else(|| "?".into())
    }
}

/// The name QuickJS gives class `id`.
fn class_name(ctx: &Ctx<'_>, id: u32) -> String {
    // SAFETY: `id` is registered (the callers checked); the atom returned is
    // freed after use.
    unsafe {
        let raw = ctx.as_raw().as_ptr();
        let atom = qjs::JS_GetClassName(qjs::JS_GetRuntime(raw), id);
        let name = atom_text(ctx, atom);
        qjs::JS_FreeAtom(raw, atom);
        name
    }
}
