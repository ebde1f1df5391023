//! Module graphs: a script of several modules, loaded at once
//! (`Sandbox::load_modules`), its relative imports resolved among them;
//! JSON modules, dynamic `import()`, cycles, TypeScript, and errors that
//! name the right file and line in every module.

use marionette::{Error, Modules, Policy, Sandbox, ScriptError, TaskOptions};
use serde_json::{Value as Json, json};

async fn sandbox() -> Sandbox {
    Sandbox::new(Policy::default()).await.unwrap()
}

async fn run(sb: &Sandbox, name: &str) -> marionette::Result<Json> {
    sb.run_main(name, &json!({}), TaskOptions::default()).await
}

fn script_error(r: marionette::Result<impl std::fmt::Debug>) -> ScriptError {
    match r {
        Err(Error::Script { error, .. }) => *error,
        other => panic!("expected a script error, got {other:?}"),
    }
}

/// A project: an entry, a library in a folder that imports from a sibling
/// folder, a JSON file, and a module only `import()` loads.
fn project() -> Modules {
    Modules::new()
        .with(
            "main.js",
            r#"import { total } from "./lib/cart.js";
import prices from "./data/prices.json" with { type: "json" };
export default async function main() {
  const { describe } = await import("./lib/late.js");
  return { total: total(["apple", "pear"]), apple: prices.apple, late: describe(prices) };
}
"#,
        )
        .with(
            "lib/cart.js",
            r#"import prices from "../data/prices.json" with { type: "json" };
import { sum } from "../util/math.js";
export const total = (items) => sum(items.map((i) => prices[i]));
"#,
        )
        .with(
            "util/math.js",
            "export const sum = (xs) => xs.reduce((a, b) => a + b, 0);\n",
        )
        .with(
            "lib/late.js",
            "export const describe = (o) => Object.keys(o).join(',');\n",
        )
        .with("data/prices.json", r#"{"apple": 3, "pear": 4}"#)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relative_imports_json_and_dynamic_import_resolve_among_the_modules_given() {
    let sb = sandbox().await;
    let exports = sb.load_modules("main.js", project()).await.unwrap();
    assert!(exports.iter().any(|e| e.name == "default"));
    assert_eq!(
        run(&sb, "main.js").await.unwrap(),
        json!({"total": 7, "apple": 3, "late": "apple,pear"})
    );
    // One JSON module, one instance: both importers see the same object.
    let same = Modules::new()
        .with(
            "main.js",
            r#"import a from "./d.json" with { type: "json" };
import { b } from "./other.js";
export default () => a === b;"#,
        )
        .with(
            "other.js",
            r#"import b from "./d.json" with { type: "json" }; export { b };"#,
        )
        .with("d.json", "[1, 2]");
    sb.load_modules("main.js", same).await.unwrap();
    assert_eq!(run(&sb, "main.js").await.unwrap(), json!(true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_cycles_follow_es_semantics() {
    let sb = sandbox().await;
    // a imports b imports a: b's functions use a's bindings once they exist.
    let cycle = Modules::new()
        .with(
            "a.js",
            r#"import { fromB } from "./b.js";
export const name = "a";
export default () => fromB();"#,
        )
        .with(
            "b.js",
            r#"import { name } from "./a.js";
export const fromB = () => "b sees " + name;"#,
        );
    sb.load_modules("a.js", cycle).await.unwrap();
    assert_eq!(run(&sb, "a.js").await.unwrap(), json!("b sees a"));

    // b's top level runs first and reads a's binding before a initialised
    // it: the temporal dead zone's ReferenceError, in b.js (QuickJS places
    // an imported binding's check at the module's start, line 1).
    let early = Modules::new()
        .with(
            "a.js",
            "import \"./b.js\";\nexport const name = \"a\";\nexport default () => 1;",
        )
        .with(
            "b.js",
            "import { name } from \"./a.js\";\n\nexport const upper = name.toUpperCase();",
        );
    let e = script_error(sb.load_modules("a.js", early).await);
    assert_eq!(e.name, "ReferenceError", "{e}");
    assert_eq!(e.message, "name is not initialized", "{e}");
    assert_eq!(e.file.as_deref(), Some("b.js"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_name_the_file_and_line_in_every_module() {
    let sb = sandbox().await;
    let modules = Modules::new()
        .with(
            "main.js",
            "import { check } from \"./lib/check.js\";\nexport default () => check(-1);\n",
        )
        .with(
            "lib/check.js",
            "export function check(n) {\n  if (n < 0) {\n    throw new RangeError(\"negative: \" + n);\n  }\n  return n;\n}\n",
        );
    sb.load_modules("main.js", modules).await.unwrap();
    let e = script_error(run(&sb, "main.js").await);
    assert_eq!(e.name, "RangeError");
    assert_eq!(
        (e.file.as_deref(), e.line),
        (Some("lib/check.js"), Some(3)),
        "{e}"
    );
    let stack = e.stack.unwrap_or_default();
    assert!(stack.contains("at check (lib/check.js:3:"), "{stack}");
    assert!(stack.contains("main.js:2:"), "{stack}");

    // A syntax error in a module the entry imports names that module.
    let broken = Modules::new()
        .with(
            "main.js",
            "import \"./lib/ok.js\";\nexport default () => 1;",
        )
        .with("lib/ok.js", "import \"./broken.js\";")
        .with(
            "lib/broken.js",
            "export const a = 1;\n\nexport const b = ;\n",
        );
    let e = script_error(sb.load_modules("main.js", broken).await);
    assert_eq!(e.name, "SyntaxError");
    assert_eq!(
        (e.file.as_deref(), e.line),
        (Some("lib/broken.js"), Some(3)),
        "{e}"
    );

    // So does JSON that does not parse.
    let bad_json = Modules::new()
        .with(
            "main.js",
            "import d from \"./d.json\" with { type: \"json\" };\nexport default () => d;",
        )
        .with("d.json", "{\n  \"a\": 1,\n  \"b\": \n}\n");
    let e = script_error(sb.load_modules("main.js", bad_json).await);
    assert_eq!(e.name, "SyntaxError");
    assert_eq!(
        (e.file.as_deref(), e.line),
        (Some("d.json"), Some(4)),
        "{e}"
    );

    // An import of a module that is not there: the importer, the line of
    // the import, the path it looked for.
    let missing = Modules::new()
        .with(
            "main.js",
            "import { a } from \"./lib/a.js\";\nexport default () => a;",
        )
        .with(
            "lib/a.js",
            "// the helper\nimport { b } from \"./b.js\";\nexport const a = b;",
        );
    let e = script_error(sb.load_modules("main.js", missing).await);
    assert_eq!(e.name, "TypeError");
    assert_eq!(
        (e.file.as_deref(), e.line),
        (Some("lib/a.js"), Some(2)),
        "{e}"
    );
    assert!(e.message.contains("\"lib/b.js\""), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bare_specifier_is_refused_with_how_to_bundle() {
    let sb = sandbox().await;
    let e = script_error(
        sb.load(
            "app.js",
            "import _ from \"lodash\";\nexport default () => _;",
        )
        .await,
    );
    assert_eq!(e.name, "TypeError");
    assert!(e.message.contains("\"lodash\""), "{e}");
    assert!(e.message.contains("esbuild"), "{e}");
    assert!(e.message.contains("--bundle"), "{e}");
    assert_eq!(
        (e.file.as_deref(), e.line),
        (Some("app.js"), Some(1)),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_module_needs_its_type_and_only_json_has_it() {
    let sb = sandbox().await;
    let untyped = Modules::new()
        .with(
            "main.js",
            "import d from \"./d.json\";\nexport default () => d;",
        )
        .with("d.json", "{}");
    let e = script_error(sb.load_modules("main.js", untyped).await);
    assert!(e.message.contains("{ type: \"json\" }"), "{e}");
    let typed_js = Modules::new()
        .with(
            "main.js",
            "import d from \"./x.js\" with { type: \"json\" };\nexport default () => d;",
        )
        .with("x.js", "export default 1;");
    let e = script_error(sb.load_modules("main.js", typed_js).await);
    assert!(e.message.contains("not a JSON module"), "{e}");
    let css = Modules::new()
        .with(
            "main.js",
            "import d from \"./x.css\" with { type: \"css\" };\nexport default () => d;",
        )
        .with("x.css", "");
    let e = script_error(sb.load_modules("main.js", css).await);
    assert!(e.message.contains("\"css\" is not supported"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typescript_modules_run_with_their_lines_kept() {
    let sb = sandbox().await;
    let modules = Modules::new()
        .with(
            "main.ts",
            r#"import type { Item } from "./types.ts";
import { price } from "./lib/price";
import data from "./data.json" with { type: "json" };

interface Input { name?: string }

export default function main(input: Input): number {
  const items: Item[] = data.items as Item[];
  return items.reduce((sum: number, item: Item) => sum + price(item), 0);
}
"#,
        )
        .with(
            "types.ts",
            "export interface Item { name: string; cents: number }\n",
        )
        .with(
            "lib/price.ts",
            r#"import type { Item } from "../types.js";

export function price<T extends Item>(item: T): number {
  if (item.cents < 0) {
    throw new RangeError(`negative price: ${item.name as string}`);
  }
  return item.cents!;
}
"#,
        )
        .with(
            "data.json",
            r#"{"items": [{"name": "a", "cents": 5}, {"name": "b", "cents": -1}]}"#,
        );
    sb.load_modules("main.ts", modules).await.unwrap();
    let e = script_error(run(&sb, "main.ts").await);
    assert_eq!(e.message, "negative price: b");
    assert_eq!(
        (e.file.as_deref(), e.line, e.column),
        (Some("lib/price.ts"), Some(5), Some(15)),
        "{e}"
    );
    assert!(
        e.stack.unwrap_or_default().contains("main.ts:9:"),
        "the caller's line too"
    );

    // What cannot be erased is refused where it is.
    let e = script_error(
        sb.load_modules(
            "main.ts",
            Modules::new()
                .with(
                    "main.ts",
                    "import { Color } from \"./color.ts\";\nexport default () => Color;",
                )
                .with("color.ts", "// colors\nexport enum Color { Red, Green }\n"),
        )
        .await,
    );
    assert_eq!(e.name, "SyntaxError");
    assert_eq!(
        (e.file.as_deref(), e.line),
        (Some("color.ts"), Some(2)),
        "{e}"
    );
    assert!(e.message.contains("enum"), "{e}");
    // A single .ts script loads too.
    sb.load("one.ts", "export default (n: number): number => n + 1;")
        .await
        .unwrap();
    assert_eq!(
        sb.run_main("one.ts", &json!(1), TaskOptions::default())
            .await
            .unwrap(),
        json!(2)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_load_is_its_own_graph_and_errors_show_the_path_after_a_reload() {
    let sb = sandbox().await;
    let counter = "let n = 0;\nexport const next = () => ++n;\n";
    let graph = |tag: &str| {
        Modules::new()
            .with(
                "main.js",
                "import { next } from \"./util.js\";\nimport { tag } from \"./tag.js\";\nexport default () => [tag, next()];\nexport const fail = () => { throw new Error(tag); };\n",
            )
            .with("util.js", counter)
            .with("tag.js", format!("export const tag = {tag:?};"))
    };
    sb.load_modules(
        "a.js",
        graph("one").with(
            "a.js",
            "export * from \"./main.js\"; export { default } from \"./main.js\";",
        ),
    )
    .await
    .unwrap();
    sb.load_modules(
        "b.js",
        graph("two").with(
            "b.js",
            "export * from \"./main.js\"; export { default } from \"./main.js\";",
        ),
    )
    .await
    .unwrap();
    // Two scripts with modules of the same paths share nothing.
    assert_eq!(run(&sb, "a.js").await.unwrap(), json!(["one", 1]));
    assert_eq!(run(&sb, "a.js").await.unwrap(), json!(["one", 2]));
    assert_eq!(run(&sb, "b.js").await.unwrap(), json!(["two", 1]));
    // Loading a script again evaluates its graph afresh, with the new code.
    sb.load_modules(
        "a.js",
        graph("three").with(
            "a.js",
            "export * from \"./main.js\"; export { default } from \"./main.js\";",
        ),
    )
    .await
    .unwrap();
    assert_eq!(run(&sb, "a.js").await.unwrap(), json!(["three", 1]));
    // Its modules are the third of their paths QuickJS compiled; the host
    // sees the paths.
    let e = script_error(sb.call("a.js", "fail", &[], TaskOptions::default()).await);
    assert_eq!(
        (e.file.as_deref(), e.line),
        (Some("main.js"), Some(4)),
        "{e}"
    );
    assert!(
        !e.stack.unwrap_or_default().contains('?'),
        "no internal name in the stack"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trap_reloads_every_module_of_the_graph() {
    let sb = sandbox().await;
    let modules = Modules::new()
        .with(
            "main.js",
            "import { next } from \"./lib/state.js\";\nexport default () => next();\nexport function deep(n) { return deep(n + 1) + 1; }\n",
        )
        .with("lib/state.js", "let n = 0;\nexport const next = () => ++n;\n");
    sb.load_modules("main.js", modules).await.unwrap();
    assert_eq!(run(&sb, "main.js").await.unwrap(), json!(1));
    assert_eq!(run(&sb, "main.js").await.unwrap(), json!(2));
    let trapped = sb
        .call("main.js", "deep", &[json!(0)], TaskOptions::default())
        .await;
    assert!(matches!(trapped, Err(Error::Trapped { .. })), "{trapped:?}");
    // The rebuilt instance loaded the graph again: fresh module state.
    assert_eq!(run(&sb, "main.js").await.unwrap(), json!(1));
    assert_eq!(sb.stats().await.unwrap().rebuilds, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lockdown_holds_in_every_module_of_a_graph() {
    let sb = sandbox().await;
    // A module the entry imports, and one a function imports later, each
    // try to change a built-in every script shares.
    let modules = Modules::new()
        .with(
            "main.js",
            "import \"./lib/evil.js\";\nexport default () => 1;",
        )
        .with("lib/evil.js", "\nJSON.parse = () => \"owned\";\n");
    let e = script_error(sb.load_modules("main.js", modules).await);
    assert_eq!(e.name, "TypeError", "{e}");
    assert_eq!(
        (e.file.as_deref(), e.line),
        (Some("lib/evil.js"), Some(2)),
        "{e}"
    );
    let late = Modules::new()
        .with(
            "main.js",
            "export default async () => {\n  try { await import(\"./evil.js\"); } catch (e) { return [e.name, JSON.parse(\"1\"), Object.prototype.owned]; }\n};",
        )
        .with("evil.js", "Object.prototype.owned = true;\nJSON.parse = () => 2;");
    sb.load_modules("main.js", late).await.unwrap();
    assert_eq!(
        run(&sb, "main.js").await.unwrap(),
        json!(["TypeError", 1, null])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graph_with_bad_paths_or_no_entry_is_refused_naming_them() {
    let sb = sandbox().await;
    for (path, why) in [
        ("../up.js", "not normalised"),
        ("/abs.js", "absolute"),
        ("a//b.js", "not normalised"),
        ("x.js?2", "may not have"),
    ] {
        let modules = Modules::new()
            .with("main.js", "export default 1;")
            .with(path, "");
        let e = script_error(sb.load_modules("main.js", modules).await);
        assert!(
            e.message.contains(&format!("{path:?}")) && e.message.contains(why),
            "{e}"
        );
    }
    let e = script_error(
        sb.load_modules("main.js", Modules::new().with("lib.js", ""))
            .await,
    );
    assert!(
        e.message.contains("\"main.js\" is not among the modules"),
        "{e}"
    );
    let e = script_error(
        sb.load_modules("d.json", Modules::new().with("d.json", "{}"))
            .await,
    );
    assert!(e.message.contains("JSON"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_above_the_root_is_refused_even_where_a_module_has_that_name() {
    let sb = sandbox().await;
    // `../x.js` from `lib/a.js` is `x.js`; one more `../` leads above the
    // root, and must not fall back on the root's `x.js`.
    for (specifier, refused) in [("../x.js", false), ("../../x.js", true)] {
        let modules = Modules::new()
            .with(
                "lib/a.js",
                format!("import {{ x }} from \"{specifier}\";\nexport default () => x;\n"),
            )
            .with("x.js", "export const x = 'the root';\n");
        let loaded = sb.load_modules("lib/a.js", modules).await;
        if refused {
            let e = script_error(loaded);
            assert!(e.message.contains("outside the root"), "{e}");
            assert!(e.message.contains(specifier), "{e}");
            assert_eq!(
                (e.file.as_deref(), e.line),
                (Some("lib/a.js"), Some(1)),
                "{e}"
            );
        } else {
            loaded.unwrap();
            assert_eq!(run(&sb, "lib/a.js").await.unwrap(), json!("the root"));
        }
    }
}
