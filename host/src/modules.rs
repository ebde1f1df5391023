//! A script's modules by path: what [`Sandbox::load_modules`] hands the
//! guest at once.
//!
//! The guest resolves a script's imports only among the modules it was
//! given (sans-IO: it never asks the host for a file), so a module graph is
//! plain data: paths and sources. `.ts` and `.mts` modules have their types
//! erased on the host first (feature `typescript`, on by default), keeping
//! every line and column where it was.
//!
//! ```no_run
//! # async fn demo(sandbox: marionette::Sandbox) -> marionette::Result<()> {
//! use marionette::Modules;
//!
//! let modules = Modules::new()
//!     .with("main.js", r#"import { double } from "./lib/util.js";
//! import prices from "./data/prices.json" with { type: "json" };
//! export default () => double(prices.apple);"#)
//!     .with("lib/util.js", "export const double = (x) => 2 * x;")
//!     .with("data/prices.json", r#"{"apple": 21}"#);
//! sandbox.load_modules("main.js", modules).await?;
//! # Ok(()) }
//! ```
//!
//! [`Sandbox::load_modules`]: crate::Sandbox::load_modules

use std::collections::BTreeMap;

use crate::error::ScriptError;

/// The modules of one script, by path.
///
/// Paths are `/`-separated and relative to the graph's root, without `.`,
/// `..` or empty segments and without `?`: `main.ts`, `lib/util.js`,
/// `data/prices.json`. A module imports another by a relative specifier
/// (`./util.js`, `../data/prices.json`), resolved against its own path;
/// nothing above the root, no package and no file outside the map is
/// reachable. `.json` modules are imported `with { type: "json" }`.
/// TypeScript's resolution applies: `./util.js` finds `util.ts`, and
/// `./util` finds `util.ts`, `util.js` or `util/index.ts`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Modules {
    by_path: BTreeMap<String, String>,
}

impl Modules {
    /// No modules.
    pub fn new() -> Modules {
        Modules::default()
    }

    /// Adds (or replaces) the module `path`; returns the source it replaced.
    pub fn insert(&mut self, path: impl Into<String>, source: impl Into<String>) -> Option<String> {
        self.by_path.insert(path.into(), source.into())
    }

    /// [`insert`](Self::insert), as a builder.
    #[must_use]
    pub fn with(mut self, path: impl Into<String>, source: impl Into<String>) -> Modules {
        self.insert(path, source);
        self
    }

    /// The source of the module `path`.
    pub fn get(&self, path: &str) -> Option<&str> {
        self.by_path.get(path).map(String::as_str)
    }

    /// How many modules there are.
    pub fn len(&self) -> usize {
        self.by_path.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.by_path.is_empty()
    }

    /// The modules' paths, in order.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.by_path.keys().map(String::as_str)
    }

    /// The bytes of all the sources together.
    pub fn source_bytes(&self) -> usize {
        self.by_path.values().map(String::len).sum()
    }

    /// Each module as the guest gets it: TypeScript stripped.
    pub(crate) fn prepared(self) -> Result<Vec<(String, String)>, ScriptError> {
        self.by_path
            .into_iter()
            .map(|(path, source)| {
                let source = prepare(&path, source)?;
                Ok((path, source))
            })
            .collect()
    }
}

impl<P: Into<String>, S: Into<String>> FromIterator<(P, S)> for Modules {
    fn from_iter<I: IntoIterator<Item = (P, S)>>(iter: I) -> Modules {
        let mut modules = Modules::new();
        for (path, source) in iter {
            modules.insert(path, source);
        }
        modules
    }
}

/// `source` of the module `path` as the guest gets it: JavaScript and JSON
/// as they are, TypeScript (`.ts`, `.mts`) with its types erased.
///
/// # Errors
/// A `SyntaxError` naming the place, for TypeScript that does not parse or
/// cannot be erased, or TypeScript in a build without the `typescript`
/// feature.
pub(crate) fn prepare(path: &str, source: String) -> Result<String, ScriptError> {
    if !is_typescript(path) {
        return Ok(source);
    }
    #[cfg(feature = "typescript")]
    {
        crate::typescript::strip(path, &source)
    }
    #[cfg(not(feature = "typescript"))]
    {
        Err(ScriptError {
            name: "SyntaxError".into(),
            message: "TypeScript is loaded only by a marionette built with its `typescript` feature; strip the types first (tsc, esbuild) or turn the feature on".into(),
            stack: None,
            file: Some(path.to_string()),
            line: None,
            column: None,
        })
    }
}

fn is_typescript(path: &str) -> bool {
    path.ends_with(".ts") || path.ends_with(".mts")
}
