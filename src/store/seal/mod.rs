//! Sealing the operator's credential copies at rest (issue #17), under keys the operator holds and
//! the API server never sees.
//!
//! - [`keyring`]: the key-encryption keys (KEKs) from files (`--kek ID=PATH`, `--kek-primary`);
//! - [`envelope`]: AES-256-GCM under a fresh data key per write, the data key wrapped by a KEK,
//!   bound to the Secret's name;
//! - [`reseal`]: the leader's background pass that re-seals records under the primary KEK (after a
//!   rotation, or records still in plaintext) and reports how many records each key holds.
//!
//! What this protects: the refresh tokens, API keys and client secrets in an etcd dump, a backup,
//! or a `get secrets` by someone who may read the operator's namespace. What it does not: a
//! compromised controller process, which holds the KEKs (see docs/encryption.md).

pub mod envelope;
pub mod keyring;
pub mod reseal;

use std::sync::{Arc, OnceLock};

pub use envelope::SealError;
pub use keyring::{KekArg, KekError, Keyring};

/// The process's keyring, fixed at start: every reader of the operator's copies (the gateway, the
/// broker's cache, the controllers' cache) opens them with the same keys, and the keys only change
/// with a restart. A process-wide value spares threading it through each of those caches.
static KEYRING: OnceLock<Option<Arc<Keyring>>> = OnceLock::new();

/// Installs the keyring before the first credential copy is read or written. `None` keeps records
/// in plaintext. Returns false (and changes nothing) when one was installed already.
pub fn install(keyring: Option<Arc<Keyring>>) -> bool {
    KEYRING.set(keyring).is_ok()
}

/// The installed keyring; `None` when none is configured (or, in unit tests, installed).
pub fn keyring() -> Option<&'static Keyring> {
    KEYRING.get().and_then(|k| k.as_deref())
}
