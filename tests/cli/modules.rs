//! Scripts of several modules through the command: the files under the
//! script's folder (or `--root`), never outside it, through no symlink;
//! TypeScript; a real npm library bundled by esbuild; the examples
//! type-checked by tsc.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use serde_json::{Value, json};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn marionette(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_marionette"))
        .args(args)
        .current_dir(cwd)
        .env_remove("MARIONETTE_LOG")
        .env_remove("MARIONETTE_CONFIG")
        .env("NO_COLOR", "1")
        .output()
        .expect("running marionette")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn result(out: &Output) -> Value {
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.lines().last().expect("a result line")).unwrap()
}

fn write(dir: &Path, path: &str, text: &str) {
    let path = dir.join(path);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// The issue's "done when": a TypeScript project of three modules and a
/// JSON file runs, and its stack trace points at the right `.ts` lines.
#[test]
fn a_typescript_project_runs_and_its_stack_points_at_the_ts_lines() {
    let out = marionette(
        &[
            "run",
            "examples/typescript/main.ts",
            "--input",
            r#"{"player": "ada"}"#,
        ],
        &repo(),
    );
    assert_eq!(
        result(&out),
        json!({
            "summary": {"player": "ada", "games": 2, "total": 42, "best": 30},
            "text": "ada: 42 points in 2 games (best 30)",
        })
    );

    let out = marionette(
        &[
            "run",
            "examples/typescript/main.ts",
            "--input",
            r#"{"player": "nobody"}"#,
        ],
        &repo(),
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    // (After the notice that no engine is configured.)
    let first = err.lines().find(|l| !l.starts_with("marionette: "));
    assert_eq!(
        first,
        Some("lib/stats.ts:16:15: RangeError: no games for nobody"),
        "{err}"
    );
    assert!(err.contains("at summarize (lib/stats.ts:16:"), "{err}");
    assert!(err.contains("at main (main.ts:18:"), "{err}");
}

#[test]
fn check_reads_a_typescript_script_and_its_modules() {
    let out = marionette(&["check", "examples/typescript/main.ts"], &repo());
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let exports: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(exports[0]["name"], "default", "{exports}");
    assert_eq!(exports[0]["kind"], "main", "{exports}");
}

#[test]
fn a_script_imports_the_files_under_its_folder_and_nothing_above() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "shared.js",
        "export const shared = 'from above';\n",
    );
    write(
        dir.path(),
        "app/main.js",
        "import { helper } from \"./lib/helper.js\";\nexport default () => helper();\n",
    );
    write(
        dir.path(),
        "app/lib/helper.js",
        "import cfg from \"../config.json\" with { type: \"json\" };\nexport const helper = () => cfg.greeting;\n",
    );
    write(dir.path(), "app/config.json", r#"{"greeting": "hi"}"#);
    let out = marionette(&["run", "app/main.js"], dir.path());
    assert_eq!(result(&out), json!("hi"));

    // The folder above is not the script's: importing from it fails with
    // the importer's location...
    write(
        dir.path(),
        "app/up.js",
        "import { shared } from \"../shared.js\";\nexport default () => shared;\n",
    );
    let out = marionette(&["run", "app/up.js"], dir.path());
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.starts_with("up.js:1:"), "{err}");
    assert!(err.contains("outside the root"), "{err}");
    // ...unless `--root` names it; the script is then named from there.
    let out = marionette(&["run", "app/up.js", "--root", "."], dir.path());
    assert_eq!(result(&out), json!("from above"));
    // A script outside the root is refused.
    let out = marionette(&["run", "shared.js", "--root", "app"], dir.path());
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("is not under the modules' root"),
        "{}",
        stderr(&out)
    );
}

#[cfg(unix)]
#[test]
fn a_symlink_under_the_root_is_refused_naming_it() {
    let outside = tempfile::tempdir().unwrap();
    write(
        outside.path(),
        "secret.js",
        "export const key = 'sk-secret';\n",
    );
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "main.js",
        "import { key } from \"./lib/key.js\";\nexport default () => key;\n",
    );
    std::fs::create_dir(dir.path().join("lib")).unwrap();
    std::os::unix::fs::symlink(
        outside.path().join("secret.js"),
        dir.path().join("lib/key.js"),
    )
    .unwrap();
    let out = marionette(&["run", "main.js"], dir.path());
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("refusing the symlink") && err.contains("lib/key.js"),
        "{err}"
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("sk-secret"));

    // A symlinked folder too, and the script itself as a symlink.
    std::fs::remove_file(dir.path().join("lib/key.js")).unwrap();
    std::os::unix::fs::symlink(outside.path(), dir.path().join("lib/linked")).unwrap();
    let out = marionette(&["run", "main.js"], dir.path());
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("lib/linked"), "{}", stderr(&out));
    std::fs::remove_file(dir.path().join("lib/linked")).unwrap();
    std::os::unix::fs::symlink(
        outside.path().join("secret.js"),
        dir.path().join("entry.js"),
    )
    .unwrap();
    let out = marionette(&["run", "entry.js"], dir.path());
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("entry.js is a symlink"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_folder_with_too_many_module_files_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "main.js", "export default () => 1;\n");
    for i in 0..1000 {
        write(dir.path(), &format!("m/{i}.js"), "export default 1;\n");
    }
    let out = marionette(&["run", "main.js"], dir.path());
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("more than 1000 module files"),
        "{}",
        stderr(&out)
    );
    // Module files in node_modules and dot-folders are not the script's.
    std::fs::rename(dir.path().join("m"), dir.path().join("node_modules")).unwrap();
    assert_eq!(
        result(&marionette(&["run", "main.js"], dir.path())),
        json!(1)
    );
}

/// esbuild, lodash-es and typescript installed once into `target/npm-tools`
/// for this test binary; `None` (the tests skip, saying so) when npm is not
/// installed. An install that fails is a failure.
fn npm_tools() -> Option<&'static Path> {
    static TOOLS: OnceLock<Option<PathBuf>> = OnceLock::new();
    TOOLS
        .get_or_init(|| {
            if Command::new("npm").arg("--version").output().is_err() {
                return None;
            }
            let dir = repo().join("target/npm-tools");
            let ready = ["esbuild", "lodash-es", "typescript"].iter().all(|p| {
                dir.join("node_modules")
                    .join(p)
                    .join("package.json")
                    .exists()
            });
            if !ready {
                std::fs::create_dir_all(&dir).unwrap();
                let out = Command::new("npm")
                    .args([
                        "install",
                        "--no-audit",
                        "--no-fund",
                        "--loglevel=error",
                        "--prefix",
                    ])
                    .arg(&dir)
                    .args(["esbuild@0.28", "lodash-es@4", "typescript@5"])
                    .output()
                    .expect("running npm");
                assert!(
                    out.status.success(),
                    "npm install failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            Some(dir)
        })
        .as_deref()
}

#[test]
fn an_esbuild_bundle_of_a_real_npm_library_runs() {
    let Some(tools) = npm_tools() else {
        eprintln!("skipping: npm is not installed, so esbuild and lodash-es cannot be");
        return;
    };
    // Inside the tools' folder, so that esbuild finds node_modules above it.
    let dir = tempfile::tempdir_in(tools).unwrap();
    let main = r#"import { chunk, camelCase, groupBy, sortBy } from "lodash-es";
import { createSession } from "marionette";
export default (input) => ({
  chunks: chunk(input.items, 2),
  name: camelCase("module graphs work"),
  byParity: groupBy(input.items, (n) => (n % 2 ? "odd" : "even")),
  sorted: sortBy(input.items, (n) => -n),
  api: typeof createSession,
});
"#;
    write(dir.path(), "main.js", main);
    // Unbundled, the package cannot be found, and the error says how.
    let out = marionette(&["run", "main.js"], dir.path());
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("esbuild"), "{}", stderr(&out));

    let bundled = Command::new(tools.join("node_modules/.bin/esbuild"))
        .arg(dir.path().join("main.js"))
        .args([
            "--bundle",
            "--format=esm",
            "--platform=browser",
            "--external:marionette",
        ])
        .arg(format!(
            "--outfile={}",
            dir.path().join("bundle.js").display()
        ))
        .current_dir(dir.path())
        .output()
        .expect("running esbuild");
    assert!(
        bundled.status.success(),
        "esbuild: {}",
        String::from_utf8_lossy(&bundled.stderr)
    );
    let bundle = std::fs::read_to_string(dir.path().join("bundle.js")).unwrap();
    assert!(bundle.len() > 10_000, "lodash's code is in the bundle");
    std::fs::remove_file(dir.path().join("main.js")).unwrap();
    let out = marionette(
        &[
            "run",
            "bundle.js",
            "--input",
            r#"{"items": [1, 2, 3, 4, 5]}"#,
        ],
        dir.path(),
    );
    assert_eq!(
        result(&out),
        json!({
            "chunks": [[1, 2], [3, 4], [5]],
            "name": "moduleGraphsWork",
            "byParity": {"odd": [1, 3, 5], "even": [2, 4]},
            "sorted": [5, 4, 3, 2, 1],
            "api": "function",
        })
    );
}

#[test]
fn tsc_type_checks_the_typescript_example_against_marionette_d_ts() {
    let Some(tools) = npm_tools() else {
        eprintln!("skipping: npm is not installed, so tsc cannot be");
        return;
    };
    let out = Command::new(tools.join("node_modules/.bin/tsc"))
        .args(["-p", "examples/typescript/tsconfig.json"])
        .current_dir(repo())
        .output()
        .expect("running tsc");
    assert!(
        out.status.success(),
        "tsc: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // And tsc does check: a wrong type in a copy of the example fails.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("ts");
    copy_dir(&repo().join("examples/typescript"), &copy);
    let tsconfig = std::fs::read_to_string(copy.join("tsconfig.json"))
        .unwrap()
        .replace(
            "../../guest/marionette.d.ts",
            &repo().join("guest/marionette.d.ts").display().to_string(),
        );
    std::fs::write(copy.join("tsconfig.json"), tsconfig).unwrap();
    let main = std::fs::read_to_string(copy.join("main.ts"))
        .unwrap()
        .replace("const player: string =", "const player: number =");
    std::fs::write(copy.join("main.ts"), main).unwrap();
    let out = Command::new(tools.join("node_modules/.bin/tsc"))
        .args(["-p", "tsconfig.json"])
        .current_dir(&copy)
        .output()
        .expect("running tsc");
    assert!(!out.status.success(), "tsc accepted a number for a string");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}
