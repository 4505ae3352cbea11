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

/// A round-trip time in microseconds, the one way the CLI and the UI show
/// it: `640 µs` under a millisecond, `1.3 ms` above.
pub fn rtt(us: u64) -> String {
    if us < 1000 {
        format!("{us} µs")
    } else {
        format!("{:.1} ms", us as f64 / 1000.0)
    }
}

/// An uptime in seconds, the one way the CLI and the UI show it: `45s`,
/// `3m07s`, `2h05m`, `3d04h`.
pub fn uptime(s: u64) -> String {
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86400, s % 86400 / 3600),
    }
}

/// A transfer rate, the one way the CLI's progress bars, the UI's fetch
/// gauge and its sync progress show it: `1.50 KiB/s`, `95 MiB/s`.
pub fn rate(bytes_per_s: u64) -> String {
    format!("{}/s", human_size(bytes_per_s))
}

/// A time left, rounded the way people say it, the one way the CLI and the
/// UI show it: `45 s`, `3 min 7 s`, `2 h 5 min`.
pub fn eta(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs} s"),
        60..3600 => format!("{} min {} s", secs / 60, secs % 60),
        _ => format!("{} h {} min", secs / 3600, secs % 3600 / 60),
    }
}

/// How long ago something happened, rounded down the way people say it,
/// the one way the CLI and the UI show it: `just now` (under 10 s),
/// `45 s ago`, `3 min ago`, `2 h ago`, `1 day ago`, `12 days ago`.
pub fn ago(secs: u64) -> String {
    match secs {
        0..10 => "just now".to_string(),
        10..60 => format!("{secs} s ago"),
        60..3600 => format!("{} min ago", secs / 60),
        3600..86400 => format!("{} h ago", secs / 3600),
        86400..172800 => "1 day ago".to_string(),
        _ => format!("{} days ago", secs / 86400),
    }
}

/// A timeout or delay in words for messages: `10 s`, `1.5 s`, `500 ms`.
pub fn duration(d: std::time::Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms} ms")
    } else if ms.is_multiple_of(1000) {
        format!("{} s", ms / 1000)
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
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

    #[test]
    fn rtts_uptimes_and_durations() {
        assert_eq!(rtt(0), "0 µs");
        assert_eq!(rtt(640), "640 µs");
        assert_eq!(rtt(1_260), "1.3 ms");
        assert_eq!(rtt(31_000), "31.0 ms");
        assert_eq!(uptime(45), "45s");
        assert_eq!(uptime(187), "3m07s");
        assert_eq!(uptime(7_500), "2h05m");
        assert_eq!(uptime(273_600), "3d04h");
        use std::time::Duration;
        assert_eq!(duration(Duration::from_secs(10)), "10 s");
        assert_eq!(duration(Duration::from_millis(1500)), "1.5 s");
        assert_eq!(duration(Duration::from_millis(500)), "500 ms");
    }

    #[test]
    fn rates_and_times_left() {
        assert_eq!(rate(0), "0 B/s");
        assert_eq!(rate(1536), "1.50 KiB/s");
        assert_eq!(rate(95 << 20), "95 MiB/s");
        assert_eq!(eta(0), "0 s");
        assert_eq!(eta(59), "59 s");
        assert_eq!(eta(187), "3 min 7 s");
        assert_eq!(eta(7_500), "2 h 5 min");
    }

    #[test]
    fn times_ago() {
        assert_eq!(ago(0), "just now");
        assert_eq!(ago(9), "just now");
        assert_eq!(ago(10), "10 s ago");
        assert_eq!(ago(187), "3 min ago");
        assert_eq!(ago(7_500), "2 h ago");
        assert_eq!(ago(86_400), "1 day ago");
        assert_eq!(ago(86_400 * 12 + 5), "12 days ago");
    }
}
