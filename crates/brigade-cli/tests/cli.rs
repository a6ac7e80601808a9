//! The `brigade` binary as a user meets it.

use std::process::Command;

fn brigade(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_brigade"))
        .args(args)
        .output()
        .expect("the brigade binary runs")
}

#[test]
fn version_names_the_crate_version() {
    let out = brigade(&["--version"]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("brigade {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn help_describes_the_tool() {
    let out = brigade(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("Usage: brigade"), "{help}");
    assert!(help.contains("concurrency model"), "{help}");
}

#[test]
fn no_arguments_prints_help_and_fails_softly() {
    let out = brigade(&[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Usage: brigade"));
}

#[test]
fn an_unknown_flag_is_a_short_error_not_a_panic() {
    let out = brigade(&["--frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("error: unexpected argument '--frobnicate'"),
        "{err}"
    );
    assert!(!err.contains("panicked"));
}
