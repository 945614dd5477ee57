//! How an isolated stage's process ended, in words: a signal by name, an exit status, a limit.

use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;

use crate::config::Limits;

/// `killed by SIGSEGV (invalid memory access)`, `exited with status 3`, and the limit it hit
/// (`memory_mb = 256`) when that is what ended it (from the signal, or from what the process
/// last wrote).
pub fn describe(status: ExitStatus, limits: &Limits, last_words: &str) -> (String, Option<String>) {
    let base = match (status.signal(), status.code()) {
        (Some(sig), _) => format!("killed by {}", signal_name(sig)),
        (None, Some(code)) => format!("exited with status {code}"),
        (None, None) => "ended".to_string(),
    };
    let limit = match status.signal() {
        Some(24) => limits.cpu_seconds.map(|n| format!("cpu_seconds = {n}")),
        Some(25) => Some("file size".to_string()),
        _ if last_words.contains("memory allocation of") => {
            limits.memory_mb.map(|n| format!("memory_mb = {n}"))
        }
        _ => None,
    };
    (base, limit)
}

pub fn signal_name(sig: i32) -> String {
    let (name, what) = match sig {
        1 => ("SIGHUP", "hang-up"),
        2 => ("SIGINT", "interrupt"),
        3 => ("SIGQUIT", "quit"),
        4 => ("SIGILL", "illegal instruction"),
        5 => ("SIGTRAP", "trap"),
        6 => ("SIGABRT", "abort"),
        7 => ("SIGBUS", "bus error"),
        8 => ("SIGFPE", "arithmetic fault"),
        9 => ("SIGKILL", "killed"),
        11 => ("SIGSEGV", "invalid memory access"),
        13 => ("SIGPIPE", "broken pipe"),
        15 => ("SIGTERM", "terminated"),
        24 => ("SIGXCPU", "CPU time limit"),
        25 => ("SIGXFSZ", "file size limit"),
        _ => return format!("signal {sig}"),
    };
    format!("{name} ({what})")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_read_as_words() {
        let none = Limits::default();
        assert_eq!(
            describe(ExitStatus::from_raw(11), &none, ""),
            ("killed by SIGSEGV (invalid memory access)".into(), None)
        );
        assert_eq!(
            describe(ExitStatus::from_raw(3 << 8), &none, ""),
            ("exited with status 3".into(), None)
        );
        let mem = Limits {
            memory_mb: Some(256),
            ..Limits::default()
        };
        let oom = describe(
            ExitStatus::from_raw(6),
            &mem,
            "memory allocation of 16777216 bytes failed",
        );
        assert_eq!(
            oom,
            (
                "killed by SIGABRT (abort)".into(),
                Some("memory_mb = 256".into())
            )
        );
        let cpu = Limits {
            cpu_seconds: Some(1),
            ..Limits::default()
        };
        assert_eq!(
            describe(ExitStatus::from_raw(24), &cpu, "").1.as_deref(),
            Some("cpu_seconds = 1")
        );
    }
}
