//! How much memory this process may still allocate: the budget every size check compares its
//! estimate with (decoding an image, a run, `score`, the benchmark).
//!
//! The budget is the smallest of what the machine has free (`MemAvailable`), what the process's
//! resource limits leave (`RLIMIT_AS` less the address space in use, `RLIMIT_DATA` less the data
//! segment in use) and what its control group leaves (cgroup v2 `memory.max` less
//! `memory.current`, or v1 `memory.limit_in_bytes` less `memory.usage_in_bytes`). Where none of
//! these can be read (not Linux), there is no budget and the checks are skipped.

use std::path::Path;

/// The bytes this process may still allocate, or `None` where that is not known.
pub fn budget() -> Option<u64> {
    [available(), rlimit_headroom(), cgroup_headroom()].into_iter().flatten().min()
}

/// Bytes as GiB with one decimal, for messages.
pub fn gib(bytes: u64) -> String {
    match bytes {
        // Estimates saturate rather than wrap.
        u64::MAX => "more than 16 EiB".to_string(),
        b if b >= 1 << 40 => format!("{:.1} TiB", b as f64 / (1u64 << 40) as f64),
        b => format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64),
    }
}

/// A field of a `/proc` key-value file in KiB (`VmSize:  1234 kB`), in bytes.
fn proc_kib(text: &str, key: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(key))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// `MemAvailable` from `/proc/meminfo`.
fn available() -> Option<u64> {
    proc_kib(&std::fs::read_to_string("/proc/meminfo").ok()?, "MemAvailable:")
}

/// What `RLIMIT_AS` and `RLIMIT_DATA` leave, given the address space and data segment in use.
fn rlimit_headroom() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok();
    let used = |key: &str| status.as_deref().and_then(|s| proc_kib(s, key)).unwrap_or(0);
    let limit = |resource| {
        let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit writes one rlimit struct, which `r` is.
        let ok = unsafe { libc::getrlimit(resource, &mut r) } == 0;
        (ok && r.rlim_cur != libc::RLIM_INFINITY).then_some(r.rlim_cur as u64)
    };
    let address_space = limit(libc::RLIMIT_AS).map(|l| l.saturating_sub(used("VmSize:")));
    let data = limit(libc::RLIMIT_DATA).map(|l| l.saturating_sub(used("VmData:")));
    [address_space, data].into_iter().flatten().min()
}

/// What the process's memory control group leaves.
fn cgroup_headroom() -> Option<u64> {
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let read = |p: &Path| std::fs::read_to_string(p).ok().and_then(|s| s.trim().parse::<u64>().ok());
    for line in cgroups.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let path = path.trim_start_matches('/');
        if controllers.is_empty() {
            // cgroup v2: "0::/path"; "max" means no limit.
            let dir = Path::new("/sys/fs/cgroup").join(path);
            if let (Some(max), Some(current)) = (read(&dir.join("memory.max")), read(&dir.join("memory.current"))) {
                return Some(max.saturating_sub(current));
            }
        } else if controllers.split(',').any(|c| c == "memory") {
            let dir = Path::new("/sys/fs/cgroup/memory").join(path);
            if let (Some(max), Some(current)) =
                (read(&dir.join("memory.limit_in_bytes")), read(&dir.join("memory.usage_in_bytes")))
            {
                // v1 reports "no limit" as a huge number.
                return (max < 1 << 60).then(|| max.saturating_sub(current));
            }
        }
    }
    None
}

/// A check of an estimate against the budget: `Err(budget)` when it does not fit.
pub fn fits(need: u64) -> Result<(), u64> {
    match budget() {
        Some(b) if need > b => Err(b),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(gib(3 << 30), "3.0 GiB");
        assert_eq!(gib(5 << 40), "5.0 TiB");
        assert_eq!(gib(u64::MAX), "more than 16 EiB");
    }

    #[test]
    fn proc_fields_parse() {
        let text = "VmPeak:\t  123 kB\nVmSize:\t   2048 kB\n";
        assert_eq!(proc_kib(text, "VmSize:"), Some(2048 * 1024));
        assert_eq!(proc_kib(text, "VmData:"), None);
    }

    /// Under an address-space limit, the budget is at most what the limit leaves.
    #[test]
    fn the_budget_respects_an_address_space_limit() {
        let b = budget().expect("Linux has a budget");
        assert!(b > 0);
        // No way to lower this process's limit without affecting the other tests: the
        // integration tests (tests/hostile.rs) run the binary under one.
        if let Some(h) = rlimit_headroom() {
            assert!(b <= h);
        }
    }
}
