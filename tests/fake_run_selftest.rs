//! The fake run of `tests/common/fake_run.rs` must be what `crambench::record` accepts, so the
//! tests built on it test the tools, not the fixture.
mod common;
use crambench::manifest::keys;
use crambench::record::RunRecord;

#[test]
fn fake_run_opens_validates_and_verifies() {
    let d = tempfile::tempdir().unwrap();
    let (sk, pk) = common::fake_run::keypair(&d.path().join("keys"), "t");
    let run = d.path().join("run");
    common::fake_run::write_fake_run(&run, &common::fake_run::FakeRun::default(), &sk);
    let r = RunRecord::open(&run).unwrap();
    r.require_run().unwrap();
    assert!(r.signed());
    r.verify(&[keys::load_public_key(&pk).unwrap()], 1).unwrap();
    let (rule, v) = r.aggregate().unwrap();
    assert_eq!(rule, "demo");
    assert!(v > 50.0 && v < 100.0, "{v}");
    assert!(r.predictions_file("demo-sentiment", 2).unwrap().is_file());
    assert!(r.metrics_log().unwrap().is_file());
    // A bare statement opens too, and is unsigned.
    let bare = RunRecord::open(&run.join("manifest.json")).unwrap();
    assert!(!bare.signed());
    assert!(bare.verify(&[], 1).is_err());
}
