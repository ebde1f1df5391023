//! The runtime's bytecode cache: a script loaded again (into another
//! sandbox of the runtime, or into the instance rebuilt after a trap) is
//! read from the bytecode its first load made, and behaves exactly as the
//! script compiled from its source: results, errors and their locations,
//! module graphs, TypeScript. A changed source is compiled again.

use std::sync::Arc;

use marionette::{
    BytecodeStats, Error, Modules, Policy, Runtime, RuntimeOptions, Sandbox, TaskOptions,
};
use serde_json::{Value as Json, json};

/// A runtime of its own, so that its cache's counts are this test's.
fn runtime() -> Arc<Runtime> {
    Runtime::new(&RuntimeOptions {
        disk_cache: false,
        ..RuntimeOptions::default()
    })
    .unwrap()
}

async fn sandbox(runtime: &Arc<Runtime>) -> Sandbox {
    Sandbox::with_runtime(runtime.clone(), Policy::default())
        .await
        .unwrap()
}

/// Exercises what bytecode must keep: functions and their source text,
/// classes, closures, template objects, regular expressions, async code,
/// module state, and an error's location.
const SCRIPT: &str = r#"import { turns } from "marionette";
let calls = 0;
const tag = (strings, ...values) => strings.raw.join("|") + values.join(",");
class Point { #x; constructor(x) { this.#x = x; } get x() { return this.#x; } }
export function add(a, b) { calls += 1; return a + b; }
export function shapes() {
  return {
    calls,
    source: add.toString(),
    template: tag`a${1}b${2}c`,
    regex: "2026-12-02".replace(/(\d+)-(\d+)-(\d+)/u, "$3/$2/$1"),
    point: new Point(7).x,
    turn: typeof turns.newTurn,
  };
}
export async function later(x) { await null; return x * 2; }
export function fail() {
  throw new RangeError("deliberately, on line 18");
}
"#;

async fn outcomes(sb: &Sandbox, name: &str) -> Vec<Json> {
    let call = |f: &'static str, args: Json| {
        let args = args.as_array().unwrap().clone();
        async move { sb.call(name, f, &args, TaskOptions::default()).await }
    };
    let mut out = vec![
        call("add", json!([1, 2])).await.unwrap(),
        call("shapes", json!([])).await.unwrap(),
        call("later", json!([21])).await.unwrap(),
    ];
    match call("fail", json!([])).await {
        Err(Error::Script { error, .. }) => out.push(json!({
            "name": error.name,
            "message": error.message,
            "file": error.file,
            "line": error.line,
            "column": error.column,
            "stack": error.stack,
        })),
        other => panic!("fail() must throw, got {other:?}"),
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_loaded_into_another_sandbox_reads_its_bytecode_and_behaves_as_parsed() {
    let runtime = runtime();
    let first = sandbox(&runtime).await;
    let exports_first = first.load("shapes.js", SCRIPT).await.unwrap();
    assert_eq!(
        runtime.bytecode_stats(),
        BytecodeStats {
            hits: 0,
            misses: 1,
            entries: 1,
            ..runtime.bytecode_stats()
        },
        "the first load compiles the script and keeps its bytecode"
    );
    let parsed = outcomes(&first, "shapes.js").await;

    let second = sandbox(&runtime).await;
    let exports_second = second.load("shapes.js", SCRIPT).await.unwrap();
    assert_eq!(runtime.bytecode_stats().hits, 1, "the second load read it");
    let read = outcomes(&second, "shapes.js").await;

    assert_eq!(exports_first, exports_second);
    assert_eq!(parsed, read);
    // What was compared says what it should.
    assert_eq!(read[0], json!(3));
    assert_eq!(
        read[1]["source"],
        json!("function add(a, b) { calls += 1; return a + b; }")
    );
    assert_eq!(read[1]["template"], json!("a|b|c1,2"));
    assert_eq!(read[1]["regex"], json!("02/12/2026"));
    assert_eq!(read[2], json!(42));
    assert_eq!(read[3]["file"], json!("shapes.js"));
    assert_eq!(read[3]["line"], json!(18));
    assert!(
        read[3]["stack"].as_str().unwrap().contains("shapes.js:18"),
        "{}",
        read[3]["stack"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_source_is_compiled_again_not_served_stale() {
    let runtime = runtime();
    let one = sandbox(&runtime).await;
    one.load("v.js", "export default () => 1;").await.unwrap();
    let two = sandbox(&runtime).await;
    two.load("v.js", "export default () => 2;").await.unwrap();
    assert_eq!(runtime.bytecode_stats().hits, 0);
    assert_eq!(runtime.bytecode_stats().misses, 2);
    let main = |sb: Sandbox| async move {
        sb.run_main("v.js", &json!({}), TaskOptions::default())
            .await
            .unwrap()
    };
    assert_eq!(main(two).await, json!(2));
    // Back to the first source: its bytecode, not the second's.
    let three = sandbox(&runtime).await;
    three.load("v.js", "export default () => 1;").await.unwrap();
    assert_eq!(runtime.bytecode_stats().hits, 1);
    assert_eq!(main(three).await, json!(1));
    // A script of the same source under another name is another unit.
    let four = sandbox(&runtime).await;
    four.load("w.js", "export default () => 1;").await.unwrap();
    assert_eq!(runtime.bytecode_stats().misses, 3);
}

/// Each `s{i}.js`'s first `next()` answers `i` (its counter at 1).
async fn first_calls_count_once(sb: &Sandbox) {
    for i in 0..5 {
        let out = sb
            .call(&format!("s{i}.js"), "next", &[], TaskOptions::default())
            .await
            .unwrap();
        assert_eq!(out, json!(i));
    }
}

const RECURSE: &str = "export function recurse(n) { return recurse(n + 1) + 1; }";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trap_reloads_every_script_from_the_cache() {
    let runtime = runtime();
    let sb = sandbox(&runtime).await;
    sb.load("recurse.js", RECURSE).await.unwrap();
    for i in 0..5 {
        sb.load(
            format!("s{i}.js"),
            format!("let n = 0; export function next() {{ n += 1; return n * {i}; }}"),
        )
        .await
        .unwrap();
    }
    assert_eq!(runtime.bytecode_stats().misses, 6);
    assert_eq!(runtime.bytecode_stats().hits, 0);
    first_calls_count_once(&sb).await;
    let trapped = sb
        .call("recurse.js", "recurse", &[json!(0)], TaskOptions::default())
        .await;
    assert!(matches!(trapped, Err(Error::Trapped { .. })), "{trapped:?}");
    // The rebuilt instance reloaded all six from their bytecode, their
    // state starting over.
    first_calls_count_once(&sb).await;
    assert_eq!(runtime.bytecode_stats().hits, 6);
    assert_eq!(runtime.bytecode_stats().misses, 6);
}

fn graph() -> Modules {
    let mut m = Modules::new();
    m.insert(
        "main.js",
        "import { double } from './lib/util.ts';\n\
         import data from './data.json' with { type: 'json' };\n\
         import { boom } from './lib/boom.js';\n\
         export default (input) => ({ twice: double(input.n), name: data.name });\n\
         export function explode() { return boom(); }\n",
    );
    m.insert(
        "lib/util.ts",
        "export function double(n: number): number {\n  return n * 2;\n}\n",
    );
    m.insert(
        "lib/boom.js",
        "export function boom() {\n  // the line below throws\n  throw new Error('boom in a module');\n}\n",
    );
    m.insert("data.json", r#"{"name": "graph"}"#);
    m
}

/// A module without attributes (cached) importing one with them (not
/// cached): the second is compiled from its source while the first is
/// read, and its JSON import must keep its attributes.
fn nested() -> Modules {
    let mut m = Modules::new();
    m.insert(
        "main.js",
        "import { config } from './lib/config.js';\nexport default () => config.name;\n",
    );
    m.insert(
        "lib/config.js",
        "import data from '../data.json' with { type: 'json' };\nexport const config = data;\n",
    );
    m.insert("data.json", r#"{"name": "nested"}"#);
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_read_from_bytecode_imports_one_compiled_with_its_attributes() {
    let runtime = runtime();
    for _ in 0..2 {
        let sb = sandbox(&runtime).await;
        sb.load_modules("main.js", nested()).await.unwrap();
        let out = sb
            .run_main("main.js", &json!({}), TaskOptions::default())
            .await
            .unwrap();
        assert_eq!(out, json!("nested"));
    }
    assert_eq!(runtime.bytecode_stats().hits, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn module_graphs_and_typescript_read_from_bytecode_behave_as_parsed() {
    let runtime = runtime();
    let mut results = Vec::new();
    for _ in 0..2 {
        let sb = sandbox(&runtime).await;
        sb.load_modules("main.js", graph()).await.unwrap();
        let main = sb
            .run_main("main.js", &json!({"n": 21}), TaskOptions::default())
            .await
            .unwrap();
        let error = match sb
            .call("main.js", "explode", &[], TaskOptions::default())
            .await
        {
            Err(Error::Script { error, .. }) => {
                json!([error.message, error.file, error.line])
            }
            other => panic!("explode() must throw, got {other:?}"),
        };
        results.push((main, error));
    }
    assert_eq!(runtime.bytecode_stats().misses, 1);
    assert_eq!(runtime.bytecode_stats().hits, 1);
    assert_eq!(results[0], results[1]);
    assert_eq!(results[1].0, json!({"twice": 42, "name": "graph"}));
    assert_eq!(results[1].1, json!(["boom in a module", "lib/boom.js", 3]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_that_fails_to_compile_reports_the_same_error_every_time() {
    let runtime = runtime();
    let mut errors = Vec::new();
    for _ in 0..2 {
        let sb = sandbox(&runtime).await;
        match sb
            .load("bad.js", "export function f() {\n  return 1 +;\n}\n")
            .await
        {
            Err(Error::Script { error, .. }) => {
                errors.push(json!([error.name, error.file, error.line]))
            }
            other => panic!("a syntax error must fail the load, got {other:?}"),
        }
    }
    assert_eq!(errors[0], errors[1]);
    assert_eq!(errors[0], json!(["SyntaxError", "bad.js", 2]));
    assert_eq!(runtime.bytecode_stats().hits, 0, "nothing to read");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runtime_without_the_cache_compiles_every_load() {
    let runtime = Runtime::new(&RuntimeOptions {
        disk_cache: false,
        bytecode_cache: 0,
        ..RuntimeOptions::default()
    })
    .unwrap();
    for _ in 0..2 {
        let sb = sandbox(&runtime).await;
        sb.load("shapes.js", SCRIPT).await.unwrap();
        assert_eq!(outcomes(&sb, "shapes.js").await[0], json!(3));
    }
    assert_eq!(runtime.bytecode_stats(), BytecodeStats::default());
}
