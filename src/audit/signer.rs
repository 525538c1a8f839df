//! The site's checkpoint key: a raw 32-byte Ed25519 seed in a 0600 file.

use ed25519_dalek::{Signer as _, SigningKey};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::Path;

use super::encoding::checkpoint_message;
use super::AuditError;

const SEED_BYTES: usize = 32;

pub struct Signer {
    key: SigningKey,
}

// Never print the seed.
impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer").field("public_key", &self.public_key_hex()).finish()
    }
}

impl Signer {
    /// Reads a key file made by [`Signer::init`].
    pub fn load(path: &Path) -> Result<Signer, AuditError> {
        let mut bytes = Vec::with_capacity(SEED_BYTES);
        File::open(path)
            .and_then(|f| f.take(SEED_BYTES as u64 + 1).read_to_end(&mut bytes))
            .map_err(AuditError::io(path))?;
        let seed: [u8; SEED_BYTES] = bytes.as_slice().try_into().map_err(|_| AuditError::BadKey {
            path: path.to_path_buf(),
            reason: format!("expected {SEED_BYTES} raw bytes, found {}", bytes.len()),
        })?;
        bytes.fill(0);
        warn_if_readable_by_others(path);
        let signer = Signer::from_seed(seed);
        tracing::info!(path = %path.display(), public_key = %signer.public_key_hex(), "audit key loaded");
        Ok(signer)
    }

    /// Creates a new key file (mode 0600). Refuses to overwrite an existing one:
    /// losing the site key would orphan every checkpoint signed with it.
    pub fn init(path: &Path) -> Result<Signer, AuditError> {
        let mut seed = [0u8; SEED_BYTES];
        // The edge box is Linux; the kernel CSPRNG needs no extra crate.
        File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut seed))
            .map_err(AuditError::io(Path::new("/dev/urandom")))?;

        // Written whole to a temporary file, then linked into place: a crash
        // leaves no key or the whole key, never an empty file, and a link
        // never replaces an existing key.
        let tmp = path.with_extension("key.tmp");
        let _ = fs::remove_file(&tmp);
        let mut opts = OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let written = opts.open(&tmp).and_then(|mut file| file.write_all(&seed).and_then(|()| file.sync_all()));
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(AuditError::io(&tmp)(e));
        }
        let linked = fs::hard_link(&tmp, path);
        let _ = fs::remove_file(&tmp);
        linked.map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                AuditError::KeyExists(path.to_path_buf())
            } else {
                AuditError::io(path)(e)
            }
        })?;
        sync_parent_dir(path);
        let signer = Signer::from_seed(seed);
        seed.fill(0);
        tracing::info!(path = %path.display(), public_key = %signer.public_key_hex(), "audit key created");
        Ok(signer)
    }

    /// The key at `path`, made first (with its folder) if there is none: for a
    /// fresh data directory, where a missing key is expected rather than lost.
    pub fn load_or_init(path: &Path) -> Result<Signer, AuditError> {
        if path.exists() {
            return Signer::load(path);
        }
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(AuditError::io(dir))?;
        }
        Signer::init(path)
    }

    pub fn public_key_hex(&self) -> String {
        hex::encode(self.public_key())
    }

    pub(super) fn from_seed(seed: [u8; SEED_BYTES]) -> Signer {
        Signer { key: SigningKey::from_bytes(&seed) }
    }

    pub(super) fn public_key(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }

    /// Signature over the checkpoint message for (seq, hash of entry seq).
    pub(super) fn sign_checkpoint(&self, seq: u64, head: &[u8; 32]) -> [u8; 64] {
        self.key.sign(&checkpoint_message(seq, head)).to_bytes()
    }
}

fn warn_if_readable_by_others(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = fs::metadata(path) {
            let mode = meta.permissions().mode();
            if mode & 0o077 != 0 {
                tracing::warn!(path = %path.display(), mode = format!("{mode:o}"), "audit key file is readable by others; chmod 600 it");
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

/// Makes the new file's directory entry durable too; best effort.
fn sync_parent_dir(path: &Path) {
    #[cfg(unix)]
    if let Some(dir) = path.parent() {
        let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
        if let Err(e) = File::open(dir).and_then(|d| d.sync_all()) {
            tracing::warn!(dir = %dir.display(), error = %e, "could not fsync key directory");
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}
