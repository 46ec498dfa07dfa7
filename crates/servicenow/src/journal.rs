//! The discussion history of a record: work notes and additional comments, oldest first.
//!
//! Journal fields read back as `""` from the record itself. The structured source is the
//! `sys_journal_field` table (one row per entry), but it has its own read ACL and answers
//! `200 []` to a user who lacks it. Then the only source left is the record's display value,
//! one text blob per field, newest first, each entry headed
//! `<yyyy-MM-dd HH:mm:ss> - <user display name> (Work notes|Additional comments)`. The blob
//! parser here is total: any text gives a list of entries, never a panic.

use chrono::{DateTime, Utc};
use nowpilot_model::time::parse_glide;
use nowpilot_model::{FieldValue, Record};
use serde::Serialize;

use crate::client::{Client, DisplayValue, ListRequest, ReadOptions};
use crate::error::Error;
use crate::query::EncodedQuery;

/// Most journal entries read for one record.
const MAX_JOURNAL_ENTRIES: usize = 10_000;

/// Which journal field an entry belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JournalKind {
    /// `work_notes` (internal).
    WorkNotes,
    /// `comments` ("Additional comments", visible to the caller).
    Comments,
    /// Another journal field, or text that could not be attributed.
    Other(String),
}

impl JournalKind {
    fn from_element(element: &str) -> Self {
        match element {
            "work_notes" => JournalKind::WorkNotes,
            "comments" => JournalKind::Comments,
            other => JournalKind::Other(other.to_owned()),
        }
    }
}

/// One journal entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JournalEntry {
    /// The journal field.
    pub element: JournalKind,
    /// The text of the entry.
    pub value: String,
    /// When it was written (UTC from `sys_journal_field`; from the display-value fallback the
    /// timestamp is in the integration user's time zone and format, read as UTC when it has
    /// the `yyyy-MM-dd HH:mm:ss` shape, else `None`: set that user's time zone to UTC).
    pub created_on: Option<DateTime<Utc>>,
    /// Who wrote it: the **user name** (`sys_created_by`, e.g. `beth.anglin`) from
    /// `sys_journal_field`, but the **display name** (e.g. `Beth Anglin`) from the
    /// display-value fallback, which is all that source carries.
    pub created_by: String,
}

impl JournalEntry {
    fn from_row(row: &Record) -> Self {
        JournalEntry {
            element: JournalKind::from_element(row.value_or_empty("element")),
            value: row.value_or_empty("value").to_owned(),
            created_on: row.value("sys_created_on").and_then(parse_glide),
            created_by: row.value_or_empty("sys_created_by").to_owned(),
        }
    }
}

/// The header of a blob entry: everything before the `(Work notes)` / `(Additional comments)`
/// label, split at the first ` - `.
fn parse_header(line: &str) -> Option<(Option<DateTime<Utc>>, String, JournalKind)> {
    let line = line.trim_end_matches('\r');
    let (rest, kind) = if let Some(rest) = line.strip_suffix(" (Work notes)") {
        (rest, JournalKind::WorkNotes)
    } else if let Some(rest) = line.strip_suffix(" (Additional comments)") {
        (rest, JournalKind::Comments)
    } else {
        return None;
    };
    let (stamp, user) = rest.split_once(" - ")?;
    // A header starts with a timestamp; requiring digits keeps prose lines ending in
    // "(Work notes)" from being taken for headers.
    let stamp = stamp.trim();
    if stamp.is_empty() || !stamp.starts_with(|c: char| c.is_ascii_digit()) || stamp.len() > 40 {
        return None;
    }
    Some((parse_glide(stamp), user.trim().to_owned(), kind))
}

/// Parses one journal display-value blob into entries, **oldest first**. Text before the first
/// header (or a blob without any header) becomes one entry of kind `Other("")` so nothing is
/// lost. A line in a note that looks exactly like a header starts a new entry: the blob
/// format cannot tell them apart.
pub fn parse_journal_blob(blob: &str) -> Vec<JournalEntry> {
    let mut newest_first = Vec::new();
    let mut current: Option<JournalEntry> = None;
    let mut preamble = String::new();
    for line in blob.split('\n') {
        if let Some((created_on, created_by, element)) = parse_header(line) {
            if let Some(done) = current.take() {
                newest_first.push(finish(done));
            }
            current = Some(JournalEntry {
                element,
                value: String::new(),
                created_on,
                created_by,
            });
            continue;
        }
        let target = match current.as_mut() {
            Some(entry) => &mut entry.value,
            None => &mut preamble,
        };
        if !target.is_empty() || !line.trim().is_empty() {
            target.push_str(line.trim_end_matches('\r'));
            target.push('\n');
        }
    }
    if let Some(done) = current.take() {
        newest_first.push(finish(done));
    }
    let preamble = preamble.trim_end().to_owned();
    if !preamble.is_empty() {
        // Text above the newest header is newer than every headed entry.
        newest_first.insert(
            0,
            JournalEntry {
                element: JournalKind::Other(String::new()),
                value: preamble,
                created_on: None,
                created_by: String::new(),
            },
        );
    }
    newest_first.reverse();
    newest_first
}

fn finish(mut entry: JournalEntry) -> JournalEntry {
    let trimmed = entry.value.trim_end_matches(['\n', '\r']).len();
    entry.value.truncate(trimmed);
    entry
}

/// Merges the per-field blobs (each oldest first after parsing) into one history, oldest
/// first. Entries without a time keep their relative order.
fn merge_sorted(mut entries: Vec<JournalEntry>) -> Vec<JournalEntry> {
    entries.sort_by_key(|e| e.created_on);
    entries
}

/// The entries of a record's `work_notes` and `comments` display values, oldest first.
fn entries_from_display(record: &Record) -> Vec<JournalEntry> {
    let mut entries = Vec::new();
    for field in ["work_notes", "comments"] {
        entries.extend(parse_journal_blob(
            record.display(field).unwrap_or_default(),
        ));
    }
    merge_sorted(entries)
}

impl Client {
    /// The journal of a record, oldest first: from `sys_journal_field`
    /// (`element_id=<sys_id>^element=work_notes^ORelement=comments^ORDERBYsys_created_on`,
    /// paged), or, when that returns nothing (no entries, or its read ACL hides them), from
    /// the record's `work_notes`/`comments` display values.
    pub async fn journal(&self, table: &str, sys_id: &str) -> Result<Vec<JournalEntry>, Error> {
        let rows = self.journal_rows(sys_id).await?;
        if !rows.is_empty() {
            return Ok(rows);
        }
        self.journal_from_display_values(table, sys_id).await
    }

    /// Like [`Client::journal`], for a record already read with display values
    /// (`sysparm_display_value=all` or `true`, all fields): the fallback parses that record's
    /// journal fields instead of reading the record again. A record without them falls back to
    /// reading them.
    pub async fn journal_of(
        &self,
        table: &str,
        record: &Record,
    ) -> Result<Vec<JournalEntry>, Error> {
        let sys_id = record.sys_id().unwrap_or_default();
        let rows = self.journal_rows(sys_id).await?;
        if !rows.is_empty() {
            return Ok(rows);
        }
        let carried = ["work_notes", "comments"].iter().all(|field| {
            matches!(
                record.get(field),
                Some(FieldValue::Reference {
                    display_value: Some(_),
                    ..
                })
            )
        });
        if !carried {
            return self.journal_from_display_values(table, sys_id).await;
        }
        Ok(entries_from_display(record))
    }

    /// The structured journal rows of `sys_id`, oldest first (empty when none are readable).
    async fn journal_rows(&self, sys_id: &str) -> Result<Vec<JournalEntry>, Error> {
        let query = EncodedQuery::new()
            .eq("element_id", sys_id)
            .eq("element", "work_notes")
            .or_eq("element", "comments")
            .order_by("sys_created_on");
        let request = ListRequest::from_query(&query)?.fields([
            "element",
            "value",
            "sys_created_on",
            "sys_created_by",
        ]);
        let rows = self
            .list_all("sys_journal_field", &request, MAX_JOURNAL_ENTRIES)
            .await?;
        Ok(rows.iter().map(JournalEntry::from_row).collect())
    }

    /// The journal from the record's display values only (the fallback of
    /// [`Client::journal`]).
    pub async fn journal_from_display_values(
        &self,
        table: &str,
        sys_id: &str,
    ) -> Result<Vec<JournalEntry>, Error> {
        let options = ReadOptions::default()
            .fields(["work_notes", "comments"])
            .display_value(DisplayValue::Display);
        let record = self.get(table, sys_id, &options).await?;
        Ok(entries_from_display(&record))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BLOB: &str = "2026-05-01 10:05:00 - Beth Anglin (Work notes)\nRestarted the pool.\nLooks fine now.\n\n2026-05-01 10:00:00 - nowpilot integration (Work notes)\n[nowpilot] acknowledged\n\n";

    #[test]
    fn parses_a_blob_oldest_first() {
        let entries = parse_journal_blob(BLOB);
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].created_by, "nowpilot integration");
        assert_eq!(entries[0].value, "[nowpilot] acknowledged");
        assert_eq!(entries[0].created_on, parse_glide("2026-05-01 10:00:00"));
        assert_eq!(entries[1].value, "Restarted the pool.\nLooks fine now.");
        assert_eq!(entries[1].element, JournalKind::WorkNotes);
    }

    #[test]
    fn comments_and_unusual_dates() {
        let entries = parse_journal_blob(
            "01/05/2026 10:00:00 - Caller (Additional comments)\r\nAny news?\r\n\r\n",
        );
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].element, JournalKind::Comments);
        assert_eq!(entries[0].created_on, None);
        assert_eq!(entries[0].value, "Any news?");
    }

    #[test]
    fn text_without_headers_is_kept() {
        let entries = parse_journal_blob("just some text\nsee (Work notes)\n");
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].element, JournalKind::Other(String::new()));
        assert_eq!(entries[0].value, "just some text\nsee (Work notes)");
        assert!(parse_journal_blob("").is_empty());
        assert!(parse_journal_blob("\n\n  \n").is_empty());
    }

    #[test]
    fn merge_interleaves_fields_by_time() {
        let mut all = parse_journal_blob(BLOB);
        all.extend(parse_journal_blob(
            "2026-05-01 10:02:00 - Caller (Additional comments)\nhello\n\n",
        ));
        let merged = merge_sorted(all);
        let values: Vec<_> = merged.iter().map(|e| e.value.as_str()).collect();
        assert_eq!(
            values,
            [
                "[nowpilot] acknowledged",
                "hello",
                "Restarted the pool.\nLooks fine now."
            ]
        );
    }

    #[test]
    fn total_on_garbage() {
        let samples = [
            "",
            " - ",
            " (Work notes)",
            "1 - (Work notes)",
            "1 -  (Additional comments)\n\n\n",
            "\u{0}\u{ffff}é - x (Work notes)",
            "2026-05-01 10:00:00 - (Work notes)",
            "9999-99-99 99:99:99 - X (Work notes)\nbody",
            "\r\r\n\n\r",
        ];
        for s in samples {
            let _ = parse_journal_blob(s);
        }
        let mut state = 0x2545_f491_u32;
        let alphabet: Vec<char> = "0123456789- :()\n\rWorkntesAdiaclm\u{e9}".chars().collect();
        for _ in 0..2000 {
            let mut text = String::new();
            for _ in 0..(state % 120) {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                text.push(alphabet[(state as usize) % alphabet.len()]);
            }
            for entry in parse_journal_blob(&text) {
                assert!(entry.value.len() <= text.len());
            }
        }
    }
}
