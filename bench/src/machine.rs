//! Facts about the machine a run happened on, for the report: figures from
//! two machines (or from one machine under different load) are not
//! comparable without them.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// What the report records about the machine and the run.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// When the run started, UTC, ISO 8601.
    pub date: String,
    /// CPUs this process may use (what `nproc` prints).
    pub nproc: usize,
    /// The CPU's model name, from `/proc/cpuinfo`.
    pub cpu: Option<String>,
    /// The compiler that built the benchmarks (`rustc --version`).
    pub rustc: String,
    /// Operating system and architecture.
    pub os: String,
    /// `/proc/loadavg` when the run started: other work on the machine.
    pub loadavg_start: Option<String>,
    /// `/proc/loadavg` when the report was written.
    pub loadavg_end: Option<String>,
    /// Size of the guest component, bytes.
    pub guest_component_bytes: usize,
}

impl Machine {
    /// The facts as they are now; [`Machine::finish`] adds the end of the run.
    pub fn now() -> Machine {
        Machine {
            date: utc_iso8601(SystemTime::now()),
            nproc: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu: cpu_model(),
            rustc: env!("MARIONETTE_BENCH_RUSTC").to_string(),
            os: format!("{} {}", std::env::consts::OS, std::env::consts::ARCH),
            loadavg_start: loadavg(),
            loadavg_end: None,
            guest_component_bytes: marionette::guest_component().len(),
        }
    }

    /// Records the load at the end of the run.
    pub fn finish(&mut self) {
        self.loadavg_end = loadavg();
    }
}

fn cpu_model() -> Option<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix("model name")?.split_once(':'))
        .map(|(_, model)| model.trim().to_string())
}

fn loadavg() -> Option<String> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    // "0.52 0.58 0.59 1/467 12345": the three averages are what matter.
    Some(
        text.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
    )
}

/// `time` as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn utc_iso8601(time: SystemTime) -> String {
    let secs = time
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn formats_utc_dates() {
        assert_eq!(utc_iso8601(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let leap_day = UNIX_EPOCH + Duration::from_secs(951_782_400 + 3_723);
        assert_eq!(utc_iso8601(leap_day), "2000-02-29T01:02:03Z");
        let later = UNIX_EPOCH + Duration::from_secs(1_767_225_599);
        assert_eq!(utc_iso8601(later), "2025-12-31T23:59:59Z");
    }
}
