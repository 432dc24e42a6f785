//! The `/proc` files process metrics come from: reading them, and parsing their text in pure
//! functions.

/// The fields of `/proc/<pid>/stat` the metrics use, in the kernel's units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stat {
    /// CPU time in user mode, in clock ticks.
    pub(crate) utime: u64,
    /// CPU time in kernel mode, in clock ticks.
    pub(crate) stime: u64,
    pub(crate) threads: u64,
    /// Start time after boot, in clock ticks.
    pub(crate) starttime: u64,
    /// Virtual memory size, in bytes.
    pub(crate) vsize: u64,
    /// Resident set size, in pages.
    pub(crate) rss: u64,
}

/// The file's text; `None` when it cannot be read (not Linux, or `/proc` not mounted).
pub(crate) fn read(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// Entries of `/proc/self/fd` (including the one listing it, as other client libraries count).
pub(crate) fn open_fds() -> Option<u64> {
    let entries = std::fs::read_dir("/proc/self/fd").ok()?;
    u64::try_from(entries.count()).ok()
}

/// Parses `/proc/<pid>/stat`. The command name (field 2) sits in parentheses and may itself
/// hold spaces and parentheses, so fields are counted from the last `)`.
pub(crate) fn parse_stat(text: &str) -> Option<Stat> {
    let (_, rest) = text.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Numbered as in proc(5): the first field after the name is field 3.
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some(Stat {
        utime: field(14)?,
        stime: field(15)?,
        threads: field(20)?,
        starttime: field(22)?,
        vsize: field(23)?,
        rss: field(24)?,
    })
}

/// Boot time (seconds since the Unix epoch): the `btime` line of `/proc/stat`.
pub(crate) fn parse_btime(text: &str) -> Option<u64> {
    let line = text.lines().find_map(|l| l.strip_prefix("btime "))?;
    line.trim().parse().ok()
}

/// The soft limit on open files from `/proc/<pid>/limits`; `None` when unlimited.
pub(crate) fn parse_max_fds(text: &str) -> Option<u64> {
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))?;
    line.split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "4242 (tokio (x) y) S 1 4242 4242 0 -1 4194560 1830 0 0 0 250 50 0 0 \
        20 0 7 0 12345 104857600 2560 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 3 0 0 0 \
        0 0\n";

    #[test]
    fn stat_fields_are_counted_after_the_last_parenthesis() {
        let stat = parse_stat(STAT).unwrap();
        assert_eq!(
            stat,
            Stat {
                utime: 250,
                stime: 50,
                threads: 7,
                starttime: 12345,
                vsize: 104_857_600,
                rss: 2560,
            }
        );
    }

    #[test]
    fn truncated_or_garbled_stat_is_none() {
        assert_eq!(parse_stat(""), None);
        assert_eq!(parse_stat("4242 (short) S 1 2 3"), None);
        assert_eq!(parse_stat(&STAT.replace(" 250 ", " x ")), None);
    }

    #[test]
    fn boot_time_is_the_btime_line() {
        let text = "cpu  1 2 3 4\nintr 9 9\nctxt 100\nbtime 1700000000\nprocesses 12\n";
        assert_eq!(parse_btime(text), Some(1_700_000_000));
        assert_eq!(parse_btime("cpu 1 2 3\n"), None);
    }

    #[test]
    fn max_fds_is_the_soft_limit() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
            Max processes             63304                63304                processes \n\
            Max open files            1024                 1048576              files     \n\
            Max locked memory         8388608              8388608              bytes     \n";
        assert_eq!(parse_max_fds(limits), Some(1024));
        let unlimited = limits.replace("1024                 1048576", "unlimited  unlimited");
        assert_eq!(parse_max_fds(&unlimited), None);
    }
}
