//! `marionette replay FILE`: a recorded run again, offline, with what it
//! printed; the first divergence from the recording as a diff (exit 5).

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;

use marionette::Runtime;
use marionette::cassette::{self, Cassette, Mode, ReadLimits, ReplayError, ReplayOptions};

use crate::{EngineArgs, Live, Root, finish, output, report, run, terminal};

/// How to replay, from the flags.
pub struct How {
    /// The script to run instead of the recorded script's file.
    pub script: Option<PathBuf>,
    /// The kinds of operation a partial replay answers from the cassette.
    pub partial: Option<Vec<String>>,
    /// Record again instead of replaying.
    pub re_record: bool,
}

/// The kinds a partial replay may take from a cassette.
const KINDS: [&str; 6] = ["infer", "call-tool", "middleware", "hook", "sleep", "fetch"];

pub async fn command(
    path: PathBuf,
    how: How,
    engine: EngineArgs,
    display: output::Display,
) -> ExitCode {
    let cassette = match Cassette::load(&path, ReadLimits::default()) {
        Ok(cassette) => cassette,
        Err(e) => {
            eprintln!("marionette: {}: {e}", path.display());
            return ExitCode::from(2);
        }
    };
    let Some((name, input)) = cassette.main_call() else {
        eprintln!(
            "marionette: {}: the recording runs no script's main (record one with marionette run --record)",
            path.display()
        );
        return ExitCode::from(2);
    };
    let name = name.to_string();
    let input: serde_json::Value = match serde_json::from_str(input) {
        Ok(input) => input,
        Err(e) => {
            eprintln!("marionette: {}: the recorded input: {e}", path.display());
            return ExitCode::from(2);
        }
    };
    let file = how.script.clone().unwrap_or_else(|| PathBuf::from(&name));
    let current = std::fs::read_to_string(&file).ok();
    if how.re_record {
        let Some(_) = current else {
            eprintln!(
                "marionette: cannot read {} to record it again",
                file.display()
            );
            return ExitCode::from(2);
        };
        let resolved = match engine.resolve() {
            Ok(resolved) => resolved,
            Err(code) => return code,
        };
        eprintln!(
            "marionette: recording {} again: a live run of {}",
            path.display(),
            file.display()
        );
        let live = Live {
            script: file,
            root: Root::default(),
            input,
            timeout_ms: None,
            // The same seed and start: an unchanged run records the same.
            policy: cassette.header().policy.clone(),
            record: Some(path),
        };
        return run(live, display, resolved).await;
    }
    if let Some(kinds) = &how.partial
        && let Some(bad) = kinds.iter().find(|k| !KINDS.contains(&k.as_str()))
    {
        eprintln!(
            "marionette: --partial: {bad:?} is not a kind of operation ({})",
            KINDS.join(", ")
        );
        return ExitCode::from(2);
    }

    let mut sources = HashMap::new();
    match current {
        Some(source) => {
            if cassette.script_source(&name) != Some(source.as_str()) {
                eprintln!(
                    "marionette: {} changed since the recording; replaying it as it is now",
                    file.display()
                );
            }
            sources.insert(name.clone(), source);
        }
        None => eprintln!(
            "marionette: {} is not here; replaying the recorded source",
            file.display()
        ),
    }
    let mut options = match &how.partial {
        None => ReplayOptions::new(Mode::Strict),
        Some(kinds) => ReplayOptions::new(Mode::Partial(kinds.clone())),
    };
    let what = match &how.partial {
        None => "every answer from the recording: no network, no key".to_string(),
        Some(kinds) => format!("{} from the recording, the rest live", kinds.join(", ")),
    };
    eprintln!(
        "marionette: REPLAY of {} ({} entries, recorded by marionette {}): {what}",
        path.display(),
        cassette.len(),
        cassette.header().marionette
    );
    if how.partial.is_some() {
        match engine
            .resolve()
            .and_then(|r| r.services().map_err(|e| report(&e)))
        {
            Ok(services) => options.services = services,
            Err(code) => return code,
        }
    }
    options.sources = sources;

    let runtime = match tokio::task::spawn_blocking(Runtime::shared).await {
        Ok(Ok(runtime)) => runtime,
        Ok(Err(e)) => return report(&marionette::Error::host("runtime", e)),
        Err(e) => return report(&marionette::Error::host("runtime", e)),
    };
    let started = std::time::Instant::now();
    let (events, mut received) = tokio::sync::mpsc::unbounded_channel();
    options.events = Some(events);
    let printer = tokio::spawn(async move {
        let mut tally = output::Tally::default();
        while let Some(event) = received.recv().await {
            display.event(&event, &mut tally);
        }
        (display, tally)
    });
    let replayed = cassette::replay(runtime, &cassette, options).await;
    if let Ok((display, mut tally)) = printer.await {
        display.summary(&mut tally, started.elapsed());
    }
    match replayed {
        Ok(replayed) => {
            eprintln!(
                "marionette: the replay matched the recording ({} {})",
                replayed.entries,
                if how.partial.is_some() {
                    "operations answered from it"
                } else {
                    "entries"
                }
            );
            match replayed.result {
                Some(result) => finish(result),
                None => ExitCode::SUCCESS,
            }
        }
        Err(ReplayError::Diverged(divergence)) => {
            eprintln!("marionette: {}", terminal::clean(&divergence.to_string()));
            ExitCode::from(5)
        }
        Err(ReplayError::Cassette(e)) => {
            eprintln!("marionette: {}: {e}", path.display());
            ExitCode::from(2)
        }
        Err(ReplayError::Sandbox(e)) => report(&e),
        Err(e) => {
            eprintln!("marionette: {e}");
            ExitCode::from(4)
        }
    }
}
