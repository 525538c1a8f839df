//! The steps of docs/operations.md, "Install on an edge box", that the program itself takes.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

#[test]
fn keys_init_on_a_fresh_data_directory_makes_a_private_key_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("sortline");
    let init =
        || Command::new(env!("CARGO_BIN_EXE_sortline")).args(["keys", "init", "--data"]).arg(&data).output().unwrap();
    let first = init();
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    let public_key = String::from_utf8_lossy(&first.stdout);
    assert!(
        public_key.starts_with("public key ") && public_key.trim().len() == "public key ".len() + 64,
        "{public_key}"
    );
    let key = data.join(sortline::audit::KEY_FILE);
    assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
    // A second init must not replace the key the site holds.
    assert!(!init().status.success());
}
