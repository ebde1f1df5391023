//! TypeScript, run as JavaScript: the types erased on the host by
//! `swc_ts_fast_strip`, the stripper Node.js runs `.ts` files with. It puts
//! whitespace where the types were, so every line and column of the
//! JavaScript left is where it was in the `.ts` file: errors and stacks
//! point into the TypeScript without a source map.
//!
//! TypeScript that cannot be erased because it stands for code (`enum`,
//! `namespace`, parameter properties, `import x = require()`, `export =`,
//! `<T>x` assertions) is refused with its location and the reason, as
//! Node.js refuses it; TypeScript's own `erasableSyntaxOnly` option flags
//! the same constructs in an editor.

use std::sync::{Arc, Mutex};

use swc_common::errors::{DiagnosticBuilder, Emitter, HANDLER, Handler};
use swc_common::sync::Lrc;
use swc_common::{GLOBALS, Globals, SourceMap};
use swc_ts_fast_strip::{ErrorCode, Mode, Options, operate};

use crate::error::ScriptError;

/// `source` (the module `path`) with its types erased.
///
/// # Errors
/// A `SyntaxError` at the place of the first problem: TypeScript that does
/// not parse, or that cannot be erased (see the module's docs).
pub(crate) fn strip(path: &str, source: &str) -> Result<String, ScriptError> {
    let cm: Lrc<SourceMap> = Default::default();
    let found = Arc::new(Mutex::new(Vec::new()));
    let handler = Handler::with_emitter(
        false,
        false,
        Box::new(Collect {
            found: found.clone(),
        }),
    );
    let options = Options {
        module: Some(true),
        filename: Some(path.to_string()),
        mode: Mode::StripOnly,
        ..Options::default()
    };
    let result = GLOBALS.set(&Globals::new(), || {
        HANDLER.set(&handler, || {
            operate(&cm, &handler, source.to_string(), options)
        })
    });
    let failure = match result {
        Ok(output) => return Ok(output.code),
        Err(e) => e,
    };
    let found = std::mem::take(&mut *found.lock().unwrap_or_else(|p| p.into_inner()));
    let first = found.first();
    let (line, column) = first
        .and_then(|(_, lo)| *lo)
        .map(|lo| {
            let at = cm.lookup_char_pos(lo);
            (Some(at.line as u32), Some(at.col.0 as u32 + 1))
        })
        .unwrap_or((None, None));
    let mut message = first.map_or_else(|| failure.message.clone(), |(m, _)| m.clone());
    if matches!(failure.code, ErrorCode::UnsupportedSyntax) {
        message.push_str(
            ": marionette runs TypeScript with its types erased, keeping every line and column \
             where it was, and refuses what would need code generated (use an object or a union \
             of literals for an enum, a module for a namespace, assignments in the constructor \
             for parameter properties; TypeScript's erasableSyntaxOnly option flags these)",
        );
    }
    if found.len() > 1 {
        message.push_str(&format!(" (and {} more)", found.len() - 1));
    }
    Err(ScriptError {
        name: "SyntaxError".into(),
        message,
        stack: None,
        file: Some(path.to_string()),
        line,
        column,
    })
}

/// A diagnostic of the stripper: its words and where it starts.
type Diagnostic = (String, Option<swc_common::BytePos>);

/// Keeps the stripper's diagnostics.
struct Collect {
    found: Arc<Mutex<Vec<Diagnostic>>>,
}

impl Emitter for Collect {
    fn emit(&mut self, db: &mut DiagnosticBuilder<'_>) {
        let lo = db.span.primary_span().map(|s| s.lo);
        self.found
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((db.message(), lo));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_become_whitespace_and_positions_stay() {
        let ts = "const n: number = 1;\nfunction f<T>(x: T): T { return x as T; }\nexport default f(n);\n";
        let js = strip("a.ts", ts).unwrap();
        assert_eq!(js.len(), ts.len(), "{js}");
        assert_eq!(js.lines().count(), ts.lines().count());
        assert!(js.starts_with("const n         = 1;"), "{js}");
        assert!(js.contains("return x     ;"), "{js}");
    }

    #[test]
    fn an_enum_is_refused_with_its_place_and_the_reason() {
        let e = strip("lib/colors.ts", "const a = 1;\n  enum Color { Red }\n").unwrap_err();
        assert_eq!(e.name, "SyntaxError");
        assert_eq!(e.file.as_deref(), Some("lib/colors.ts"));
        assert_eq!((e.line, e.column), (Some(2), Some(3)), "{e}");
        assert!(e.message.contains("enum"), "{e}");
        assert!(e.message.contains("erasableSyntaxOnly"), "{e}");
    }

    #[test]
    fn namespaces_and_parameter_properties_are_refused() {
        let e = strip("n.ts", "namespace N { export const x = 1; }\n").unwrap_err();
        assert!(e.message.contains("namespace"), "{e}");
        let e = strip(
            "p.ts",
            "class P {\n  constructor(private x: number) {}\n}\n",
        )
        .unwrap_err();
        assert!(e.message.contains("parameter property"), "{e}");
        assert_eq!(e.line, Some(2), "{e}");
    }

    #[test]
    fn a_syntax_error_names_its_place() {
        let e = strip("bad.ts", "let x: = 1;\n").unwrap_err();
        assert_eq!(e.name, "SyntaxError");
        assert_eq!(e.line, Some(1), "{e}");
    }
}
