//! ServiceNow's date-time format.
//!
//! The Table API returns stored date-times as UTC `yyyy-MM-dd HH:mm:ss` (no `T`, no zone) when
//! `sysparm_display_value=false`, and encoded queries compare against the same literal form.

use chrono::{DateTime, NaiveDateTime, Utc};

/// The `strftime` pattern of a stored ServiceNow date-time.
pub const GLIDE_FORMAT: &str = "%Y-%m-%d %H:%M:%S";

/// Parses a stored ServiceNow date-time (`2026-05-01 10:00:00`, UTC). Also accepts RFC 3339,
/// which some peers send. `None` for anything else, including `""`.
pub fn parse_glide(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    NaiveDateTime::parse_from_str(s, GLIDE_FORMAT)
        .map(|n| n.and_utc())
        .ok()
        .or_else(|| {
            DateTime::parse_from_rfc3339(s)
                .ok()
                .map(|d| d.with_timezone(&Utc))
        })
}

/// Formats a UTC instant the way ServiceNow stores it.
pub fn format_glide(t: DateTime<Utc>) -> String {
    t.format(GLIDE_FORMAT).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let t = parse_glide("2026-05-01 10:00:07").unwrap();
        assert_eq!(format_glide(t), "2026-05-01 10:00:07");
        assert_eq!(parse_glide("2026-05-01T10:00:07Z"), Some(t));
        assert_eq!(parse_glide(""), None);
        assert_eq!(parse_glide("2026-13-01 10:00:07"), None);
    }
}
