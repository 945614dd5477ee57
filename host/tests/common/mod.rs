//! What the host's property tests share.

use proptest::test_runner::{Config as ProptestConfig, RngSeed};

/// 256 cases from a fixed seed (each overridable with `PROPTEST_CASES` /
/// `PROPTEST_RNG_SEED`); a failure prints its input and writes nothing next to
/// the sources; shrinking stops after a minute.
pub fn proptest_config(seed: u64) -> ProptestConfig {
    let mut c = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        c.cases = 256;
    }
    if std::env::var_os("PROPTEST_RNG_SEED").is_none() {
        c.rng_seed = RngSeed::Fixed(seed);
    }
    c.failure_persistence = None;
    c.max_shrink_time = 60_000;
    c
}

/// Remove `dir` and everything in it, if it is there. A failure is only noted: a temp folder
/// left behind does not change a test's outcome.
pub fn remove_dir(dir: &std::path::Path) {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            eprintln!("note: could not remove {}: {e}", dir.display());
        }
        _ => {}
    }
}
