//! The harness's command line: setup mistakes are refused with exit code 2 and a message that
//! names the option, before anything is started. (The harness itself runs end to end in
//! `.ci/run`, against the real relay binary.)

use std::process::Command;

/// Runs `ferrule-chaos` with `args`; its exit code and stderr.
fn chaos(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ferrule-chaos"))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running ferrule-chaos: {e}"));
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn sqlite_with_several_instances_is_refused() {
    let (code, err) = chaos(&["run", "--backend", "sqlite", "--instances", "3"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("--instances 3") && err.contains("single-owner"),
        "{err}"
    );
}

#[test]
fn postgres_restarts_need_postgres() {
    let (code, err) = chaos(&["run", "--pg-restarts", "1"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("--pg-restarts needs --backend postgres"),
        "{err}"
    );
}

#[test]
fn a_missing_relay_binary_is_named() {
    let (code, err) = chaos(&[
        "run",
        "--ferrule-bin",
        "/nonexistent/ferrule",
        "--kills",
        "0",
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("no ferrule binary at /nonexistent/ferrule"),
        "{err}"
    );
}

#[test]
fn throughput_without_a_store_is_refused() {
    let (code, err) = chaos(&["throughput"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("nothing to measure"), "{err}");
}

#[test]
fn an_unknown_fault_is_refused_by_the_parser() {
    let (code, err) = chaos(&["run", "--faults", "500,teapot"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("teapot"), "{err}");
}

#[test]
fn a_relay_cpu_limit_out_of_range_is_refused_naming_the_flag() {
    // Refused before any relay starts or the database is touched.
    let (code, err) = chaos(&[
        "throughput",
        "--postgres",
        "1",
        "--relay-cpu",
        "0",
        "--postgres-url",
        "postgres://nobody@127.0.0.1:1/none",
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("--relay-cpu 0") && err.contains("fraction of one core"),
        "{err}"
    );
}

#[test]
fn a_cpu_fallback_needs_a_relay_cpu_limit() {
    let (code, err) = chaos(&[
        "throughput",
        "--postgres",
        "1",
        "--relay-cpu-fallback",
        "taskset",
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--relay-cpu"), "{err}");
}
