//! Human-readable sizes and times, shared by logs, the CLI and the UI.

use chrono::{DateTime, Local, TimeZone, Utc};

/// `1536` → `"1.50 KiB"`.
pub fn human_size(bytes: u64) -> String {
    humansize::format_size(bytes, humansize::BINARY)
}

/// Nanoseconds since the epoch → local time, `2026-11-24 21:03:05`.
pub fn local_time(mtime_ns: i64) -> String {
    Local
        .timestamp_nanos(mtime_ns)
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

/// Nanoseconds since the epoch → RFC 3339 in UTC with nanoseconds.
pub fn rfc3339(mtime_ns: i64) -> String {
    DateTime::<Utc>::from_timestamp_nanos(mtime_ns)
        .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_times() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(1536), "1.50 KiB");
        assert_eq!(human_size(5 * 1024 * 1024), "5 MiB");
        assert_eq!(
            rfc3339(1_500_000_000_123_456_789),
            "2017-07-14T02:40:00.123456789Z"
        );
        assert_eq!(local_time(0).len(), 19);
    }
}
