//! The standard `process_*` metrics of the running process (CPU, memory, file descriptors,
//! start time), read from `/proc/self` at each scrape, for Spindle and the seed apps alike.
//!
//! prometheus-client has no process collector, and the Infrastructure dashboard charts the
//! CPU and memory of Spindle and of every service by these names, as every Prometheus
//! client library exports them. Linux only: elsewhere the collector writes nothing. A file
//! that cannot be read or parsed leaves its metrics out of that scrape; it never fails the
//! scrape.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// What `/proc/self` says about this process.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcessStats {
    /// User plus system CPU time, seconds.
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
    pub virtual_bytes: u64,
    /// Unix seconds.
    pub start_time_seconds: f64,
    pub open_fds: Option<u64>,
}

impl ProcessStats {
    /// This process now; `None` off Linux or when `/proc` cannot be read.
    pub fn read() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
        let boot = std::fs::read_to_string("/proc/stat").ok()?;
        // SAFETY: sysconf has no preconditions.
        let (ticks, page) = unsafe { (libc::sysconf(libc::_SC_CLK_TCK), libc::sysconf(libc::_SC_PAGESIZE)) };
        let open_fds = std::fs::read_dir("/proc/self/fd").ok().map(|dir| dir.count() as u64);
        Self::parse(&stat, &statm, &boot, ticks as f64, page as u64, open_fds)
    }

    /// From the text of `/proc/self/stat`, `/proc/self/statm` and `/proc/stat`, clock ticks
    /// per second and the page size.
    pub fn parse(stat: &str, statm: &str, boot: &str, ticks: f64, page: u64, open_fds: Option<u64>) -> Option<Self> {
        if ticks <= 0.0 || page == 0 {
            return None;
        }
        // The command name is in parentheses and may hold spaces: fields are counted after
        // its closing parenthesis, where field 3 (state) is index 0.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
        let (utime, stime, start_ticks, vsize) = (field(14)?, field(15)?, field(22)?, field(23)?);
        let resident_pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
        let boot_time: u64 = boot.lines().find_map(|l| l.strip_prefix("btime "))?.trim().parse().ok()?;
        Some(Self {
            cpu_seconds: (utime + stime) as f64 / ticks,
            resident_bytes: resident_pages * page,
            virtual_bytes: vsize,
            start_time_seconds: boot_time as f64 + start_ticks as f64 / ticks,
            open_fds,
        })
    }
}

/// Writes [`ProcessStats`] under the standard names on each scrape.
#[derive(Debug, Default)]
pub struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(stats) = ProcessStats::read() else { return Ok(()) };
        let cpu = ConstCounter::new(stats.cpu_seconds);
        cpu.encode(encoder.encode_descriptor(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            None,
            cpu.metric_type(),
        )?)?;
        let gauges = [
            ("process_resident_memory_bytes", "Resident memory size in bytes", Some(stats.resident_bytes as f64)),
            ("process_virtual_memory_bytes", "Virtual memory size in bytes", Some(stats.virtual_bytes as f64)),
            (
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds",
                Some(stats.start_time_seconds),
            ),
            ("process_open_fds", "Number of open file descriptors", stats.open_fds.map(|n| n as f64)),
        ];
        for (name, help, value) in gauges {
            let Some(value) = value else { continue };
            let gauge = ConstGauge::new(value);
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files_parse_into_seconds_and_bytes() {
        // A command name with a space and a parenthesis, as /proc writes it.
        let stat = "4242 (my (svc) x) S 1 4242 4242 0 -1 4194560 500 0 0 0 250 50 0 0 20 0 9 0 1000 123456789 300 18446744073709551615";
        let stats =
            ProcessStats::parse(stat, "30000 300 100 1 0 200 0", "cpu 1 2 3\nbtime 1700000000\n", 100.0, 4096, Some(7))
                .expect("parses");
        assert_eq!(stats.cpu_seconds, 3.0);
        assert_eq!(stats.resident_bytes, 300 * 4096);
        assert_eq!(stats.virtual_bytes, 123_456_789);
        assert_eq!(stats.start_time_seconds, 1_700_000_010.0);
        assert_eq!(stats.open_fds, Some(7));
        assert_eq!(ProcessStats::parse("garbage", "", "", 100.0, 4096, None), None);
    }

    #[test]
    fn this_process_is_read_on_linux() {
        if cfg!(target_os = "linux") {
            let stats = ProcessStats::read().expect("/proc/self is readable");
            assert!(stats.resident_bytes > 0 && stats.virtual_bytes >= stats.resident_bytes, "{stats:?}");
            assert!(stats.start_time_seconds > 1.5e9, "{stats:?}");
        }
    }
}
