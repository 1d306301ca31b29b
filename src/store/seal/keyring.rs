//! Key-encryption keys (KEKs) from files: `--kek ID=PATH` (repeatable) and `--kek-primary ID`.
//!
//! Guarantees: a keyring exists only when every named file was read and holds exactly 32 bytes
//! (standard base64, surrounding whitespace allowed) and the primary is one of them; key bytes
//! are wiped when the keyring is dropped and never appear in `Debug` output or errors.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::str::FromStr;

use base64::Engine as _;
use zeroize::Zeroizing;

/// Length of a KEK in bytes (AES-256).
pub const KEY_LEN: usize = 32;
/// The label value that counts records without sealing; no key may take this id.
pub const PLAINTEXT: &str = "plaintext";

/// One `--kek ID=PATH` argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KekArg {
    pub id: String,
    pub path: PathBuf,
}

impl FromStr for KekArg {
    type Err = KekError;

    fn from_str(s: &str) -> Result<Self, KekError> {
        let (id, path) = s.split_once('=').ok_or_else(|| KekError::Syntax(s.to_owned()))?;
        let id = id.trim();
        check_id(id)?;
        if path.trim().is_empty() {
            return Err(KekError::Syntax(s.to_owned()));
        }
        Ok(KekArg {
            id: id.to_owned(),
            path: PathBuf::from(path.trim()),
        })
    }
}

/// Why the KEKs cannot be loaded: the operator refuses to start.
#[derive(Debug, thiserror::Error)]
pub enum KekError {
    #[error("--kek {0:?}: expected ID=PATH")]
    Syntax(String),
    #[error("key id {0:?}: use 1 to 63 letters, digits, '.', '_' or '-' (and not \"{PLAINTEXT}\")")]
    BadId(String),
    #[error("key id {0:?} is given twice")]
    Duplicate(String),
    #[error("cannot read key {id:?} from {path}: {source}")]
    Read {
        id: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("key {id:?} in {path} is not standard base64")]
    Encoding { id: String, path: PathBuf },
    #[error("key {id:?} in {path} has {len} bytes; a KEK must have exactly {KEY_LEN}")]
    Length { id: String, path: PathBuf, len: usize },
    #[error("--kek-primary {0:?} names no loaded --kek")]
    UnknownPrimary(String),
    #[error("several KEKs are loaded: name the one new records are sealed with (--kek-primary)")]
    NoPrimary,
    #[error("--kek-primary is set but no --kek is given")]
    PrimaryWithoutKeys,
}

fn check_id(id: &str) -> Result<(), KekError> {
    let ok = (1..=63).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && id != PLAINTEXT;
    if ok {
        Ok(())
    } else {
        Err(KekError::BadId(id.to_owned()))
    }
}

/// A 256-bit key, wiped on drop.
pub type Key = Zeroizing<[u8; KEY_LEN]>;

/// The loaded KEKs and the one new records are sealed with.
pub struct Keyring {
    keys: BTreeMap<String, Key>,
    primary: String,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("ids", &self.ids().collect::<Vec<_>>())
            .field("primary", &self.primary)
            .finish()
    }
}

impl Keyring {
    /// Reads every key file. `Ok(None)` when no key is given (records stay plaintext).
    pub fn load(args: &[KekArg], primary: Option<&str>) -> Result<Option<Keyring>, KekError> {
        let mut keys = BTreeMap::new();
        for arg in args {
            if keys.contains_key(&arg.id) {
                return Err(KekError::Duplicate(arg.id.clone()));
            }
            keys.insert(arg.id.clone(), read_key(arg)?);
        }
        Self::from_keys(keys, primary)
    }

    /// A keyring of keys already in memory (what [`Keyring::load`] ends with; tests).
    pub fn from_keys(
        keys: BTreeMap<String, Key>,
        primary: Option<&str>,
    ) -> Result<Option<Keyring>, KekError> {
        let primary = match (primary.map(str::trim).filter(|p| !p.is_empty()), keys.len()) {
            (None, 0) => return Ok(None),
            (Some(_), 0) => return Err(KekError::PrimaryWithoutKeys),
            (Some(p), _) => p.to_owned(),
            (None, 1) => keys.keys().next().cloned().unwrap_or_default(),
            (None, _) => return Err(KekError::NoPrimary),
        };
        if !keys.contains_key(&primary) {
            return Err(KekError::UnknownPrimary(primary));
        }
        Ok(Some(Keyring { keys, primary }))
    }

    /// The id of the key new records are sealed with.
    pub fn primary(&self) -> &str {
        &self.primary
    }

    /// The primary key's id and bytes (always present: [`Keyring::from_keys`] checks it).
    pub(super) fn primary_key(&self) -> Option<(&str, &Key)> {
        self.keys
            .get_key_value(&self.primary)
            .map(|(id, key)| (id.as_str(), key))
    }

    /// A loaded key by id.
    pub(super) fn get(&self, id: &str) -> Option<&Key> {
        self.keys.get(id)
    }

    /// Ids of every loaded key, sorted.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }
}

fn read_key(arg: &KekArg) -> Result<Key, KekError> {
    let text = Zeroizing::new(std::fs::read(&arg.path).map_err(|source| KekError::Read {
        id: arg.id.clone(),
        path: arg.path.clone(),
        source,
    })?);
    let trimmed = text.trim_ascii();
    let decoded = Zeroizing::new(
        base64::engine::general_purpose::STANDARD
            .decode(trimmed)
            .map_err(|_| KekError::Encoding {
                id: arg.id.clone(),
                path: arg.path.clone(),
            })?,
    );
    let mut key: Key = Zeroizing::new([0; KEY_LEN]);
    if decoded.len() != KEY_LEN {
        return Err(KekError::Length {
            id: arg.id.clone(),
            path: arg.path.clone(),
            len: decoded.len(),
        });
    }
    key.copy_from_slice(&decoded);
    Ok(key)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn file(content: &str) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), content).unwrap();
        f
    }

    fn arg(id: &str, f: &tempfile::NamedTempFile) -> KekArg {
        format!("{id}={}", f.path().display()).parse().unwrap()
    }

    #[test]
    fn loads_keys_and_picks_the_primary() {
        let b64 = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        let (a, b) = (file(&format!("{b64}\n")), file(&b64));
        let one = Keyring::load(&[arg("k1", &a)], None).unwrap().unwrap();
        assert_eq!(one.primary(), "k1");
        assert!(!format!("{one:?}").contains(&b64));
        let two = Keyring::load(&[arg("k1", &a), arg("k2", &b)], Some("k2"))
            .unwrap()
            .unwrap();
        assert_eq!(two.primary(), "k2");
        assert_eq!(two.ids().collect::<Vec<_>>(), ["k1", "k2"]);
        assert!(matches!(
            Keyring::load(&[arg("k1", &a), arg("k2", &b)], None),
            Err(KekError::NoPrimary)
        ));
        assert!(matches!(
            Keyring::load(&[arg("k1", &a)], Some("k3")),
            Err(KekError::UnknownPrimary(_))
        ));
        assert!(matches!(
            Keyring::load(&[], Some("k1")),
            Err(KekError::PrimaryWithoutKeys)
        ));
        assert!(Keyring::load(&[], None).unwrap().is_none());
    }

    #[test]
    fn refuses_missing_short_and_malformed_keys() {
        let short = file(&base64::engine::general_purpose::STANDARD.encode([1u8; 16]));
        let junk = file("not base64 at all!");
        let missing = KekArg {
            id: "k1".into(),
            path: "/nonexistent/kek".into(),
        };
        let e = Keyring::load(&[missing], None).unwrap_err();
        assert!(matches!(e, KekError::Read { .. }));
        assert!(e.to_string().contains("/nonexistent/kek"), "{e}");
        assert!(matches!(
            Keyring::load(&[arg("k1", &short)], None),
            Err(KekError::Length { len: 16, .. })
        ));
        assert!(matches!(
            Keyring::load(&[arg("k1", &junk)], None),
            Err(KekError::Encoding { .. })
        ));
        assert!("k1".parse::<KekArg>().is_err());
        assert!("plaintext=/x".parse::<KekArg>().is_err());
        assert!("a b=/x".parse::<KekArg>().is_err());
        assert!("k1=".parse::<KekArg>().is_err());
    }
}
