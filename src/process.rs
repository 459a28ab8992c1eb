//! What the process holds in memory, and the memory limit its container runs under: an alert on
//! an agent near its limit needs both, and a cluster without cAdvisor or kube-state-metrics
//! scraped should still get it.

use std::fs;

/// cgroup v1 writes this (the largest page-aligned i64) when no limit is set.
const V1_UNLIMITED: u64 = 0x7FFF_FFFF_FFFF_F000;

/// Resident set size in bytes, from `/proc/self/status` (`VmRSS`, in kB).
pub fn resident_memory_bytes() -> Option<u64> {
    parse_vm_rss(&fs::read_to_string("/proc/self/status").ok()?)
}

/// The container's memory limit in bytes: cgroup v2's `memory.max`, else cgroup v1's
/// `memory.limit_in_bytes` (a container sees its own cgroup at the mount's root). `None` when
/// unlimited or unknown.
pub fn memory_limit_bytes() -> Option<u64> {
    [
        "/sys/fs/cgroup/memory.max",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    ]
    .iter()
    .find_map(|p| fs::read_to_string(p).ok())
    .and_then(|s| parse_limit(&s))
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn parse_limit(text: &str) -> Option<u64> {
    let v: u64 = text.trim().parse().ok()?;
    (v < V1_UNLIMITED).then_some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_rss_in_bytes() {
        let status = "Name:\tc19\nVmPeak:\t  9000 kB\nVmRSS:\t    2048 kB\nThreads:\t3\n";
        assert_eq!(parse_vm_rss(status), Some(2 * 1024 * 1024));
        assert_eq!(parse_vm_rss("Name:\tc19\n"), None);
    }

    #[test]
    fn unlimited_cgroups_have_no_limit() {
        assert_eq!(parse_limit("268435456\n"), Some(256 << 20));
        assert_eq!(parse_limit("max\n"), None);
        assert_eq!(parse_limit("9223372036854771712\n"), None);
    }

    #[test]
    fn this_process_has_a_resident_set() {
        assert!(resident_memory_bytes().is_some_and(|b| b > 0));
    }
}
