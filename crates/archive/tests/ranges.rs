//! Random access into planned archives: every range's segments, with blob parts read from
//! the blobs, are exactly those bytes of `write_tar`'s output.

#[path = "plans/mod.rs"]
mod common;

use std::collections::HashMap;

use common::{build, spec, tar_of, Spec};
use ferry_archive::{Plan, Segment};
use ferry_core::Digest;
use proptest::prelude::*;

fn segs(plan: &Plan, start: u64, len: u64) -> impl Iterator<Item = Segment<'static>> + '_ {
    plan.segments(start, len).map(Segment::into_owned)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn every_range_of_a_planned_tar_reassembles_to_write_tars_bytes(
        specs in prop::collection::vec(spec(), 0..4),
        ranges in prop::collection::vec((any::<u64>(), any::<u64>()), 1..24),
    ) {
        let (mem, plan) = build(&specs);
        let tar = tar_of(&mem, &plan);
        let total = tar.len() as u64;
        prop_assert_eq!(mem.assemble(segs(&plan, 0, total)), tar.clone());
        for (a, b) in ranges {
            // Mostly inside the archive, sometimes past its end.
            let start = a % (total + 600);
            let len = b % (total + 600 - start.min(total));
            let end = (start + len).min(total);
            let want = if start < total { &tar[start as usize..end as usize] } else { &[][..] };
            prop_assert_eq!(&mem.assemble(segs(&plan, start, len))[..], want,
                "range {}+{} of {}", start, len, total);
            // blobs_in names exactly the blobs whose parts the range holds.
            let mut from_segments: Vec<Digest> = plan
                .segments(start, len)
                .filter_map(|s| match s { Segment::Blob { digest, .. } => Some(digest), _ => None })
                .collect();
            from_segments.dedup();
            let named: Vec<Digest> = plan.blobs_in(start, len).into_iter().cloned().collect();
            prop_assert_eq!(named, from_segments);
        }
    }

    #[test]
    fn the_combined_crc_of_a_planned_tar_is_its_direct_crc(
        specs in prop::collection::vec(spec(), 0..4),
    ) {
        let (mem, plan) = build(&specs);
        let tar = tar_of(&mem, &plan);
        let crcs: HashMap<Digest, u32> =
            mem.0.iter().map(|(d, b)| (d.clone(), crc32fast::hash(b))).collect();
        prop_assert_eq!(plan.crc32(|d| crcs.get(d).copied()), Some(crc32fast::hash(&tar)));
    }
}

#[test]
fn a_crc_needs_every_blobs_crc() {
    let spec = Spec {
        name: "alpine:3.20".into(),
        layers: vec![3, 4],
        sha512: false,
    };
    let (mem, plan) = build(&[spec]);
    let some: Vec<&Digest> = plan.blobs_in(0, plan.len());
    assert_eq!(some.len(), 4, "manifest, config and two layers");
    let missing = some[3].clone();
    assert_eq!(
        plan.crc32(|d| (*d != missing).then(|| crc32fast::hash(&mem.0[d]))),
        None
    );
}

#[test]
fn the_etag_changes_with_any_byte_and_only_then() {
    let spec = |name: &str, layers: Vec<usize>| Spec {
        name: name.into(),
        layers,
        sha512: false,
    };
    let (_, a) = build(&[spec("alpine:3.20", vec![1, 2])]);
    let (_, same) = build(&[spec("alpine:3.20", vec![1, 2])]);
    let (_, other_name) = build(&[spec("alpine:3.21", vec![1, 2])]);
    let (_, other_layer) = build(&[spec("alpine:3.20", vec![1, 3])]);
    let (_, other_order) = build(&[spec("alpine:3.20", vec![2, 1])]);
    let tag = a.etag();
    assert!(
        tag.starts_with("\"ferry-tar-") && tag.ends_with('"'),
        "{tag}"
    );
    assert_eq!(tag.len(), "\"ferry-tar-\"".len() + 64);
    assert_eq!(tag, same.etag());
    for b in [other_name, other_layer, other_order] {
        assert_ne!(tag, b.etag());
    }
}

#[test]
fn ranges_past_the_end_and_in_the_end_blocks() {
    let (mem, plan) = build(&[Spec {
        name: "busybox".into(),
        layers: vec![2],
        sha512: true,
    }]);
    let tar = tar_of(&mem, &plan);
    let n = plan.len();
    assert_eq!(plan.segments(n, 10).count(), 0);
    assert_eq!(plan.segments(n + 5, 10).count(), 0);
    assert_eq!(plan.segments(3, 0).count(), 0);
    assert!(plan.blobs_in(n, 10).is_empty());
    assert_eq!(
        plan.segments(n - 1500, 2000).collect::<Vec<_>>().last(),
        Some(&Segment::Zeros(1024))
    );
    assert_eq!(
        mem.assemble(segs(&plan, n - 1500, u64::MAX)),
        &tar[(n - 1500) as usize..]
    );
    // An empty range inside a blob needs no blob.
    let (_, body, _) = plan.blob_regions()[0].clone();
    assert!(plan.blobs_in(body + 1, 0).is_empty());
    assert_eq!(plan.blobs_in(body + 1, 1).len(), 1);
}

/// Sizes from a hostile manifest that add up past 64 bits: nothing is produced from them.
#[test]
fn a_plan_too_large_to_write_yields_no_segments() {
    use ferry_archive::{ArchiveImage, ImageParts, ZipError, ZipPlan};
    use ferry_core::{media, Descriptor, Reference};
    let d = |s: &str, size| {
        Descriptor::new(media::OCI_LAYER_GZIP, Digest::sha256_of(s.as_bytes()), size)
    };
    let img = ArchiveImage::single(
        "huge:1".parse::<Reference>().unwrap(),
        ImageParts {
            manifest: d("m", 10),
            config: d("c", 10),
            layers: vec![d("a", u64::MAX / 2), d("b", u64::MAX / 2)],
            platform: None,
        },
    );
    let plan = Plan::new(&[img]);
    assert_eq!(plan.checked_len(), None);
    assert_eq!(plan.segments(0, 4096).count(), 0);
    assert!(plan.blobs_in(0, 4096).is_empty());
    assert_eq!(plan.crc32(|_| Some(0)), None);
    assert_eq!(
        ZipPlan::new(plan, "huge.tar").unwrap_err(),
        ZipError::TooLarge
    );
}
