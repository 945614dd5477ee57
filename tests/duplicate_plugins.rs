//! One plugin name defined twice: in one folder it is a conflict naming both files; in an
//! earlier folder of the search path it shadows the later one.

use tapeline_tests::{code, library_file_name, plugin_dir, run, stderr, stdout, TempDir};

fn copy_gain_to(dir: &std::path::Path, as_name: &str) -> std::path::PathBuf {
    let src = plugin_dir().join(library_file_name("tapeline_gain"));
    let dst = dir.join(library_file_name(as_name));
    std::fs::copy(&src, &dst).expect("copy the gain library");
    dst
}

#[test]
fn two_libraries_in_one_folder_defining_a_name_is_an_error_naming_both_files() {
    let dir = TempDir::new("dup-same-folder");
    let a = copy_gain_to(dir.path(), "gain_a");
    let b = copy_gain_to(dir.path(), "gain_b");
    let dir_arg = dir.path().to_str().unwrap();

    let out = run(["plugins", "inspect", "gain", "--plugin-dir", dir_arg]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let err = stderr(&out);
    let first = err.lines().next().unwrap_or_default();
    assert!(
        first.contains("plugin `gain` is defined by two libraries"),
        "{err}"
    );
    assert!(
        first.contains(a.to_str().unwrap()) && first.contains(b.to_str().unwrap()),
        "{err}"
    );

    // Listing still works, and warns about the conflict.
    let out = run(["plugins", "--plugin-dir", dir_arg]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("plugin `gain` is defined by both"),
        "{}",
        stderr(&out)
    );
    assert!(
        stdout(&out).contains("tone"),
        "other plugins are still listed"
    );
}

#[test]
fn a_folder_earlier_on_the_search_path_shadows_the_executable_folder() {
    let dir = TempDir::new("dup-shadow");
    let mine = copy_gain_to(dir.path(), "my_gain");
    let dir_arg = dir.path().to_str().unwrap();

    let out = run(["plugins", "inspect", "gain", "--plugin-dir", dir_arg]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stdout(&out).contains(&format!("library: {}", mine.display())),
        "{}",
        stdout(&out)
    );

    let out = run(["plugins", "--all", "--plugin-dir", dir_arg]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let listing = stdout(&out);
    assert!(listing.contains("shadowed"), "{listing}");
    assert!(
        listing.contains(&library_file_name("tapeline_gain")),
        "{listing}"
    );
}
