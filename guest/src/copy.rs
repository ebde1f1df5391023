//! The runtime's `copy` (core.js) without JSON text, for plain data.
//!
//! What crosses between user code and the runtime is a copy, and the copy's
//! meaning is `JSON.parse(JSON.stringify(v))`: `toJSON`, getters and proxies
//! run, cycles and BigInts throw, functions and symbols drop out. Turning
//! the value into text and reading the text back was a quarter of a
//! session's guest time (docs/architecture.md §11, "Many sessions").
//!
//! Most values that cross are plain data: objects made by literals or by
//! `JSON.parse`, arrays, strings, numbers, booleans and `null`. For those,
//! JSON's meaning is simple, and [`copy`] makes it here: each own enumerable
//! string-keyed property in order, `undefined` and symbols left out (`null`
//! in an array), a number that is not finite as `null`, `-0` as `0`, an
//! integral number that fits 32 bits as an integer (what the guest's
//! `JSON.parse` makes, see scripts/bootstrap.sh), strings shared (they are
//! immutable). It reads only data properties of ordinary objects, so no
//! user code runs while it walks.
//!
//! Anything else anywhere in the value (an accessor, an own `toJSON`, a
//! proxy, a function, a BigInt, a boxed primitive, an object of another
//! class or prototype, a cycle, nesting deeper than [`MAX_DEPTH`]) stops the
//! walk before any user code ran: the partial copy is dropped and `copy`
//! answers `undefined`, which core.js takes as "through JSON text", so that
//! such values keep exactly the meaning, errors and side effects they had.
//! The prototypes of plain objects and arrays are frozen by the lockdown, so
//! nothing inherited can change what JSON would do with them.

use std::cell::Cell;
use std::ffi::c_void;

use rquickjs::{Ctx, Value, qjs};

/// Nesting copied here at most; deeper values go through JSON text, whose
/// own stack check decides as it always did.
const MAX_DEPTH: usize = 64;

/// Array items held at once at most: the walk holds an array's items in a
/// vector of its own (outside QuickJS's heap limit) until it makes the
/// copy, so a value with more (in the arrays being copied at one time) goes
/// through JSON text, under the limit as before.
const MAX_HELD: i64 = 1 << 16;

/// The classes and prototypes of plain objects and arrays, learnt once.
#[derive(Clone, Copy)]
struct Plain {
    object_class: qjs::JSClassID,
    array_class: qjs::JSClassID,
    object_proto: *mut c_void,
    array_proto: *mut c_void,
    to_json: qjs::JSAtom,
}

thread_local! {
    static PLAIN: Cell<Option<Plain>> = const { Cell::new(None) };
}

/// Why a walk stopped.
enum Stop {
    /// The value is not plain data: JSON text decides.
    NotPlain,
    /// An exception is pending (out of memory).
    Thrown,
}

/// `native.copy(v)`: the copy of `v` as JSON would make it, or `undefined`
/// when `v` is not plain data (core.js then copies it through JSON text).
pub fn copy<'js>(ctx: Ctx<'js>, value: Value<'js>) -> rquickjs::Result<Value<'js>> {
    let raw = ctx.as_raw().as_ptr();
    // SAFETY: `raw` is the live context this function was called in, and
    // `value` is a live value of it; every value made or read here is freed
    // exactly once or handed on as owned (see `Walk`).
    unsafe {
        // Out of memory learning them: JSON text decides.
        let Some(plain) = plain(raw) else {
            return Ok(Value::new_undefined(ctx));
        };
        let mut walk = Walk {
            ctx: raw,
            plain,
            stack: Vec::new(),
            held: 0,
        };
        match walk.value(value.as_raw(), 0) {
            Ok(Some(copied)) => Ok(Value::from_raw(ctx, copied)),
            // Undefined, a symbol: JSON.stringify makes no text of them,
            // and what JSON.parse then does is JSON's to say.
            Ok(None) | Err(Stop::NotPlain) => Ok(Value::new_undefined(ctx)),
            Err(Stop::Thrown) => Err(rquickjs::Error::Exception),
        }
    }
}

/// The classes and prototypes of this context's plain objects and arrays,
/// read from a new object and array; `None` out of memory.
unsafe fn plain(ctx: *mut qjs::JSContext) -> Option<Plain> {
    if let Some(p) = PLAIN.with(Cell::get) {
        return Some(p);
    }
    unsafe {
        let object = qjs::JS_NewObject(ctx);
        if qjs::JS_IsException(object) {
            qjs::JS_FreeValue(ctx, qjs::JS_GetException(ctx));
            return None;
        }
        let array = qjs::JS_NewArray(ctx);
        if qjs::JS_IsException(array) {
            qjs::JS_FreeValue(ctx, object);
            qjs::JS_FreeValue(ctx, qjs::JS_GetException(ctx));
            return None;
        }
        let object_proto = qjs::JS_GetPrototype(ctx, object);
        let array_proto = qjs::JS_GetPrototype(ctx, array);
        // Kept for the VM's life, as the prototypes are.
        let to_json = qjs::JS_NewAtomLen(ctx, c"toJSON".as_ptr(), 6);
        let p = Plain {
            object_class: qjs::JS_GetClassID(object),
            array_class: qjs::JS_GetClassID(array),
            object_proto: pointer(object_proto),
            array_proto: pointer(array_proto),
            to_json,
        };
        for v in [object, array, object_proto, array_proto] {
            qjs::JS_FreeValue(ctx, v);
        }
        if to_json == qjs::JS_ATOM_NULL {
            return None;
        }
        PLAIN.with(|c| c.set(Some(p)));
        Some(p)
    }
}

/// The object an object value points at (null for any other value).
unsafe fn pointer(v: qjs::JSValue) -> *mut c_void {
    unsafe {
        if qjs::JS_IsObject(v) {
            qjs::JS_VALUE_GET_PTR(v)
        } else {
            std::ptr::null_mut()
        }
    }
}

struct Walk {
    ctx: *mut qjs::JSContext,
    plain: Plain,
    /// The objects being copied, outermost first: one met again is a cycle.
    stack: Vec<*mut c_void>,
    /// The items of the arrays being copied, together.
    held: i64,
}

impl Walk {
    /// The copy of `v` (borrowed): `Some` owned value, or `None` for what
    /// JSON leaves out (`undefined`, a symbol).
    unsafe fn value(
        &mut self,
        v: qjs::JSValue,
        depth: usize,
    ) -> Result<Option<qjs::JSValue>, Stop> {
        unsafe {
            let tag = qjs::JS_VALUE_GET_NORM_TAG(v);
            Ok(Some(match tag {
                qjs::JS_TAG_INT | qjs::JS_TAG_BOOL | qjs::JS_TAG_NULL => v,
                qjs::JS_TAG_FLOAT64 => number(qjs::JS_VALUE_GET_FLOAT64(v)),
                qjs::JS_TAG_STRING | qjs::JS_TAG_STRING_ROPE => qjs::JS_DupValue(self.ctx, v),
                qjs::JS_TAG_UNDEFINED | qjs::JS_TAG_SYMBOL => return Ok(None),
                qjs::JS_TAG_OBJECT => return self.object(v, depth).map(Some),
                _ => return Err(Stop::NotPlain), // BigInt, and anything else
            }))
        }
    }

    unsafe fn object(&mut self, v: qjs::JSValue, depth: usize) -> Result<qjs::JSValue, Stop> {
        unsafe {
            if depth >= MAX_DEPTH {
                return Err(Stop::NotPlain);
            }
            let class = qjs::JS_GetClassID(v);
            let array = if class == self.plain.object_class {
                false
            } else if class == self.plain.array_class {
                true
            } else {
                return Err(Stop::NotPlain);
            };
            let proto = qjs::JS_GetPrototype(self.ctx, v);
            let expected = if array {
                self.plain.array_proto
            } else {
                self.plain.object_proto
            };
            let plain_proto = pointer(proto) == expected || (!array && qjs::JS_IsNull(proto));
            qjs::JS_FreeValue(self.ctx, proto);
            if !plain_proto {
                return Err(Stop::NotPlain);
            }
            let me = qjs::JS_VALUE_GET_PTR(v);
            if self.stack.contains(&me) {
                return Err(Stop::NotPlain); // a cycle: JSON throws its TypeError
            }
            // An own `toJSON`, enumerable or not, is called by JSON.
            match self.own(v, self.plain.to_json)? {
                Own::Missing => {}
                Own::Data(value) => {
                    qjs::JS_FreeValue(self.ctx, value);
                    return Err(Stop::NotPlain);
                }
            }
            self.stack.push(me);
            let copied = if array {
                self.array(v, depth)
            } else {
                self.fields(v, depth)
            };
            self.stack.pop();
            copied
        }
    }

    unsafe fn array(&mut self, v: qjs::JSValue, depth: usize) -> Result<qjs::JSValue, Stop> {
        unsafe {
            let mut len = 0i64;
            // An array's length is a data property: no user code.
            if qjs::JS_GetLength(self.ctx, v, &mut len) < 0 {
                return Err(Stop::Thrown);
            }
            if len > MAX_HELD - self.held {
                return Err(Stop::NotPlain);
            }
            self.held += len;
            let copied = self.items(v, len as i32, depth);
            self.held -= len;
            copied
        }
    }

    unsafe fn items(
        &mut self,
        v: qjs::JSValue,
        count: i32,
        depth: usize,
    ) -> Result<qjs::JSValue, Stop> {
        unsafe {
            let mut items: Vec<qjs::JSValue> = Vec::with_capacity(count as usize);
            let ctx = self.ctx;
            let free = |items: &[qjs::JSValue]| {
                for &item in items {
                    qjs::JS_FreeValue(ctx, item);
                }
            };
            for i in 0..count as u32 {
                let atom = qjs::JS_NewAtomUInt32(self.ctx, i);
                if atom == qjs::JS_ATOM_NULL {
                    free(&items);
                    return Err(Stop::Thrown);
                }
                let own = self.own(v, atom);
                qjs::JS_FreeAtom(self.ctx, atom);
                let item = match own {
                    // A hole: the frozen prototypes hold no index, so
                    // JSON reads undefined there, and writes null.
                    Ok(Own::Missing) => qjs::JS_NULL,
                    Ok(Own::Data(value)) => {
                        let copied = self.value(value, depth + 1);
                        qjs::JS_FreeValue(self.ctx, value);
                        match copied {
                            Ok(Some(c)) => c,
                            Ok(None) => qjs::JS_NULL,
                            Err(stop) => {
                                free(&items);
                                return Err(stop);
                            }
                        }
                    }
                    Err(stop) => {
                        free(&items);
                        return Err(stop);
                    }
                };
                items.push(item);
            }
            // Takes the items, and frees them if it fails.
            let out = qjs::JS_NewArrayFrom(self.ctx, count, items.as_ptr());
            if qjs::JS_IsException(out) {
                return Err(Stop::Thrown);
            }
            Ok(out)
        }
    }

    unsafe fn fields(&mut self, v: qjs::JSValue, depth: usize) -> Result<qjs::JSValue, Stop> {
        unsafe {
            let mut tab: *mut qjs::JSPropertyEnum = std::ptr::null_mut();
            let mut len = 0u32;
            // Own enumerable string keys, in JSON's (Object.keys') order; an
            // ordinary object runs no user code to list them.
            let flags = (qjs::JS_GPN_STRING_MASK | qjs::JS_GPN_ENUM_ONLY) as i32;
            if qjs::JS_GetOwnPropertyNames(self.ctx, &mut tab, &mut len, v, flags) < 0 {
                return Err(Stop::Thrown);
            }
            let out = qjs::JS_NewObject(self.ctx);
            let result = if qjs::JS_IsException(out) {
                Err(Stop::Thrown)
            } else {
                self.fill(v, out, tab, len, depth)
            };
            qjs::JS_FreePropertyEnum(self.ctx, tab, len);
            if result.is_err() && !qjs::JS_IsException(out) {
                qjs::JS_FreeValue(self.ctx, out);
            }
            result.map(|()| out)
        }
    }

    unsafe fn fill(
        &mut self,
        v: qjs::JSValue,
        out: qjs::JSValue,
        tab: *mut qjs::JSPropertyEnum,
        len: u32,
        depth: usize,
    ) -> Result<(), Stop> {
        unsafe {
            for i in 0..len as usize {
                let atom = (*tab.add(i)).atom;
                let value = match self.own(v, atom)? {
                    Own::Data(value) => value,
                    Own::Missing => continue, // not reachable for an ordinary object
                };
                let copied = self.value(value, depth + 1);
                qjs::JS_FreeValue(self.ctx, value);
                let Some(copied) = copied? else {
                    continue;
                };
                // A definition, as JSON.parse makes it: `__proto__` is an
                // own key like any other. Takes `copied`.
                let flags = qjs::JS_PROP_C_W_E as i32;
                if qjs::JS_DefinePropertyValue(self.ctx, out, atom, copied, flags) < 0 {
                    return Err(Stop::Thrown);
                }
            }
            Ok(())
        }
    }

    /// Own property `atom` of the ordinary object `v`: its value (owned)
    /// when it is a data property; an accessor is not plain.
    unsafe fn own(&mut self, v: qjs::JSValue, atom: qjs::JSAtom) -> Result<Own, Stop> {
        unsafe {
            let mut desc = qjs::JSPropertyDescriptor {
                flags: 0,
                value: qjs::JS_UNDEFINED,
                getter: qjs::JS_UNDEFINED,
                setter: qjs::JS_UNDEFINED,
            };
            match qjs::JS_GetOwnProperty(self.ctx, &mut desc, v, atom) {
                r if r < 0 => Err(Stop::Thrown),
                0 => Ok(Own::Missing),
                _ => {
                    if desc.flags & qjs::JS_PROP_GETSET as i32 != 0 {
                        for x in [desc.value, desc.getter, desc.setter] {
                            qjs::JS_FreeValue(self.ctx, x);
                        }
                        return Err(Stop::NotPlain);
                    }
                    qjs::JS_FreeValue(self.ctx, desc.getter);
                    qjs::JS_FreeValue(self.ctx, desc.setter);
                    Ok(Own::Data(desc.value))
                }
            }
        }
    }
}

enum Own {
    Missing,
    Data(qjs::JSValue),
}

/// A double as the guest's JSON.parse reads JSON.stringify's text of it:
/// `null` when not finite, an integer when integral and within 32 bits
/// (`-0` is written `0`), otherwise the same double.
fn number(d: f64) -> qjs::JSValue {
    if !d.is_finite() {
        return qjs::JS_NULL;
    }
    if d.fract() == 0.0 && (f64::from(i32::MIN)..=f64::from(i32::MAX)).contains(&d) {
        return qjs::JS_MKVAL(qjs::JS_TAG_INT, d as i32);
    }
    qjs::__JS_NewFloat64(d)
}
