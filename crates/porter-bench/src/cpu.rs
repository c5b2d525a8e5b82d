//! CPU use of the processes named with `--pid`, read from `/proc/PID/stat` (Linux only).

use std::time::Duration;

use anyhow::{Context, Result};

/// `USER_HZ`: the unit of `/proc/PID/stat`'s times, 100 on every Linux the bench runs on.
const CLOCK_TICKS_PER_S: f64 = 100.0;

/// utime + stime (clock ticks) from the text of `/proc/PID/stat`.
pub fn parse_proc_stat(stat: &str) -> Result<u64> {
    let rest = &stat[stat.rfind(')').context("no ')' in /proc stat")? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state): fields 14 and 15 are at indices 11 and 12.
    let tick = |i: usize| -> Result<u64> {
        fields
            .get(i)
            .context("short /proc stat")?
            .parse::<u64>()
            .context("bad /proc stat field")
    };
    Ok(tick(11)? + tick(12)?)
}

/// utime + stime of each process now; `None` where `/proc` cannot be read (it has exited).
pub fn cpu_snapshot(pids: &[(String, u32)]) -> Vec<Option<u64>> {
    let ticks = |pid: u32| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok();
    pids.iter()
        .map(|(_, pid)| parse_proc_stat(&ticks(*pid)?).ok())
        .collect()
}

/// CPU use of each process over `window`, as a percentage of one core.
pub fn cpu_report(
    pids: &[(String, u32)],
    before: Vec<Option<u64>>,
    window: Duration,
) -> Vec<(String, f64)> {
    let after = cpu_snapshot(pids);
    let mut report = Vec::new();
    for (((name, pid), b), a) in pids.iter().zip(before).zip(after) {
        let (Some(b), Some(a)) = (b, a) else {
            eprintln!("porter-bench: cannot read the CPU use of {name} (pid {pid})");
            continue;
        };
        let secs = window.as_secs_f64().max(1e-9);
        report.push((
            name.clone(),
            a.saturating_sub(b) as f64 / CLOCK_TICKS_PER_S / secs * 100.0,
        ));
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_with_spaces_in_comm() {
        let stat = "1234 (porter (gw) x) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 9 0";
        assert_eq!(parse_proc_stat(stat).ok(), Some(325));
        assert!(parse_proc_stat("garbage").is_err());
    }
}
