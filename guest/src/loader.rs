//! Module resolution: the `marionette` module, and the modules of the graph
//! each script was loaded with.
//!
//! The host hands a script's whole graph over at once
//! (`script.load-modules`; `script.load` is a graph of one module): the
//! guest never asks the host for a module, and resolves only among what it
//! was given. A relative specifier (`./x.js`, `../lib/y.js`) resolves
//! against the importing module's path, within the importer's own graph and
//! never above its root; `marionette` is the API (declared when the VM
//! boots); every other specifier (a package, `node:fs`, a URL, an absolute
//! path, `std`) is refused with an error that says what to do instead.
//!
//! QuickJS keeps every module it compiled for the life of the VM, and finds
//! an imported module by name before it asks the loader. Each load is its
//! own graph, evaluated afresh (loading a script again replaces it; two
//! scripts never share a module's state), so each module gets a name no
//! module of this VM had before: its path the first time, then `path?2`,
//! `path?3`... Errors the host sees name the path ([`display`]).

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use rquickjs::loader::{ImportAttributes, Loader, Resolver};
use rquickjs::module::Declared;
use rquickjs::{Constructor, Ctx, Error, Module, Object, Result};

/// The one module that is not a script's: the API.
pub const API_MODULE: &str = "marionette";

/// Names QuickJS already has for something else: a module path equal to one
/// of them gets a suffix like any name used before.
const TAKEN: [&str; 2] = [API_MODULE, "<marionette>"];

/// One load's modules.
struct Graph {
    /// Path -> source; emptied when the graph is retired.
    sources: HashMap<String, Rc<str>>,
    /// Path -> the module's name in QuickJS.
    names: HashMap<String, String>,
    /// Whether the host gave one module only (`script.load`): then a
    /// relative import can only fail, and says how to give more.
    single: bool,
    /// Why its modules can no longer be loaded, once retired.
    retired: Option<&'static str>,
}

#[derive(Default)]
struct Table {
    graphs: HashMap<u64, Graph>,
    next_graph: u64,
    /// A module's name in QuickJS -> its graph and path.
    modules: HashMap<String, (u64, String)>,
    /// Path -> how many modules had it as their name's stem.
    uses: HashMap<String, u32>,
    /// Script name -> the graph of its current load.
    scripts: HashMap<String, u64>,
}

thread_local! {
    static TABLE: RefCell<Table> = RefCell::new(Table::default());
}

/// A graph registered for a load: its id, the entry's name in QuickJS and
/// its source.
pub struct Registered {
    pub graph: u64,
    pub name: String,
    pub source: Rc<str>,
}

/// Registers the modules of one load. With `check`, every path must be
/// normalised (`lib/util.js`: `/`-separated, relative to the graph's root,
/// no `.`, `..` or empty segment) and the entry a JavaScript module among
/// them; a single module loaded by name (`script.load`) is not checked, its
/// name being any script name.
///
/// # Errors
/// A message naming the path or the entry that is wrong.
pub fn register(
    entry: &str,
    modules: Vec<(String, String)>,
    check: bool,
) -> std::result::Result<Registered, String> {
    let single = modules.len() == 1;
    let mut sources = HashMap::with_capacity(modules.len());
    for (path, source) in modules {
        if check {
            check_path(&path)?;
        }
        if sources
            .insert(path.clone(), Rc::<str>::from(source))
            .is_some()
        {
            return Err(format!("the module path {path:?} is given twice"));
        }
    }
    let Some(source) = sources.get(entry).cloned() else {
        return Err(format!(
            "the entry {entry:?} is not among the modules given ({} of them)",
            sources.len()
        ));
    };
    if is_json(entry) {
        return Err(format!(
            "the entry {entry:?} is a JSON module; a script's entry is JavaScript"
        ));
    }
    TABLE.with(|t| {
        let mut t = t.borrow_mut();
        let t = &mut *t;
        let graph = t.next_graph;
        t.next_graph += 1;
        let mut names = HashMap::with_capacity(sources.len());
        for path in sources.keys() {
            let uses = t
                .uses
                .entry(path.clone())
                .or_insert_with(|| if TAKEN.contains(&path.as_str()) { 1 } else { 0 });
            *uses += 1;
            let name = if *uses == 1 {
                path.clone()
            } else {
                format!("{path}?{uses}")
            };
            t.modules.insert(name.clone(), (graph, path.clone()));
            names.insert(path.clone(), name);
        }
        let name = names[entry].clone();
        t.graphs.insert(
            graph,
            Graph {
                sources,
                names,
                single,
                retired: None,
            },
        );
        Ok(Registered {
            graph,
            name,
            source,
        })
    })
}

/// The load of `graph` as script `script` ended: on success it becomes the
/// script's graph and the graph it replaces is retired; a failed load's
/// graph is retired.
pub fn loaded(script: &str, graph: u64, ok: bool) {
    TABLE.with(|t| {
        let mut t = t.borrow_mut();
        let retire = if ok {
            t.scripts.insert(script.to_string(), graph)
        } else {
            Some(graph)
        };
        let why = if ok {
            "its script was loaded again since"
        } else {
            "its script failed to load"
        };
        if let Some(graph) = retire.and_then(|g| t.graphs.get_mut(&g)) {
            // Modules compiled already stay where QuickJS keeps them; the
            // sources of those never imported are dropped.
            graph.sources = HashMap::new();
            graph.retired = Some(why);
        }
    })
}

/// The path a module name stands for, when it is a script's module named
/// otherwise (`lib/util.js?2` is `lib/util.js`).
pub fn display(name: &str) -> Option<String> {
    TABLE.with(|t| t.borrow().modules.get(name).map(|(_, path)| path.clone()))
}

fn check_path(path: &str) -> std::result::Result<(), String> {
    let bad = |why: &str| Err(format!("the module path {path:?} {why}"));
    if path.is_empty() {
        return bad("is empty");
    }
    if path.starts_with('/') {
        return bad("is absolute; paths are relative to the root of the modules (lib/util.js)");
    }
    if path.contains('\\') {
        return bad("has a backslash; paths are separated by /");
    }
    if path.contains('\0') || path.contains('?') {
        return bad("has a character a module path may not have (NUL or ?)");
    }
    if path
        .split('/')
        .any(|s| s.is_empty() || s == "." || s == "..")
    {
        return bad("is not normalised (an empty, . or .. segment)");
    }
    Ok(())
}

fn is_json(path: &str) -> bool {
    path.ends_with(".json")
}

/// What a specifier is, for the words of its refusal.
enum Specifier<'a> {
    Api,
    Relative(&'a str),
    Absolute,
    Url,
    Bare,
}

fn classify(name: &str) -> Specifier<'_> {
    if name == API_MODULE {
        Specifier::Api
    } else if name.starts_with("./") || name.starts_with("../") || name == "." || name == ".." {
        Specifier::Relative(name)
    } else if name.starts_with('/') {
        Specifier::Absolute
    } else if name
        .split_once(':')
        .is_some_and(|(scheme, _)| !scheme.is_empty() && !scheme.contains('/'))
    {
        Specifier::Url
    } else {
        Specifier::Bare
    }
}

/// `specifier` resolved against the folder of `importer`; `None` when it
/// leads above the root.
fn join(importer: &str, specifier: &str) -> Option<String> {
    let mut parts: Vec<&str> = importer.split('/').collect();
    parts.pop(); // the importer's own file name
    for segment in specifier.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            s => parts.push(s),
        }
    }
    Some(parts.join("/"))
}

/// The path of a module of `graph` that `path` names, as TypeScript's
/// "bundler" resolution finds it: exactly; `x.js` written for `x.ts`;
/// an extension left out; a folder's `index`.
fn find(graph: &Graph, path: &str) -> Option<String> {
    let has = |p: &str| graph.names.contains_key(p);
    if has(path) {
        return Some(path.to_string());
    }
    let mut tries = Vec::new();
    if let Some(stem) = path.strip_suffix(".js") {
        tries.push(format!("{stem}.ts"));
    } else if let Some(stem) = path.strip_suffix(".mjs") {
        tries.push(format!("{stem}.mts"));
    } else if !path.rsplit('/').next().unwrap_or("").contains('.') {
        for ext in [".ts", ".mts", ".js", ".mjs", "/index.ts", "/index.js"] {
            tries.push(format!("{path}{ext}"));
        }
    }
    tries.into_iter().find(|p| has(p))
}

/// Where `specifier` is written in `source`, as a 1-based line and column:
/// its first occurrence as a string literal.
fn locate(source: &str, specifier: &str) -> Option<(u32, u32)> {
    let at = ['"', '\'']
        .iter()
        .filter_map(|q| source.find(&format!("{q}{specifier}{q}")))
        .min()?;
    let before = &source[..at];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    Some((line as u32, column as u32))
}

/// Throws a new `kind` error (`TypeError`, `SyntaxError`) with `message`,
/// pointing at `file` (line and column when known).
fn throw<'js>(
    ctx: &Ctx<'js>,
    kind: &str,
    message: String,
    file: Option<&str>,
    at: Option<(u32, u32)>,
) -> Error {
    let made = || -> Result<Object<'js>> {
        let ctor: Constructor = ctx.globals().get(kind)?;
        let error: Object = ctor.construct((message.clone(),))?;
        if let Some(file) = file {
            error.set("fileName", file)?;
            if let Some((line, column)) = at {
                error.set("lineNumber", line)?;
                error.set("columnNumber", column)?;
            }
        }
        Ok(error)
    };
    match made() {
        Ok(error) => ctx.throw(error.into_value()),
        Err(e) => e,
    }
}

/// The resolver and loader of every VM: see the module's docs.
pub struct Graphs;

impl Resolver for Graphs {
    fn resolve<'js>(
        &mut self,
        ctx: &Ctx<'js>,
        base: &str,
        name: &str,
        attributes: Option<ImportAttributes<'js>>,
    ) -> Result<String> {
        // A module read from bytecode has no attributes to give (see
        // `vm::reading_bytecode`); one compiled from source that has some
        // is not cached.
        let attributes = attributes.filter(|_| !crate::vm::reading_bytecode());
        if attributes.is_some() {
            crate::vm::note_attributes(base);
        }
        let json = attributes.as_ref().map_or(Ok(false), json_attribute);
        let resolved = TABLE.with(|t| -> std::result::Result<_, (String, Option<_>)> {
            let t = t.borrow();
            let importer = t.modules.get(base);
            let from = importer.map_or_else(|| "code that is not a script's module".to_string(), |(_, p)| p.clone());
            let refuse = |why: String| {
                let at = importer.and_then(|(g, p)| {
                    let source = t.graphs.get(g)?.sources.get(p)?;
                    locate(source, name).map(|at| (p.clone(), at))
                });
                let file = importer.map(|(_, p)| p.clone());
                Err((
                    format!("cannot import {name:?} from {from}: {why}"),
                    file.map(|f| (f, at.map(|(_, at)| at))),
                ))
            };
            let json = match json {
                Ok(json) => json,
                Err(why) => return refuse(why),
            };
            let relative = match classify(name) {
                Specifier::Api if json => {
                    return refuse(format!("{API_MODULE:?} is not a JSON module"));
                }
                Specifier::Api => return Ok(API_MODULE.to_string()),
                Specifier::Relative(r) => r,
                Specifier::Absolute => {
                    return refuse(format!(
                        "a sandbox has no filesystem; import the script's own modules by a relative path (\"./util.js\"), or \"{API_MODULE}\""
                    ));
                }
                Specifier::Url => {
                    return refuse(format!(
                        "a sandbox has no Node.js or QuickJS built-in modules and loads nothing from URLs; import the script's own modules by a relative path (\"./util.js\"), or \"{API_MODULE}\""
                    ));
                }
                Specifier::Bare => {
                    let entry = importer.map_or("main.js", |(_, p)| p.as_str());
                    return refuse(format!(
                        "a bare specifier names a package, and a sandbox has no packages (no node_modules, no network). Bundle the script and its packages into one module first, for example with esbuild: `npx esbuild {entry} --bundle --format=esm --platform=browser --external:{API_MODULE} --outfile=bundle.js`, then run bundle.js"
                    ));
                }
            };
            let Some((graph_id, importer_path)) = importer else {
                return refuse("relative imports resolve only from a script's own modules".into());
            };
            let graph = &t.graphs[graph_id];
            if let Some(why) = graph.retired {
                return refuse(format!("the module graph it belongs to is gone ({why})"));
            }
            let Some(path) = join(importer_path, relative) else {
                return refuse("it leads outside the root of the script's modules".into());
            };
            let Some(found) = find(graph, &path) else {
                let hint = if graph.single {
                    " (the script was loaded as a single module; load it together with the modules it imports)"
                } else {
                    ""
                };
                return refuse(format!("there is no module {path:?} among the script's modules{hint}"));
            };
            match (is_json(&found), json) {
                (true, false) => {
                    return refuse(format!(
                        "{found:?} is a JSON module: import it with {{ type: \"json\" }}"
                    ));
                }
                (false, true) => {
                    return refuse(format!("{found:?} is not a JSON module (only .json files are)"));
                }
                _ => {}
            }
            Ok(graph.names[&found].clone())
        });
        resolved.map_err(|(message, at)| {
            let (file, at) = at.map_or((None, None), |(f, at)| (Some(f), at));
            throw(ctx, "TypeError", message, file.as_deref(), at)
        })
    }
}

/// Whether the import attributes say `{ type: "json" }`; the refusal of
/// any other attribute or type.
fn json_attribute(attributes: &ImportAttributes<'_>) -> std::result::Result<bool, String> {
    let unreadable = |e: Error| format!("its import attributes cannot be read: {e}");
    for key in attributes.keys() {
        let key = key.map_err(unreadable)?;
        if key != "type" {
            return Err(format!(
                "the import attribute {key:?} is not supported (only type: \"json\")"
            ));
        }
    }
    match attributes.get_type().map_err(unreadable)? {
        None => Ok(false),
        Some(t) if t == "json" => Ok(true),
        Some(t) => Err(format!(
            "the module type {t:?} is not supported (only \"json\")"
        )),
    }
}

impl Loader for Graphs {
    fn load<'js>(
        &mut self,
        ctx: &Ctx<'js>,
        name: &str,
        _attributes: Option<ImportAttributes<'js>>,
    ) -> Result<Module<'js, Declared>> {
        // Only names the resolver returned come here, and it returns the
        // names of registered modules only.
        let found = TABLE.with(|t| {
            let t = t.borrow();
            let (graph, path) = t.modules.get(name)?;
            let source = t.graphs.get(graph)?.sources.get(path)?.clone();
            Some((path.clone(), source))
        });
        let Some((path, source)) = found else {
            return Err(throw(
                ctx,
                "TypeError",
                format!(
                    "the module {name:?} is not available (its script was loaded again or failed to load)"
                ),
                None,
                None,
            ));
        };
        if is_json(&path) {
            if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(&source) {
                let at = (e.line() as u32, e.column() as u32);
                return Err(throw(
                    ctx,
                    "SyntaxError",
                    format!("{path} is not valid JSON: {e}"),
                    Some(&path),
                    Some(at),
                ));
            }
            let literal = serde_json::to_string(&*source).unwrap_or_default();
            let module = format!("export default JSON.parse({literal});\n");
            return crate::vm::declare(ctx, name, &module);
        }
        crate::vm::declare(ctx, name, &source)
    }
}
