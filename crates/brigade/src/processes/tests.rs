use super::*;

fn pool_of(program: &str) -> Result<ProcessPool, BuildError> {
    let mut builder = Builder::default()
        .start_timeout(Duration::from_millis(300))
        .workers(1);
    builder.program = Some(program.into());
    builder.build()
}

#[test]
fn a_program_that_is_not_a_brigade_worker_is_a_clear_error_not_a_hang() {
    // Exits at once: reported with its exit status.
    match pool_of("/bin/true") {
        Err(BuildError::WorkerStart { message }) => {
            assert!(message.contains("exited"), "{message}");
            assert!(message.contains("links this build of brigade"), "{message}");
        }
        other => panic!("expected WorkerStart, got {other:?}"),
    }
    // Never answers: given up after the start timeout, and killed.
    let silent = std::env::temp_dir().join(format!("brigade-silent-{}", std::process::id()));
    std::fs::write(&silent, "#!/bin/sh\nexec sleep 60\n").unwrap();
    std::fs::set_permissions(&silent, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    // A test thread forking right after the write can hold the file open for a moment
    // (ETXTBSY); that is the test's race, not the pool's: try again.
    let mut result = pool_of(silent.to_str().unwrap());
    for _ in 0..5 {
        match &result {
            Err(BuildError::WorkerStart { message }) if message.contains("busy") => {
                result = pool_of(silent.to_str().unwrap());
            }
            _ => break,
        }
    }
    let _ = std::fs::remove_file(&silent);
    match result {
        Err(BuildError::WorkerStart { message }) => {
            assert!(message.contains("did not answer within"), "{message}");
        }
        other => panic!("expected WorkerStart, got {other:?}"),
    }
    // Cannot even start.
    match pool_of("/nonexistent/brigade-worker") {
        Err(BuildError::WorkerStart { message }) => {
            assert!(message.contains("/nonexistent/brigade-worker"), "{message}");
        }
        other => panic!("expected WorkerStart, got {other:?}"),
    }
}
