//! Who should own which partition: rendezvous (highest random weight) hashing with bounded
//! loads.
//!
//! Every member computes the same answer from the same member set, with no coordination: each
//! (member, partition) pair gets a weight from a stable hash, and partitions go to their
//! heaviest member. Plain rendezvous hashing balances only on average (with 8 partitions and 4
//! members one member often gets 3 or 4), which would cap a scale-out well below linear. So the
//! pairs are taken heaviest first and a member stops taking partitions at `ceil(P / N)`: every
//! member ends with `floor(P / N)` or `ceil(P / N)`, and a membership change still moves only
//! the partitions whose heaviest pairs changed, plus a few to restore the bound.
//!
//! The hash is FNV-1a 64 followed by the splitmix64 finaliser: stable across Rust versions and
//! platforms (std's `DefaultHasher` is not), and well mixed for short, similar ids.

/// The weight of `member` for `partition`: the same in every process and every version.
pub fn weight(member: &str, partition: u16) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = OFFSET;
    for byte in member
        .as_bytes()
        .iter()
        .chain(&[0xff])
        .chain(&partition.to_be_bytes())
    {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(PRIME);
    }
    // splitmix64 finaliser: FNV alone leaves the high bits of similar inputs correlated.
    hash = (hash ^ (hash >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    hash = (hash ^ (hash >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    hash ^ (hash >> 31)
}

/// The owner of each partition (index = partition) among `members`, or `None` for every
/// partition when there are no members. Duplicate ids count once; the order of `members` does
/// not matter.
pub fn assign(partitions: u16, members: &[String]) -> Vec<Option<String>> {
    let mut ids: Vec<&str> = members.iter().map(String::as_str).collect();
    ids.sort_unstable();
    ids.dedup();
    let count = usize::from(partitions);
    let mut owners: Vec<Option<String>> = vec![None; count];
    if ids.is_empty() {
        return owners;
    }
    let cap = count.div_ceil(ids.len());
    let mut pairs: Vec<(u64, usize, u16)> = Vec::with_capacity(count * ids.len());
    for (index, id) in ids.iter().enumerate() {
        for partition in 0..partitions {
            pairs.push((weight(id, partition), index, partition));
        }
    }
    // Heaviest first; ties (astronomically rare) broken by id order then partition, so every
    // process sorts identically.
    pairs.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    let mut load = vec![0usize; ids.len()];
    let mut left = count;
    for (_, index, partition) in pairs {
        if left == 0 {
            break;
        }
        let slot = &mut owners[usize::from(partition)];
        if slot.is_none() && load[index] < cap {
            *slot = Some(ids[index].to_owned());
            load[index] += 1;
            left -= 1;
        }
    }
    owners
}

/// The partitions `member` should own among `members`.
pub fn partitions_of(partitions: u16, members: &[String], member: &str) -> Vec<u16> {
    assign(partitions, members)
        .iter()
        .enumerate()
        .filter(|(_, owner)| owner.as_deref() == Some(member))
        .filter_map(|(p, _)| u16::try_from(p).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<String> {
        (0..n)
            .map(|i| format!("worker-{i}-{:04x}", i * 7919))
            .collect()
    }

    #[test]
    fn weights_are_pinned() {
        // Pinned so that a change of the hash (which would reshuffle every deployment during a
        // rolling upgrade) is a deliberate decision.
        assert_eq!(weight("a", 0), weight("a", 0));
        assert_ne!(weight("a", 0), weight("a", 1));
        assert_ne!(weight("a", 1), weight("b", 1));
        assert_eq!(weight("worker-1", 3), 0x0c09_7dda_2626_0d3e);
    }

    #[test]
    fn every_partition_has_one_owner_and_loads_are_bounded() {
        for partitions in [1u16, 2, 7, 8, 16, 64, 100] {
            for n in 1..=9 {
                let members = ids(n);
                let owners = assign(partitions, &members);
                assert!(owners.iter().all(Option::is_some));
                let loads: Vec<usize> = members
                    .iter()
                    .map(|m| owners.iter().filter(|o| o.as_deref() == Some(m)).count())
                    .collect();
                let max = usize::from(partitions).div_ceil(n);
                assert!(
                    loads.iter().all(|l| *l <= max),
                    "{partitions}/{n}: {loads:?}"
                );
                assert_eq!(loads.iter().sum::<usize>(), usize::from(partitions));
            }
        }
    }

    #[test]
    fn order_and_duplicates_do_not_matter() {
        let mut members = ids(5);
        let a = assign(16, &members);
        members.reverse();
        members.push(members[0].clone());
        assert_eq!(assign(16, &members), a);
    }

    #[test]
    fn a_join_moves_few_partitions() {
        let before = ids(3);
        let mut after = before.clone();
        after.push("newcomer".to_owned());
        let a = assign(64, &before);
        let b = assign(64, &after);
        let moved = a.iter().zip(&b).filter(|(x, y)| x != y).count();
        // The newcomer needs 16; rebalancing the bound may move a handful more, never most.
        assert!((16..=32).contains(&moved), "moved {moved}");
        assert_eq!(partitions_of(64, &after, "newcomer").len(), 16);
    }

    #[test]
    fn no_members_no_owners() {
        assert_eq!(assign(3, &[]), vec![None, None, None]);
        assert!(partitions_of(3, &[], "x").is_empty());
    }
}
