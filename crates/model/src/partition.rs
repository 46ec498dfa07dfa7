//! Which partition an incident's events go to. **Part of the wire contract**: every ingress,
//! poller and worker of a deployment must agree, across versions.
//!
//! `partition = fnv1a_32(sys_id as ASCII bytes) mod partitions`, where FNV-1a 32-bit starts at
//! offset basis `0x811c9dc5` and, for each byte, XORs it in and multiplies by the prime
//! `0x01000193` (wrapping). The sys_id is used exactly as ServiceNow writes it (32 lowercase hex
//! characters). One incident therefore always lands in one partition queue, which is what lets a
//! worker handle one incident strictly in order while others run in parallel.

/// The default number of partitions.
pub const DEFAULT_PARTITIONS: u16 = 16;

/// FNV-1a, 32-bit.
pub fn fnv1a_32(bytes: &[u8]) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for &b in bytes {
        hash ^= u32::from(b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash
}

/// The partition (0-based) of `sys_id` among `partitions` (treated as 1 when 0).
pub fn partition_of(sys_id: &str, partitions: u16) -> u16 {
    let p = u32::from(partitions.max(1));
    // The remainder is below `partitions`, so it fits in u16.
    u16::try_from(fnv1a_32(sys_id.as_bytes()) % p).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_reference_vectors() {
        // Published FNV-1a 32-bit test vectors.
        assert_eq!(fnv1a_32(b""), 0x811c_9dc5);
        assert_eq!(fnv1a_32(b"a"), 0xe40c_292c);
        assert_eq!(fnv1a_32(b"foobar"), 0xbf9c_f968);
    }

    #[test]
    fn pinned_partitions_never_change() {
        // Changing these breaks running deployments: events of one incident would split.
        assert_eq!(partition_of("9d385017c611228701d22104cc95c371", 16), 6);
        assert_eq!(partition_of("46d44a23a9fe19810012d100cca80666", 16), 4);
        assert_eq!(partition_of("anything", 1), 0);
        assert_eq!(partition_of("anything", 0), 0);
    }

    #[test]
    fn spreads_evenly() {
        let mut counts = [0u32; 16];
        for i in 0..16_000u32 {
            let sys_id = format!("{:032x}", u128::from(i).wrapping_mul(0x9e37_79b9_7f4a_7c15));
            counts[usize::from(partition_of(&sys_id, 16))] += 1;
        }
        for c in counts {
            assert!((800..1200).contains(&c), "{counts:?}");
        }
    }
}
