//! The TypeScript declarations (guest/marionette.d.ts) match what the
//! runtime exports: every name declared exists, and every name that exists
//! is declared.

use std::collections::BTreeSet;

use marionette::{Policy, Sandbox, TaskOptions};
use serde_json::Value;

use crate::common::fixture;

fn declarations() -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest/marionette.d.ts");
    std::fs::read_to_string(path).expect("guest/marionette.d.ts")
}

/// The lines of the block opened by the line starting with `header`
/// (indented by two spaces) up to its closing `  }`.
fn block<'a>(dts: &'a str, header: &str) -> Vec<&'a str> {
    let mut lines = dts.lines().skip_while(|l| !l.starts_with(header));
    assert!(lines.next().is_some(), "no {header:?} in the declarations");
    lines.take_while(|l| !l.starts_with("  }")).collect()
}

/// Member names at four spaces of indentation: `name(`, `name:`, `name?`,
/// `readonly name`.
fn members(lines: &[&str]) -> BTreeSet<String> {
    lines
        .iter()
        .filter(|l| {
            l.starts_with("    ") && !l.starts_with("     ") && !l.trim_start().starts_with("/")
        })
        .filter_map(|l| {
            let l = l.trim_start().trim_start_matches("readonly ");
            let end = l.find(|c: char| !(c.is_alphanumeric() || c == '_'))?;
            (end > 0).then(|| l[..end].to_string())
        })
        .collect()
}

fn set(v: &Value) -> BTreeSet<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn the_declaration_file_matches_the_runtime() {
    let sb = Sandbox::new(Policy::default()).await.unwrap();
    sb.load("shape.js", fixture("api_shape.js")).await.unwrap();
    let shape = sb
        .run_main("shape.js", &Value::Null, TaskOptions::default())
        .await
        .unwrap();
    let dts = declarations();

    // Top level: `export const NAME` and `export function NAME`.
    let declared: BTreeSet<String> = dts
        .lines()
        .filter_map(|l| {
            let l = l.trim_start();
            let rest = l
                .strip_prefix("export const ")
                .or_else(|| l.strip_prefix("export function "))?;
            Some(
                rest.split(|c: char| !c.is_alphanumeric())
                    .next()?
                    .to_string(),
            )
        })
        .collect();
    assert_eq!(declared, set(&shape["top"]), "top-level exports");

    // The namespace objects (turns, engines, ...), member by member.
    for (name, runtime) in shape["objects"].as_object().unwrap() {
        let lines = block(&dts, &format!("  export const {name}: {{"));
        assert_eq!(members(&lines), set(runtime), "members of {name}");
    }

    // consts.X.Y
    let consts = block(&dts, "  export const consts: {");
    for (name, runtime) in shape["consts"].as_object().unwrap() {
        let start = consts
            .iter()
            .position(|l| l.trim_start().starts_with(&format!("{name}:")))
            .unwrap();
        let mut text = String::new();
        for l in &consts[start..] {
            text.push_str(l);
            if l.trim_end().ends_with("};") {
                break;
            }
        }
        let body = &text[text.find('{').unwrap() + 1..];
        let keys: BTreeSet<String> = body
            .split(';')
            .filter_map(|part| part.split(':').next())
            .map(|k| k.trim().to_string())
            .filter(|k| !k.is_empty() && k.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
            .collect();
        assert_eq!(keys, set(runtime), "consts.{name}");
    }

    // The objects scripts get back: registries, builders, sessions, engines.
    for (name, runtime) in shape["instances"].as_object().unwrap() {
        let lines = block(&dts, &format!("  export interface {name} {{"));
        let mut declared = members(&lines);
        // Optional members may be absent on a given object.
        if name == "Engine" && !set(runtime).contains("name") {
            declared.remove("name");
        }
        assert_eq!(declared, set(runtime), "members of {name}");
    }
}
