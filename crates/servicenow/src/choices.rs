//! Instance-specific choice lists and the priority lookup.
//!
//! Close codes, hold reasons and the impact × urgency → priority matrix differ between
//! releases and customers, so they are read from the instance: `sys_choice` and
//! `dl_u_priority`.

use std::collections::HashSet;

use nowpilot_model::{Impact, Priority, PriorityMatrix, Urgency};
use serde::Serialize;

use crate::client::{Client, ListRequest};
use crate::error::Error;
use crate::query::EncodedQuery;

/// Most choices read for one element.
const MAX_CHOICES: usize = 1000;

/// One choice of a choice field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Choice {
    /// The stored value (what the Table API reads and writes).
    pub value: String,
    /// The label shown to users.
    pub label: String,
    /// The display order, when set.
    pub sequence: Option<i64>,
}

/// Where a priority matrix came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "source", rename_all = "snake_case")]
pub enum MatrixSource {
    /// Read from the instance's `dl_u_priority`.
    Instance {
        /// Active rows used.
        rows: usize,
        /// Cells the instance has no usable row for; they keep the out-of-the-box value.
        missing_cells: usize,
    },
    /// The out-of-the-box matrix, because the table had no usable active rows.
    DefaultEmpty,
    /// The out-of-the-box matrix, because the table could not be read.
    DefaultUnreadable {
        /// Why (the error message).
        reason: String,
    },
}

/// A priority matrix and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriorityMatrixReport {
    /// The matrix to use.
    pub matrix: PriorityMatrix,
    /// Where it came from.
    pub source: MatrixSource,
}

impl Client {
    /// The active choices of `table.element`, ordered by sequence
    /// (`name=<table>^element=<element>^inactive=false^ORDERBYsequence`). Rows repeated per
    /// language are reduced to the first per value.
    pub async fn choices(&self, table: &str, element: &str) -> Result<Vec<Choice>, Error> {
        let query = EncodedQuery::new()
            .eq("name", table)
            .eq("element", element)
            .eq("inactive", "false")
            .order_by("sequence");
        let request = ListRequest::from_query(&query)?.fields(["value", "label", "sequence"]);
        let rows = self.list_all("sys_choice", &request, MAX_CHOICES).await?;
        let mut seen = HashSet::new();
        Ok(rows
            .iter()
            .filter_map(|row| {
                let value = row.value_or_empty("value").to_owned();
                seen.insert(value.clone()).then(|| Choice {
                    label: row.value_or_empty("label").to_owned(),
                    sequence: row.value("sequence").and_then(|s| s.trim().parse().ok()),
                    value,
                })
            })
            .collect())
    }

    /// The incident resolution codes (`incident.close_code`).
    pub async fn close_codes(&self) -> Result<Vec<Choice>, Error> {
        self.choices("incident", "close_code").await
    }

    /// The incident on-hold reasons (`incident.hold_reason`).
    pub async fn hold_reasons(&self) -> Result<Vec<Choice>, Error> {
        self.choices("incident", "hold_reason").await
    }

    /// The priority lookup from `dl_u_priority` (active rows). Falls back to the
    /// out-of-the-box matrix when the table is empty or unreadable, and says which; this
    /// never fails.
    pub async fn priority_matrix(&self) -> PriorityMatrixReport {
        let query = EncodedQuery::new().eq("active", "true");
        let request = match ListRequest::from_query(&query) {
            Ok(r) => r.fields(["impact", "urgency", "priority"]),
            Err(e) => {
                return PriorityMatrixReport {
                    matrix: PriorityMatrix::default(),
                    source: MatrixSource::DefaultUnreadable {
                        reason: e.to_string(),
                    },
                };
            }
        };
        match self.list_all("dl_u_priority", &request, 100).await {
            Ok(rows) => matrix_from_rows(&rows),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read dl_u_priority; using the out-of-the-box priority matrix");
                PriorityMatrixReport {
                    matrix: PriorityMatrix::default(),
                    source: MatrixSource::DefaultUnreadable {
                        reason: e.to_string(),
                    },
                }
            }
        }
    }
}

/// Builds a matrix from `dl_u_priority` rows. The first usable row for a cell wins; rows with
/// unknown values are ignored; cells without a row keep the default.
pub fn matrix_from_rows(rows: &[nowpilot_model::Record]) -> PriorityMatrixReport {
    let default = PriorityMatrix::default();
    let mut cells: [[Option<Priority>; 3]; 3] = [[None; 3]; 3];
    let mut used = 0;
    for row in rows {
        let parsed = (
            row.value("impact").and_then(Impact::from_value),
            row.value("urgency").and_then(Urgency::from_value),
            row.value("priority").and_then(Priority::from_value),
        );
        let (Some(impact), Some(urgency), Some(priority)) = parsed else {
            continue;
        };
        let cell = cells
            .get_mut(usize::from(impact.number()).saturating_sub(1))
            .and_then(|r| r.get_mut(usize::from(urgency.number()).saturating_sub(1)));
        if let Some(cell @ None) = cell {
            *cell = Some(priority);
            used += 1;
        }
    }
    if used == 0 {
        return PriorityMatrixReport {
            matrix: default,
            source: MatrixSource::DefaultEmpty,
        };
    }
    let mut full = [[Priority::Planning; 3]; 3];
    let mut missing = 0;
    for impact in Impact::ALL {
        for urgency in Urgency::ALL {
            let (i, u) = (
                usize::from(impact.number() - 1),
                usize::from(urgency.number() - 1),
            );
            let value = cells.get(i).and_then(|r| r.get(u)).copied().flatten();
            if value.is_none() {
                missing += 1;
            }
            if let Some(slot) = full.get_mut(i).and_then(|r| r.get_mut(u)) {
                *slot = value.unwrap_or_else(|| default.priority(*impact, *urgency));
            }
        }
    }
    PriorityMatrixReport {
        matrix: PriorityMatrix::from_cells(full),
        source: MatrixSource::Instance {
            rows: used,
            missing_cells: missing,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nowpilot_model::Record;

    fn row(i: &str, u: &str, p: &str) -> Record {
        let mut r = Record::new();
        r.set("impact", i);
        r.set("urgency", u);
        r.set("priority", p);
        r
    }

    #[test]
    fn custom_matrix_with_gaps() {
        // A customer who made impact 1 / urgency 3 a priority 2.
        let rows = vec![
            row("1", "1", "1"),
            row("1", "3", "2"),
            row("1", "3", "5"),
            row("x", "1", "1"),
            row("2", "2", "9"),
        ];
        let report = matrix_from_rows(&rows);
        assert_eq!(
            report.source,
            MatrixSource::Instance {
                rows: 2,
                missing_cells: 7
            }
        );
        assert_eq!(
            report.matrix.priority(Impact::High, Urgency::Low),
            Priority::High
        );
        assert_eq!(
            report.matrix.priority(Impact::Low, Urgency::Low),
            Priority::Planning
        );
    }

    #[test]
    fn empty_or_garbage_gives_the_default() {
        let report = matrix_from_rows(&[row("a", "b", "c")]);
        assert_eq!(report.source, MatrixSource::DefaultEmpty);
        assert_eq!(report.matrix, PriorityMatrix::default());
    }
}
