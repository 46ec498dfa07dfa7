//! Every broker name, in one place.
//!
//! The prefix, the partition count `P` and the retry tiers are the whole topology:
//!
//! ```text
//! {prefix}.events        direct  ──p.{n}──▶ {prefix}.events.p{n}   quorum, n in 0..P
//!                                              │ dead-letters (delivery limit)
//! {prefix}.dlx           fanout  ◀─────────────┘ ──▶ {prefix}.dead  quorum
//! {prefix}.retry         headers ──tier=5s──▶ {prefix}.retry.5s   classic, TTL 5 s ──┐
//!                                ──tier=30s─▶ {prefix}.retry.30s  …                  │
//!                                                   expired: back to {prefix}.events ◀┘
//!                                                   with the original key p.{n}
//! ```
//!
//! The declarations themselves (with their arguments) live in `amqp::declare`; this module is
//! backend-neutral so that the memory backend, the CLI and tests share the names and tiers.

use std::time::Duration;

/// A delay tier of the retry queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RetryTier {
    /// The tier's name, used in queue names and the `tier` header (`5s`, `30s`, `5m`, `30m`).
    pub name: &'static str,
    /// How long a message waits in the tier before going back to its partition.
    pub delay: Duration,
}

/// The retry tiers, shortest first.
pub const RETRY_TIERS: [RetryTier; 4] = [
    RetryTier {
        name: "5s",
        delay: Duration::from_secs(5),
    },
    RetryTier {
        name: "30s",
        delay: Duration::from_secs(30),
    },
    RetryTier {
        name: "5m",
        delay: Duration::from_secs(5 * 60),
    },
    RetryTier {
        name: "30m",
        delay: Duration::from_secs(30 * 60),
    },
];

impl RetryTier {
    /// The smallest tier whose delay is at least `wanted`, or the largest tier when `wanted` is
    /// longer than all of them.
    pub fn for_delay(wanted: Duration) -> RetryTier {
        RETRY_TIERS
            .iter()
            .copied()
            .find(|tier| tier.delay >= wanted)
            .unwrap_or(RETRY_TIERS[RETRY_TIERS.len() - 1])
    }
}

/// Every exchange and queue name of one deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopologyNames {
    /// Exchanges.
    pub exchanges: Vec<String>,
    /// Queues.
    pub queues: Vec<String>,
}

/// The names of one deployment's topology (`prefix` and partition count).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    prefix: String,
    partitions: u16,
}

impl Topology {
    /// The topology of `prefix` with `partitions` partitions. The prefix is not validated here
    /// (`QueueConfig::validate` does that).
    pub fn new(prefix: impl Into<String>, partitions: u16) -> Self {
        Topology {
            prefix: prefix.into(),
            partitions: partitions.max(1),
        }
    }

    /// The prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The partition count `P`.
    pub fn partitions(&self) -> u16 {
        self.partitions
    }

    /// The direct exchange every event is published to.
    pub fn events_exchange(&self) -> String {
        format!("{}.events", self.prefix)
    }

    /// The routing key of partition `n`.
    pub fn routing_key(partition: u16) -> String {
        format!("p.{partition}")
    }

    /// The partition a routing key names, if it is one of ours.
    pub fn partition_of_routing_key(key: &str) -> Option<u16> {
        key.strip_prefix("p.")?.parse().ok()
    }

    /// The queue of partition `n`.
    pub fn partition_queue(&self, partition: u16) -> String {
        format!("{}.events.p{partition}", self.prefix)
    }

    /// The dead-letter exchange (fanout) the partition queues dead-letter into.
    pub fn dead_letter_exchange(&self) -> String {
        format!("{}.dlx", self.prefix)
    }

    /// The dead-letter queue.
    pub fn dead_queue(&self) -> String {
        format!("{}.dead", self.prefix)
    }

    /// The headers exchange in front of the delay queues.
    pub fn retry_exchange(&self) -> String {
        format!("{}.retry", self.prefix)
    }

    /// The delay queue of `tier`.
    pub fn retry_queue(&self, tier: RetryTier) -> String {
        format!("{}.retry.{}", self.prefix, tier.name)
    }

    /// Every name, for deletion and inspection.
    pub fn names(&self) -> TopologyNames {
        let mut queues: Vec<String> = (0..self.partitions)
            .map(|n| self.partition_queue(n))
            .collect();
        queues.push(self.dead_queue());
        queues.extend(RETRY_TIERS.iter().map(|tier| self.retry_queue(*tier)));
        TopologyNames {
            exchanges: vec![
                self.events_exchange(),
                self.dead_letter_exchange(),
                self.retry_exchange(),
            ],
            queues,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tier_is_smallest_at_least_the_delay_capped_at_largest() {
        assert_eq!(RetryTier::for_delay(Duration::ZERO).name, "5s");
        assert_eq!(RetryTier::for_delay(Duration::from_secs(5)).name, "5s");
        assert_eq!(RetryTier::for_delay(Duration::from_secs(6)).name, "30s");
        assert_eq!(RetryTier::for_delay(Duration::from_secs(31)).name, "5m");
        assert_eq!(RetryTier::for_delay(Duration::from_secs(600)).name, "30m");
        assert_eq!(
            RetryTier::for_delay(Duration::from_secs(86_400)).name,
            "30m"
        );
    }

    #[test]
    fn names_cover_everything() {
        let t = Topology::new("np", 2);
        let names = t.names();
        assert_eq!(names.exchanges, ["np.events", "np.dlx", "np.retry"]);
        assert_eq!(
            names.queues,
            [
                "np.events.p0",
                "np.events.p1",
                "np.dead",
                "np.retry.5s",
                "np.retry.30s",
                "np.retry.5m",
                "np.retry.30m"
            ]
        );
        assert_eq!(Topology::routing_key(7), "p.7");
        assert_eq!(Topology::partition_of_routing_key("p.7"), Some(7));
        assert_eq!(Topology::partition_of_routing_key("x.7"), None);
    }
}
