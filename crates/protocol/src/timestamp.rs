//! Timestamps as the Azure Mobile Apps table protocol writes them (`createdAt`,
//! `updatedAt`, and OData `datetimeoffset` literals): ISO 8601 in UTC with milliseconds.
//! Written once for Roster's server (`/tables`) and its client (`--protocol
//! azure-mobile-apps`).

use time::OffsetDateTime;

/// `ms` (Unix milliseconds) as `2026-11-28T01:02:03.456Z`; a time out of range is the
/// Unix epoch.
pub fn format_ms(ms: i64) -> String {
    let at = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second(),
        at.millisecond()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milliseconds_format_in_utc_with_three_digits() {
        assert_eq!(format_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_ms(1_769_860_800_123), "2026-01-31T12:00:00.123Z");
        assert_eq!(format_ms(i64::MAX), "1970-01-01T00:00:00.000Z");
    }
}
