//! The in-memory request log (`GET /_sim/requests`, [`crate::Simulator::request_log`]).

use std::{collections::VecDeque, sync::Mutex};

use serde::Serialize;

use crate::locks::lock;

/// One HTTP request the simulator answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LoggedRequest {
    /// The HTTP method.
    pub method: String,
    /// The request path (no query string).
    pub path: String,
    /// The table, for Table API requests.
    pub table: Option<String>,
    /// The sys_id, for single-record requests.
    pub sys_id: Option<String>,
    /// The authenticated user, when there was one.
    pub user: Option<String>,
    /// The response status.
    pub status: u16,
    /// When the request arrived, microseconds since the simulator started.
    pub start_us: u64,
    /// When the response was ready, microseconds since the simulator started.
    pub end_us: u64,
}

/// A bounded log: the oldest entries go first.
#[derive(Debug)]
pub(crate) struct RequestLog {
    entries: Mutex<VecDeque<LoggedRequest>>,
    capacity: usize,
}

impl RequestLog {
    /// A log keeping the last `capacity` requests.
    pub(crate) fn new(capacity: usize) -> Self {
        RequestLog {
            entries: Mutex::new(VecDeque::new()),
            capacity: capacity.max(1),
        }
    }

    /// Records a request.
    pub(crate) fn push(&self, entry: LoggedRequest) {
        let mut entries = lock(&self.entries);
        while entries.len() >= self.capacity {
            entries.pop_front();
        }
        entries.push_back(entry);
    }

    /// Every kept request, oldest first.
    pub(crate) fn entries(&self) -> Vec<LoggedRequest> {
        lock(&self.entries).iter().cloned().collect()
    }

    /// Forgets every request.
    pub(crate) fn clear(&self) {
        lock(&self.entries).clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest() {
        let log = RequestLog::new(2);
        for i in 0..3 {
            log.push(LoggedRequest {
                method: "GET".into(),
                path: format!("/{i}"),
                table: None,
                sys_id: None,
                user: None,
                status: 200,
                start_us: i,
                end_us: i,
            });
        }
        let paths: Vec<String> = log.entries().into_iter().map(|e| e.path).collect();
        assert_eq!(paths, ["/1", "/2"]);
        log.clear();
        assert!(log.entries().is_empty());
    }
}
