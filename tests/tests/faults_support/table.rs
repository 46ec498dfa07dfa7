//! The fault table: one row per scenario, printed to stdout and kept in
//! `target/tmp/fault-table.md` (`CARGO_TARGET_TMPDIR`) for the operations guide.
//!
//! Scenarios run as separate tests, under nextest in separate processes, so each writes its
//! own row file (`fault-table/<order>-<scenario>.md`) and then renders the whole table from
//! every row file present, under a lock file, so concurrent scenarios do not overwrite each
//! other's rows. A row file stays until that scenario runs again: the table shows the latest
//! measurement of each scenario, with its date.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What one scenario measured.
#[derive(Debug, Clone, Default)]
pub(crate) struct Row {
    /// Sort key in the table (the order of the scenarios in the issue).
    pub(crate) order: u8,
    /// The scenario's name.
    pub(crate) scenario: String,
    /// The load and the fault, in a few words.
    pub(crate) load: String,
    /// Whether the poller ran.
    pub(crate) poller: bool,
    /// Callbacks the business rule sent (one per new incident).
    pub(crate) sent: usize,
    /// Callbacks answered 2xx.
    pub(crate) accepted: usize,
    /// Accepted callbacks whose incident got its acknowledgement.
    pub(crate) handled: usize,
    /// Notes beyond one per (incident, plan, action).
    pub(crate) duplicates: usize,
    /// Accepted callbacks whose incident never got its acknowledgement.
    pub(crate) lost: usize,
    /// Messages in the dead-letter queue.
    pub(crate) dead_lettered: u64,
    /// Callbacks answered with an error status (503 while the broker was away).
    pub(crate) refused: usize,
    /// Callbacks that got no answer (connection refused or reset).
    pub(crate) unanswered: usize,
    /// Of the callbacks not accepted, those whose incident was handled anyway (the publish
    /// landed although the answer said otherwise, or the poller found the change).
    pub(crate) unaccepted_handled: usize,
    /// Events left in partition and retry queues once the workers stopped.
    pub(crate) left_in_queues: u64,
    /// Wall time of the scenario.
    pub(crate) duration: Duration,
}

const HEADER: &str = "| scenario | load and fault | poller | callbacks accepted | handled | \
duplicates | lost | dead-lettered | not accepted (error / no answer) | of those handled anyway \
| left in queues | time |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n";

impl Row {
    /// The row as a Markdown table line.
    pub(crate) fn markdown(&self) -> String {
        format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} ({} / {}) | {} | {} | {:.0} s |",
            self.scenario,
            self.load,
            if self.poller { "on" } else { "off" },
            self.accepted,
            self.handled,
            self.duplicates,
            self.lost,
            self.dead_lettered,
            self.refused + self.unanswered,
            self.refused,
            self.unanswered,
            self.unaccepted_handled,
            self.left_in_queues,
            self.duration.as_secs_f64(),
        )
    }
}

/// Prints `row` (with the header) and adds it to `fault-table.md`.
#[allow(clippy::print_stdout)] // The table is meant for stdout (nextest shows it).
pub(crate) fn record(row: &Row) {
    println!("\n{HEADER}{}\n", row.markdown());
    if let Err(error) = write_files(row, Path::new(env!("CARGO_TARGET_TMPDIR"))) {
        eprintln!("fault table: cannot write the table file: {error}");
    }
}

fn write_files(row: &Row, dir: &Path) -> std::io::Result<()> {
    let rows_dir = dir.join("fault-table");
    std::fs::create_dir_all(&rows_dir)?;
    let slug: String = row
        .scenario
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let row_file = rows_dir.join(format!("{:02}-{slug}.md", row.order));
    let date = chrono::Utc::now().format("%Y-%m-%d %H:%M UTC");
    std::fs::write(&row_file, format!("{}\n<!-- {date} -->\n", row.markdown()))?;

    let _lock = TableLock::acquire(&dir.join("fault-table.lock"));
    let mut files: Vec<PathBuf> = std::fs::read_dir(&rows_dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    files.sort();
    let mut table = String::from(HEADER);
    let mut dates = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file)?;
        let mut lines = text.lines();
        if let Some(line) = lines.next() {
            table.push_str(line);
            table.push('\n');
        }
        if let Some(date) = lines.next() {
            dates.push(
                date.trim_start_matches("<!-- ")
                    .trim_end_matches(" -->")
                    .to_owned(),
            );
        }
    }
    dates.sort();
    let _ = write!(
        table,
        "\nMeasured {} to {} (debug build, `cargo nextest run -p nowpilot-tests --test faults`).\n",
        dates.first().map_or("?", String::as_str),
        dates.last().map_or("?", String::as_str),
    );
    let temporary = dir.join(format!("fault-table.md.{}", std::process::id()));
    std::fs::write(&temporary, table)?;
    std::fs::rename(&temporary, dir.join("fault-table.md"))
}

/// A lock file held while the table is rendered; a stale one (left by a killed test) is taken
/// over after a few seconds.
struct TableLock(Option<PathBuf>);

impl TableLock {
    fn acquire(path: &Path) -> TableLock {
        for _ in 0..100 {
            if std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(path)
                .is_ok()
            {
                return TableLock(Some(path.to_owned()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // Nobody renders for 5 s: the lock is stale. Take it over.
        let _ = std::fs::remove_file(path);
        let taken = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .is_ok();
        TableLock(taken.then(|| path.to_owned()))
    }
}

impl Drop for TableLock {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}
