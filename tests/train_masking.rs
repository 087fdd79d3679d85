//! MLM masking (upstream `cramming/backend/utils.py` collators, JonasGeiping/cramming 196c991; v1 at Last1.13release): exact counts and splits for v2, Bernoulli with
//! excluded specials for v1, determinism from the `masking` seed.
use crambench::train::masking::{
    py_round, MaskCounts, Masker, MaskingKind, IGNORE, MASK_ID, NUM_SPECIAL,
};

const S: usize = 128;
const B: usize = 64;
const V: u64 = 32768;

/// A batch of ids where every position is distinguishable and specials appear at fixed spots.
fn batch(seed: i64) -> Vec<i64> {
    (0..B * S)
        .map(|i| {
            let pos = i % S;
            match pos {
                0 => 4,   // <cls>
                63 => 5,  // <sep>
                127 => 2, // </s>
                _ => 7 + ((i as i64 * 7919 + seed * 104_729) % 30_000),
            }
        })
        .collect()
}

fn masker(kind: MaskingKind, p: f64, seed: u64) -> Masker {
    Masker {
        kind,
        p,
        vocab_size: V,
        seed,
    }
}

#[test]
fn python_rounding_half_to_even() {
    assert_eq!(py_round(0.25 * 128.0), 32);
    assert_eq!(py_round(0.8 * 32.0), 26);
    assert_eq!(py_round(0.9 * 32.0), 29);
    assert_eq!(py_round(2.5), 2);
    assert_eq!(py_round(3.5), 4);
    assert_eq!(py_round(0.15 * 128.0), 19);
}

#[test]
fn v2_exact_count_and_26_3_3_split_per_sequence() {
    let m = masker(MaskingKind::V2Exact, 0.25, 42);
    assert_eq!(m.per_sequence(S), 32);
    let orig = batch(1);
    let mut ids = orig.clone();
    let mut labels = vec![0i64; B * S];
    let c = m.mask(&mut ids, &mut labels, S, 0);
    assert_eq!(
        c,
        MaskCounts {
            masked: 32 * B,
            replaced_by_mask: 26 * B,
            replaced_by_random: 3 * B,
            kept: 3 * B
        }
    );
    let mut special_masked = 0;
    for row in 0..B {
        let r = row * S..(row + 1) * S;
        let (o, x, l) = (&orig[r.clone()], &ids[r.clone()], &labels[r]);
        let masked: Vec<usize> = (0..S).filter(|&j| l[j] != IGNORE).collect();
        assert_eq!(masked.len(), 32, "row {row}");
        for j in 0..S {
            if l[j] == IGNORE {
                assert_eq!(x[j], o[j], "unmasked positions are unchanged");
            } else {
                assert_eq!(l[j], o[j], "labels are the original ids");
                if o[j] < NUM_SPECIAL {
                    special_masked += 1;
                }
            }
        }
        let to_mask = masked.iter().filter(|&&j| x[j] == MASK_ID).count();
        // Random replacements may coincide with the original or with <mask>, so count by
        // difference: exactly 26 became <mask> deliberately; the rest (6) are random or kept.
        assert!(to_mask >= 26, "row {row}: {to_mask}");
        let changed_other = masked
            .iter()
            .filter(|&&j| x[j] != MASK_ID && x[j] != o[j])
            .count();
        assert!(changed_other <= 3, "row {row}: {changed_other}");
        assert!(x.iter().all(|&t| (0..V as i64).contains(&t)));
    }
    // Special tokens are not excluded: with 64 rows × 3 specials at 25%, some get masked.
    assert!(special_masked > 0);
}

#[test]
fn v2_positions_are_uniform() {
    let m = masker(MaskingKind::V2Exact, 0.25, 7);
    let mut hits = vec![0u32; S];
    for stream in 0..200u64 {
        let mut ids = batch(0);
        let mut labels = vec![0i64; B * S];
        m.mask(&mut ids, &mut labels, S, stream);
        for (i, l) in labels.iter().enumerate() {
            if *l != IGNORE {
                hits[i % S] += 1;
            }
        }
    }
    // Each position: Binomial(12800, 0.25), mean 3200, sd ≈ 49; allow 6 sd.
    for (pos, h) in hits.iter().enumerate() {
        assert!((*h as f64 - 3200.0).abs() < 300.0, "position {pos}: {h}");
    }
}

#[test]
fn v2_other_probabilities_round_like_python() {
    // p = 0.15, S = 128: n = round(19.2) = 19, mask round(15.2) = 15, random round(17.1) − 15 = 2.
    let m = masker(MaskingKind::V2Exact, 0.15, 3);
    let mut ids = batch(2);
    let mut labels = vec![0i64; B * S];
    let c = m.mask(&mut ids, &mut labels, S, 5);
    assert_eq!(
        c,
        MaskCounts {
            masked: 19 * B,
            replaced_by_mask: 15 * B,
            replaced_by_random: 2 * B,
            kept: 2 * B
        }
    );
}

#[test]
fn v1_bernoulli_excludes_specials_and_splits_80_10_10_by_draw() {
    let m = masker(MaskingKind::V1Bernoulli, 0.15, 11);
    let mut total = MaskCounts::default();
    let mut eligible = 0usize;
    for stream in 0..50u64 {
        let orig = batch(stream as i64);
        let mut ids = orig.clone();
        let mut labels = vec![0i64; B * S];
        let c = m.mask(&mut ids, &mut labels, S, stream);
        for j in 0..B * S {
            if orig[j] < NUM_SPECIAL {
                assert_eq!(labels[j], IGNORE, "special token masked");
                assert_eq!(ids[j], orig[j]);
            } else {
                eligible += 1;
            }
            if labels[j] == IGNORE {
                assert_eq!(ids[j], orig[j]);
            } else {
                assert_eq!(labels[j], orig[j]);
            }
        }
        assert_eq!(c.masked, c.replaced_by_mask + c.replaced_by_random + c.kept);
        assert_eq!(c.masked, labels.iter().filter(|&&l| l != IGNORE).count());
        total.masked += c.masked;
        total.replaced_by_mask += c.replaced_by_mask;
        total.replaced_by_random += c.replaced_by_random;
        total.kept += c.kept;
    }
    let rate = total.masked as f64 / eligible as f64;
    assert!((rate - 0.15).abs() < 0.005, "mask rate {rate}");
    let f = |x: usize| x as f64 / total.masked as f64;
    assert!((f(total.replaced_by_mask) - 0.8).abs() < 0.01);
    assert!((f(total.replaced_by_random) - 0.1).abs() < 0.01);
    assert!((f(total.kept) - 0.1).abs() < 0.01);
}

#[test]
fn masks_depend_only_on_seed_and_stream() {
    let m = masker(MaskingKind::V2Exact, 0.25, 99);
    let run = |m: &Masker, stream| {
        let mut ids = batch(0);
        let mut labels = vec![0i64; B * S];
        m.mask(&mut ids, &mut labels, S, stream);
        (ids, labels)
    };
    assert_eq!(run(&m, 17), run(&m, 17));
    assert_ne!(run(&m, 17), run(&m, 18));
    assert_ne!(
        run(&m, 17),
        run(&masker(MaskingKind::V2Exact, 0.25, 100), 17)
    );
}
