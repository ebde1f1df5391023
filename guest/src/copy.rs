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
//!
//! [`text`] is the same walk writing `JSON.stringify`'s text instead of a
//! copy (the texts of requests, results, events and schemas that the
//! runtime hands to the host), with the same rule: anything not plain data
//! is left to `JSON.stringify`.

use std::cell::Cell;
use std::ffi::c_void;
use std::io::Write as _;

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
            let array = plain_object(self.ctx, &self.plain, &self.stack, v, depth)?;
            self.stack.push(qjs::JS_VALUE_GET_PTR(v));
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
            let keys = OwnKeys::of(self.ctx, v)?;
            let out = qjs::JS_NewObject(self.ctx);
            if qjs::JS_IsException(out) {
                return Err(Stop::Thrown);
            }
            let result = self.fill(v, out, &keys, depth);
            if result.is_err() {
                qjs::JS_FreeValue(self.ctx, out);
            }
            result.map(|()| out)
        }
    }

    unsafe fn fill(
        &mut self,
        v: qjs::JSValue,
        out: qjs::JSValue,
        keys: &OwnKeys,
        depth: usize,
    ) -> Result<(), Stop> {
        unsafe {
            for atom in keys.atoms() {
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

    unsafe fn own(&mut self, v: qjs::JSValue, atom: qjs::JSAtom) -> Result<Own, Stop> {
        unsafe { own(self.ctx, v, atom) }
    }
}

/// Whether the object `v` is plain data to walk, and which kind: `true` an
/// array, `false` an object. Not plain: an object of another class or
/// prototype, one met again (`stack`: the objects being walked, outermost
/// first), one with an own `toJSON`, nesting past [`MAX_DEPTH`].
unsafe fn plain_object(
    ctx: *mut qjs::JSContext,
    plain: &Plain,
    stack: &[*mut c_void],
    v: qjs::JSValue,
    depth: usize,
) -> Result<bool, Stop> {
    unsafe {
        if depth >= MAX_DEPTH {
            return Err(Stop::NotPlain);
        }
        let class = qjs::JS_GetClassID(v);
        let array = if class == plain.object_class {
            false
        } else if class == plain.array_class {
            true
        } else {
            return Err(Stop::NotPlain);
        };
        let proto = qjs::JS_GetPrototype(ctx, v);
        let expected = if array {
            plain.array_proto
        } else {
            plain.object_proto
        };
        let plain_proto = pointer(proto) == expected || (!array && qjs::JS_IsNull(proto));
        qjs::JS_FreeValue(ctx, proto);
        if !plain_proto {
            return Err(Stop::NotPlain);
        }
        if stack.contains(&qjs::JS_VALUE_GET_PTR(v)) {
            return Err(Stop::NotPlain); // a cycle: JSON throws its TypeError
        }
        // An own `toJSON`, enumerable or not, is called by JSON.
        match own(ctx, v, plain.to_json)? {
            Own::Missing => Ok(array),
            Own::Data(value) => {
                qjs::JS_FreeValue(ctx, value);
                Err(Stop::NotPlain)
            }
        }
    }
}

/// Own property `atom` of the ordinary object `v`: its value (owned) when
/// it is a data property; an accessor is not plain.
unsafe fn own(ctx: *mut qjs::JSContext, v: qjs::JSValue, atom: qjs::JSAtom) -> Result<Own, Stop> {
    unsafe {
        let mut desc = qjs::JSPropertyDescriptor {
            flags: 0,
            value: qjs::JS_UNDEFINED,
            getter: qjs::JS_UNDEFINED,
            setter: qjs::JS_UNDEFINED,
        };
        match qjs::JS_GetOwnProperty(ctx, &mut desc, v, atom) {
            r if r < 0 => Err(Stop::Thrown),
            0 => Ok(Own::Missing),
            _ => {
                if desc.flags & qjs::JS_PROP_GETSET as i32 != 0 {
                    for x in [desc.value, desc.getter, desc.setter] {
                        qjs::JS_FreeValue(ctx, x);
                    }
                    return Err(Stop::NotPlain);
                }
                qjs::JS_FreeValue(ctx, desc.getter);
                qjs::JS_FreeValue(ctx, desc.setter);
                Ok(Own::Data(desc.value))
            }
        }
    }
}

/// The own enumerable string keys of an ordinary object, in JSON's
/// (`Object.keys`') order, listed without running user code; given back to
/// QuickJS when dropped.
struct OwnKeys {
    ctx: *mut qjs::JSContext,
    tab: *mut qjs::JSPropertyEnum,
    len: u32,
}

impl OwnKeys {
    unsafe fn of(ctx: *mut qjs::JSContext, v: qjs::JSValue) -> Result<OwnKeys, Stop> {
        let mut keys = OwnKeys {
            ctx,
            tab: std::ptr::null_mut(),
            len: 0,
        };
        let flags = (qjs::JS_GPN_STRING_MASK | qjs::JS_GPN_ENUM_ONLY) as i32;
        // SAFETY: `v` is a live ordinary object of `ctx` (the caller's).
        if unsafe { qjs::JS_GetOwnPropertyNames(ctx, &mut keys.tab, &mut keys.len, v, flags) } < 0 {
            return Err(Stop::Thrown);
        }
        Ok(keys)
    }

    fn atoms(&self) -> impl Iterator<Item = qjs::JSAtom> + '_ {
        // SAFETY: `tab` holds `len` entries until this drops.
        (0..self.len as usize).map(|i| unsafe { (*self.tab.add(i)).atom })
    }
}

impl Drop for OwnKeys {
    fn drop(&mut self) {
        // SAFETY: listed by `of` in `ctx`, given back once. A failed listing
        // left `tab` null and `len` 0, which QuickJS frees as nothing.
        unsafe { qjs::JS_FreePropertyEnum(self.ctx, self.tab, self.len) };
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

/// Text made here at most; a value whose text is longer is left to
/// `JSON.stringify`. The text is built outside QuickJS's heap limit (in
/// Rust's memory) until it becomes a string, so this bounds what a value
/// can make there (a long string referred to many times, say): a string
/// is quoted only if its UTF-8 fits in what is left, so the text stays
/// under about six times this (each byte of the last string escaped as
/// `\u00xx`).
const MAX_TEXT: usize = 1 << 20;

/// `native.json(v)`: `JSON.stringify(v)` for plain data, or `undefined`
/// when `v` is not plain data (core.js then asks `JSON.stringify`), is
/// `undefined` or a symbol (what `JSON.stringify` answers `undefined` for),
/// or its text would be longer than [`MAX_TEXT`].
pub fn text<'js>(ctx: Ctx<'js>, value: Value<'js>) -> rquickjs::Result<Value<'js>> {
    let raw = ctx.as_raw().as_ptr();
    // SAFETY: `raw` is the live context this function was called in, and
    // `value` a live value of it; each value read here is freed once.
    unsafe {
        let Some(plain) = plain(raw) else {
            return Ok(Value::new_undefined(ctx));
        };
        let mut walk = Text {
            ctx: raw,
            plain,
            stack: Vec::new(),
            out: Vec::new(),
        };
        match walk.value(value.as_raw(), 0) {
            Ok(true) => {
                let s = qjs::JS_NewStringLen(raw, walk.out.as_ptr().cast(), walk.out.len() as _);
                if qjs::JS_IsException(s) {
                    return Err(rquickjs::Error::Exception);
                }
                Ok(Value::from_raw(ctx, s))
            }
            Ok(false) | Err(Stop::NotPlain) => Ok(Value::new_undefined(ctx)),
            Err(Stop::Thrown) => Err(rquickjs::Error::Exception),
        }
    }
}

/// The walk of [`text`]: what [`Walk`] reads, written as JSON text (always
/// valid UTF-8: JSON escapes lone surrogates).
struct Text {
    ctx: *mut qjs::JSContext,
    plain: Plain,
    stack: Vec<*mut c_void>,
    out: Vec<u8>,
}

impl Text {
    /// Writes `v` (borrowed); `false` for what JSON leaves out (`undefined`,
    /// a symbol), having written nothing.
    unsafe fn value(&mut self, v: qjs::JSValue, depth: usize) -> Result<bool, Stop> {
        unsafe {
            match qjs::JS_VALUE_GET_NORM_TAG(v) {
                qjs::JS_TAG_INT => {
                    let _ = write!(self.out, "{}", qjs::JS_VALUE_GET_INT(v));
                }
                qjs::JS_TAG_BOOL => self.out.extend_from_slice(if qjs::JS_VALUE_GET_BOOL(v) {
                    b"true"
                } else {
                    b"false"
                }),
                qjs::JS_TAG_NULL => self.out.extend_from_slice(b"null"),
                // A finite number is its ToString, QuickJS's own (Rust's
                // shortest digits differ from it in the last digit of some
                // 17-digit doubles); any other is null.
                qjs::JS_TAG_FLOAT64 if !qjs::JS_VALUE_GET_FLOAT64(v).is_finite() => {
                    self.out.extend_from_slice(b"null");
                }
                qjs::JS_TAG_FLOAT64 => {
                    let mut len = 0;
                    let s = qjs::JS_ToCStringLen2(self.ctx, &mut len, v, false);
                    if s.is_null() {
                        return Err(Stop::Thrown);
                    }
                    self.out.extend_from_slice(std::slice::from_raw_parts(
                        s.cast::<u8>(),
                        len as usize,
                    ));
                    qjs::JS_FreeCString(self.ctx, s);
                }
                qjs::JS_TAG_STRING | qjs::JS_TAG_STRING_ROPE => {
                    let mut len = 0;
                    let s = qjs::JS_ToCStringLen2(self.ctx, &mut len, v, false);
                    if s.is_null() {
                        return Err(Stop::Thrown);
                    }
                    let quoted =
                        self.quote(std::slice::from_raw_parts(s.cast::<u8>(), len as usize));
                    qjs::JS_FreeCString(self.ctx, s);
                    quoted?;
                }
                qjs::JS_TAG_UNDEFINED | qjs::JS_TAG_SYMBOL => return Ok(false),
                qjs::JS_TAG_OBJECT => self.object(v, depth)?,
                _ => return Err(Stop::NotPlain), // BigInt, and anything else
            }
            if self.out.len() > MAX_TEXT {
                return Err(Stop::NotPlain);
            }
            Ok(true)
        }
    }

    /// Writes the string `s` quoted, unless the text would pass
    /// [`MAX_TEXT`] with it (its quoted form is at least as long): checked
    /// before, so that no long string is copied outside the heap limit.
    fn quote(&mut self, s: &[u8]) -> Result<(), Stop> {
        if s.len() > MAX_TEXT.saturating_sub(self.out.len()) {
            return Err(Stop::NotPlain);
        }
        quote(s, &mut self.out);
        Ok(())
    }

    unsafe fn object(&mut self, v: qjs::JSValue, depth: usize) -> Result<(), Stop> {
        unsafe {
            let array = plain_object(self.ctx, &self.plain, &self.stack, v, depth)?;
            self.stack.push(qjs::JS_VALUE_GET_PTR(v));
            let written = if array {
                self.items(v, depth)
            } else {
                self.fields(v, depth)
            };
            self.stack.pop();
            written
        }
    }

    unsafe fn items(&mut self, v: qjs::JSValue, depth: usize) -> Result<(), Stop> {
        unsafe {
            let mut len = 0i64;
            // An array's length is a data property: no user code.
            if qjs::JS_GetLength(self.ctx, v, &mut len) < 0 {
                return Err(Stop::Thrown);
            }
            // Each item writes at least a byte: a longer array's text is.
            if len as usize > MAX_TEXT {
                return Err(Stop::NotPlain);
            }
            self.out.push(b'[');
            for i in 0..len as u32 {
                if i > 0 {
                    self.out.push(b',');
                }
                let atom = qjs::JS_NewAtomUInt32(self.ctx, i);
                if atom == qjs::JS_ATOM_NULL {
                    return Err(Stop::Thrown);
                }
                let own = own(self.ctx, v, atom);
                qjs::JS_FreeAtom(self.ctx, atom);
                // A hole reads undefined through the frozen prototype,
                // which JSON writes as null, as it writes what it leaves
                // out of an object.
                let written = match own? {
                    Own::Missing => false,
                    Own::Data(value) => {
                        let written = self.value(value, depth + 1);
                        qjs::JS_FreeValue(self.ctx, value);
                        written?
                    }
                };
                if !written {
                    self.out.extend_from_slice(b"null");
                    if self.out.len() > MAX_TEXT {
                        return Err(Stop::NotPlain);
                    }
                }
            }
            self.out.push(b']');
            Ok(())
        }
    }

    unsafe fn fields(&mut self, v: qjs::JSValue, depth: usize) -> Result<(), Stop> {
        unsafe {
            let keys = OwnKeys::of(self.ctx, v)?;
            self.out.push(b'{');
            let mut first = true;
            for atom in keys.atoms() {
                let value = match own(self.ctx, v, atom)? {
                    Own::Data(value) => value,
                    Own::Missing => continue, // not reachable for an ordinary object
                };
                // The key first, taken back if JSON leaves the value out.
                let mark = self.out.len();
                if !first {
                    self.out.push(b',');
                }
                let mut key_len = 0;
                let key = qjs::JS_AtomToCStringLen(self.ctx, &mut key_len, atom);
                if key.is_null() {
                    qjs::JS_FreeValue(self.ctx, value);
                    return Err(Stop::Thrown);
                }
                let quoted = self.quote(std::slice::from_raw_parts(
                    key.cast::<u8>(),
                    key_len as usize,
                ));
                qjs::JS_FreeCString(self.ctx, key);
                if let Err(stop) = quoted {
                    qjs::JS_FreeValue(self.ctx, value);
                    return Err(stop);
                }
                self.out.push(b':');
                let written = self.value(value, depth + 1);
                qjs::JS_FreeValue(self.ctx, value);
                if written? {
                    first = false;
                } else {
                    self.out.truncate(mark);
                }
            }
            self.out.push(b'}');
            Ok(())
        }
    }
}

/// A string as JSON.stringify quotes it, from QuickJS's UTF-8 of it (in
/// which a lone surrogate is the three bytes of its code point): `"` and
/// `\` escaped, control characters as `\b \t \n \f \r` or `\u00xx`, lone
/// surrogates as `\udxxx`, everything else as it is.
fn quote(s: &[u8], out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let unit = |out: &mut Vec<u8>, u: u32| {
        out.extend_from_slice(b"\\u");
        for shift in [12, 8, 4, 0] {
            out.push(HEX[(u >> shift & 0xf) as usize]);
        }
    };
    out.reserve(s.len() + 2);
    out.push(b'"');
    let mut i = 0;
    while i < s.len() {
        let b = s[i];
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0x08 => out.extend_from_slice(b"\\b"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            0x0c => out.extend_from_slice(b"\\f"),
            b'\r' => out.extend_from_slice(b"\\r"),
            0..0x20 => unit(out, u32::from(b)),
            // A surrogate's three bytes (U+D800..U+DFFF: ED A0..BF xx).
            0xed if i + 2 < s.len() && s[i + 1] >= 0xa0 => {
                let u = (u32::from(b) & 0x0f) << 12
                    | (u32::from(s[i + 1]) & 0x3f) << 6
                    | (u32::from(s[i + 2]) & 0x3f);
                unit(out, u);
                i += 3;
                continue;
            }
            _ => out.push(b),
        }
        i += 1;
    }
    out.push(b'"');
}
