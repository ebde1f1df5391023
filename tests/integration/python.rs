//! The component driven from another language: `tests/python/test_component.py`
//! runs the embedded guest through Python's `wasmtime` package (PyPI, 50.x)
//! and `tests/python/marionette_host.py`, a host written against the WIT
//! alone. Python and that package are required: without them this test
//! fails and says how to install them, it does not skip.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

const PYTHON: &str = "python3";
const BOOTSTRAP: &str = "scripts/bootstrap.sh --python";
/// Far above the few seconds the script takes; only a hang gets here.
const TIMEOUT: Duration = Duration::from_secs(300);

fn python_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/python")
}

/// Fails the test, with what to do, when `python3` or its `wasmtime`
/// component API is missing; returns the package's version.
fn require_python_wasmtime() -> String {
    let probe = Command::new(PYTHON)
        .args([
            "-c",
            "import wasmtime.component, importlib.metadata as m; print(m.version('wasmtime'))",
        ])
        .output();
    match probe {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).trim().to_string(),
        Ok(out) => panic!(
            "`{PYTHON} -c \"import wasmtime.component\"` failed ({}): {}\n\
             Install Python's wasmtime package (>=50,<51) with `{BOOTSTRAP}` from the repository root.",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => panic!(
            "cannot run `{PYTHON}`: {e}\n\
             Install Python 3, then its wasmtime package with `{BOOTSTRAP}` from the repository root."
        ),
    }
}

/// Prints each line of `stream` as it comes, prefixed, and returns them all.
fn relay(stream: impl Read + Send + 'static, to_stderr: bool) -> thread::JoinHandle<Vec<String>> {
    thread::spawn(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if to_stderr {
                eprintln!("[python] {line}");
            } else {
                println!("[python] {line}");
            }
            lines.push(line);
        }
        lines
    })
}

fn run_script(script: &Path, component: &Path) -> (std::process::ExitStatus, Vec<String>) {
    let mut child = Command::new(PYTHON)
        .arg("-u")
        .arg(script)
        .arg(component)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {PYTHON} {}: {e}", script.display()));
    let out = relay(child.stdout.take().expect("piped stdout"), false);
    let err = relay(child.stderr.take().expect("piped stderr"), true);
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for python") {
            break status;
        }
        if started.elapsed() > TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{} did not finish within {TIMEOUT:?}", script.display());
        }
        thread::sleep(Duration::from_millis(20));
    };
    let stdout = out.join().expect("stdout relay");
    err.join().expect("stderr relay");
    (status, stdout)
}

#[test]
fn python_host_drives_the_component() {
    let version = require_python_wasmtime();
    println!("python wasmtime {version}");

    let dir = tempfile::tempdir().expect("temp dir");
    let component = dir.path().join("marionette.wasm");
    std::fs::write(&component, marionette::guest_component()).expect("writing the component");

    let script = python_dir().join("test_component.py");
    let (status, stdout) = run_script(&script, &component);

    let summary = stdout
        .iter()
        .rev()
        .find(|l| l.contains(" passed, "))
        .cloned();
    assert!(
        status.success(),
        "{} failed ({status}); summary: {}",
        script.display(),
        summary.as_deref().unwrap_or("none (see the output above)")
    );
    let summary = summary.expect("the script printed no `N passed, M failed` line");
    assert!(
        summary.ends_with(" passed, 0 failed") && !summary.starts_with("0 passed"),
        "unexpected summary: {summary}"
    );
}
