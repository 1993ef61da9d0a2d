//! Wall-clock helpers: Unix milliseconds shared between processes, and UTC timestamps.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Now as Unix milliseconds.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
/// The `Instant` of a Unix time in milliseconds (in the past or the future).
pub fn instant_of(unix_ms_at: u64) -> Instant {
    let now_ms = unix_ms();
    let now = Instant::now();
    if unix_ms_at >= now_ms {
        now + Duration::from_millis(unix_ms_at - now_ms)
    } else {
        now.checked_sub(Duration::from_millis(now_ms - unix_ms_at))
            .unwrap_or(now)
    }
}

/// Now as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn utc_now() -> String {
    let text = utc_ms(unix_ms());
    // Without the milliseconds: `...SS.mmmZ` → `...SSZ`.
    format!("{}Z", &text[..19])
}

/// Unix milliseconds `ms` as RFC 3339 `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn utc_ms(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + (m <= 2) as i64;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn unix_milliseconds_format_as_rfc3339() {
        assert_eq!(super::utc_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(super::utc_ms(1_795_282_200_123), "2026-11-21T17:30:00.123Z");
        assert_eq!(super::utc_now().len(), 20);
    }
}
