//! The console's accounts: `console.db` in the data directory, one row per user with an
//! argon2id hash of the password (PHC string, random salt). Managed with `sortline user`.

use argon2::password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;
use std::path::Path;

pub const DB_FILE: &str = "console.db";
pub const MIN_PASSWORD: usize = 10;
pub const MAX_PASSWORD: usize = 256;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Viewer,
    Officer,
    Inspector,
    Supervisor,
}

impl Role {
    pub fn parse(s: &str) -> Result<Role, UserError> {
        Ok(match s {
            "viewer" => Role::Viewer,
            "officer" => Role::Officer,
            "inspector" => Role::Inspector,
            "supervisor" => Role::Supervisor,
            other => return Err(UserError::Role(other.chars().take(40).collect())),
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Officer => "officer",
            Role::Inspector => "inspector",
            Role::Supervisor => "supervisor",
        }
    }

    /// Verdicts at the X-ray screen and transfers from the live line.
    pub fn decides(self) -> bool {
        matches!(self, Role::Officer | Role::Supervisor)
    }

    /// Results at the inspection desk.
    pub fn inspects(self) -> bool {
        matches!(self, Role::Inspector | Role::Supervisor)
    }

    /// Targets, rates, the review window, flag clearances, line stop and start.
    pub fn supervises(self) -> bool {
        self == Role::Supervisor
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("user store: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("password hashing: {0}")]
    Hash(String),
    #[error("{0:?} is not a role; one of viewer, officer, inspector, supervisor")]
    Role(String),
    #[error("user name {0:?}: 1 to 32 of a-z 0-9 . _ -")]
    Name(String),
    #[error("a password has {MIN_PASSWORD} to {MAX_PASSWORD} characters")]
    Password,
    #[error("user {0} exists already")]
    Exists(String),
    #[error("no user {0}")]
    NoUser(String),
}

/// A user as the console knows them once logged in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct User {
    pub name: String,
    pub role: Role,
    pub disabled: bool,
    /// When the row last changed (password, disabled): a session from before has ended.
    pub changed_ms: i64,
}

/// Names go into audit records as the officer: short, plain, unambiguous.
pub fn check_name(name: &str) -> Result<(), UserError> {
    let ok = (1..=32).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(UserError::Name(name.chars().take(40).collect()))
    }
}

fn hash(password: &str) -> Result<String, UserError> {
    if !(MIN_PASSWORD..=MAX_PASSWORD).contains(&password.chars().count()) {
        return Err(UserError::Password);
    }
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| UserError::Hash(e.to_string()))
}

/// A hash to check unknown names against, so that a wrong name costs as long as a wrong
/// password (no telling which names exist by the time an answer takes).
fn decoy() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| hash("decoy password, never valid").unwrap_or_default())
}

pub struct UserStore {
    db: Connection,
}

impl UserStore {
    pub fn open(data_dir: &Path) -> Result<UserStore, UserError> {
        let db = Connection::open(data_dir.join(DB_FILE))?;
        db.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;
             CREATE TABLE IF NOT EXISTS users (
               name TEXT PRIMARY KEY, role TEXT NOT NULL, hash TEXT NOT NULL,
               disabled INTEGER NOT NULL DEFAULT 0, changed_wall_ms INTEGER NOT NULL);",
        )?;
        Ok(UserStore { db })
    }

    pub fn add(&self, name: &str, role: Role, password: &str, wall_ms: i64) -> Result<(), UserError> {
        check_name(name)?;
        let hash = hash(password)?;
        let added = self.db.execute(
            "INSERT INTO users (name, role, hash, disabled, changed_wall_ms) VALUES (?1, ?2, ?3, 0, ?4)
             ON CONFLICT(name) DO NOTHING",
            params![name, role.as_str(), hash, wall_ms],
        )?;
        if added == 0 {
            return Err(UserError::Exists(name.into()));
        }
        Ok(())
    }

    pub fn set_password(&self, name: &str, password: &str, wall_ms: i64) -> Result<(), UserError> {
        let hash = hash(password)?;
        self.changed(
            self.db.execute(
                "UPDATE users SET hash = ?2, changed_wall_ms = ?3 WHERE name = ?1",
                params![name, hash, wall_ms],
            )?,
            name,
        )
    }

    pub fn set_disabled(&self, name: &str, disabled: bool, wall_ms: i64) -> Result<(), UserError> {
        self.changed(
            self.db.execute(
                "UPDATE users SET disabled = ?2, changed_wall_ms = ?3 WHERE name = ?1",
                params![name, disabled, wall_ms],
            )?,
            name,
        )
    }

    fn changed(&self, rows: usize, name: &str) -> Result<(), UserError> {
        if rows == 0 {
            return Err(UserError::NoUser(name.into()));
        }
        Ok(())
    }

    pub fn get(&self, name: &str) -> Result<Option<User>, UserError> {
        Ok(self
            .db
            .query_row("SELECT role, disabled, changed_wall_ms FROM users WHERE name = ?1", [name], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, bool>(1)?, r.get::<_, i64>(2)?))
            })
            .optional()?
            .map(|(role, disabled, changed_ms)| User {
                name: name.into(),
                // A role this build does not know reads as the least one.
                role: Role::parse(&role).unwrap_or(Role::Viewer),
                disabled,
                changed_ms,
            }))
    }

    pub fn list(&self) -> Result<Vec<User>, UserError> {
        let mut q = self.db.prepare("SELECT name FROM users ORDER BY name")?;
        let names: Vec<String> = q.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
        names.iter().filter_map(|n| self.get(n).transpose()).collect()
    }

    /// The user, if `password` is theirs and they are not disabled. Slow on purpose (argon2).
    pub fn verify(&self, name: &str, password: &str) -> Result<Option<User>, UserError> {
        self.credentials(name)?.check(password)
    }

    /// What a login is checked against, read quickly: the slow check can then run without the
    /// store (a console serving requests does not wait on someone's login).
    pub fn credentials(&self, name: &str) -> Result<Credentials, UserError> {
        let row: Option<(String, String, bool, i64)> = self
            .db
            .query_row("SELECT role, hash, disabled, changed_wall_ms FROM users WHERE name = ?1", [name], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
            .optional()?;
        Ok(Credentials {
            user: match &row {
                Some((role, _, disabled, changed_ms)) => Some(User {
                    name: name.into(),
                    role: Role::parse(role)?,
                    disabled: *disabled,
                    changed_ms: *changed_ms,
                }),
                None => None,
            },
            hash: row.map_or_else(|| decoy().to_string(), |(_, h, ..)| h),
        })
    }
}

/// A user's row as a login sees it (a decoy hash for an unknown name).
pub struct Credentials {
    user: Option<User>,
    hash: String,
}

impl Credentials {
    /// The user, if `password` matches and they are not disabled.
    pub fn check(self, password: &str) -> Result<Option<User>, UserError> {
        let parsed = PasswordHash::new(&self.hash).map_err(|e| UserError::Hash(e.to_string()))?;
        let matches = Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok();
        Ok(self.user.filter(|u| matches && !u.disabled))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_are_added_verified_changed_and_disabled() {
        let dir = tempfile::tempdir().unwrap();
        let store = UserStore::open(dir.path()).unwrap();
        store.add("li.wei", Role::Officer, "correct horse battery", 1).unwrap();
        assert!(matches!(store.add("li.wei", Role::Viewer, "another password", 2), Err(UserError::Exists(_))));
        assert_eq!(store.verify("li.wei", "correct horse battery").unwrap().map(|u| u.role), Some(Role::Officer));
        assert_eq!(store.verify("li.wei", "wrong password!").unwrap(), None);
        assert_eq!(store.verify("nobody", "correct horse battery").unwrap(), None);
        store.set_password("li.wei", "a new long password", 3).unwrap();
        assert_eq!(store.verify("li.wei", "correct horse battery").unwrap(), None);
        assert!(store.verify("li.wei", "a new long password").unwrap().is_some());
        store.set_disabled("li.wei", true, 4).unwrap();
        assert_eq!(store.verify("li.wei", "a new long password").unwrap(), None);
        assert!(store.get("li.wei").unwrap().unwrap().disabled);
        assert!(matches!(store.set_disabled("nobody", true, 5), Err(UserError::NoUser(_))));
    }

    #[test]
    fn the_hash_is_argon2id_with_a_salt_of_its_own() {
        let (a, b) = (hash("same password here").unwrap(), hash("same password here").unwrap());
        assert!(a.starts_with("$argon2id$"), "{a}");
        assert_ne!(a, b);
    }

    #[test]
    fn bad_names_roles_and_short_passwords_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = UserStore::open(dir.path()).unwrap();
        for name in ["", "Upper", "white space", "x\u{202e}y", &"a".repeat(33)] {
            assert!(matches!(store.add(name, Role::Viewer, "long enough password", 1), Err(UserError::Name(_))));
        }
        assert!(matches!(store.add("ok", Role::Viewer, "short", 1), Err(UserError::Password)));
        assert!(matches!(Role::parse("admin"), Err(UserError::Role(_))));
    }
}
