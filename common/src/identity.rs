//! Who is who: a node's or client's key pair, the id derived from its public
//! key, and the checked text form of ids that people copy between machines.
//!
//! An id is the first 16 bytes of a BLAKE3 key derivation over the public
//! key (its DER SubjectPublicKeyInfo), so it cannot be claimed without the
//! private key: the TLS handshake proves possession. Its text form is the
//! 16 bytes plus one check byte in base32, in four groups of seven
//! (`ABCDEFG-HIJKLMN-OPQRSTU-VWXYZ23`): a mistyped character is caught,
//! but for about one typo in 256 (the check is one byte), which then reads
//! as another id.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use uuid::Uuid;

/// Characters of an id's text form, without dashes.
const ID_CHARS: usize = 28;

/// Why an id typed by someone was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// Wrong length or characters.
    #[error(
        "{0:?} is not a Tandem id: ids look like ABCDEFG-HIJKLMN-OPQRSTU-VWXYZ23 (28 letters and digits 2-7; `tandem-node --dir DIR id` prints a node's)"
    )]
    Malformed(String),
    /// The check character does not match: a typo.
    #[error("{0:?} has a typo: its check characters do not match; copy the id again")]
    Checksum(String),
}

fn check_byte(id: &[u8; 16]) -> u8 {
    blake3::hash(id).as_bytes()[0]
}

/// The checked text form of an id.
pub fn format_id(id: &Uuid) -> String {
    let mut raw = [0u8; 17];
    raw[..16].copy_from_slice(id.as_bytes());
    raw[16] = check_byte(id.as_bytes());
    let s = data_encoding::BASE32_NOPAD.encode(&raw);
    let mut out = String::with_capacity(ID_CHARS + 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && i % 7 == 0 {
            out.push('-');
        }
        out.push(c);
    }
    out
}

/// Parses an id's text form: case does not matter, dashes and spaces are
/// optional, the check byte must match.
pub fn parse_id(s: &str) -> Result<Uuid, IdError> {
    let clean: String = s
        .chars()
        .filter(|c| *c != '-' && !c.is_whitespace())
        .map(|c| c.to_ascii_uppercase())
        .collect();
    if clean.len() != ID_CHARS {
        return Err(IdError::Malformed(s.to_string()));
    }
    let raw = data_encoding::BASE32_NOPAD
        .decode(clean.as_bytes())
        .map_err(|_| IdError::Malformed(s.to_string()))?;
    let Ok(raw) = <[u8; 17]>::try_from(raw.as_slice()) else {
        return Err(IdError::Malformed(s.to_string()));
    };
    let mut id = [0u8; 16];
    id.copy_from_slice(&raw[..16]);
    if check_byte(&id) != raw[16] {
        return Err(IdError::Checksum(s.to_string()));
    }
    Ok(Uuid::from_bytes(id))
}

/// The id of a public key (DER SubjectPublicKeyInfo).
pub fn id_of_public_key(spki: &[u8]) -> Uuid {
    let h = blake3::derive_key("tandem 2026-12 identity v1", spki);
    let mut id = [0u8; 16];
    id.copy_from_slice(&h[..16]);
    Uuid::from_bytes(id)
}

/// Why a key file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Reading or writing the file failed.
    #[error("cannot {what} key file {path}: {source}")]
    Io {
        /// read, create, ...
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file holds something else.
    #[error(
        "{path} is not a Tandem key file ({why}); move it away and a new key is made (the id changes)"
    )]
    Bad {
        /// The file.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// Key or certificate generation failed.
    #[error("cannot make a key pair: {0}")]
    Generate(String),
}

/// A key pair with its self-signed certificate, ready for TLS.
pub struct KeyPair {
    id: Uuid,
    key_der: Vec<u8>,
    cert: CertificateDer<'static>,
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the private key.
        write!(f, "KeyPair({})", format_id(&self.id))
    }
}

impl KeyPair {
    /// Loads the key in `path`, or makes one there (mode 0600) if there is
    /// none. Returns the pair and whether it was just made. Two processes
    /// racing to make it end up with the same key: the file is created
    /// exclusively and the loser reads the winner's.
    pub fn load_or_create(path: &Path) -> Result<(KeyPair, bool), KeyError> {
        match std::fs::read_to_string(path) {
            Ok(pem) => return Ok((Self::from_pem(path, &pem)?, false)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(KeyError::Io {
                    what: "read",
                    path: path.to_path_buf(),
                    source,
                });
            }
        }
        let key = rcgen::KeyPair::generate().map_err(|e| KeyError::Generate(e.to_string()))?;
        let pem = key.serialize_pem();
        let io = |what, source| KeyError::Io {
            what,
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| io("create the folder of", e))?;
        }
        // Written under a temp name and linked into place, so nobody ever
        // reads a half-written key, and an existing key is never replaced.
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| io("create", e))?;
        f.write_all(pem.as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(|e| io("write", e))?;
        let linked = std::fs::hard_link(&tmp, path);
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => Ok((Self::from_pem(path, &pem)?, true)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let pem = std::fs::read_to_string(path).map_err(|e| io("read", e))?;
                Ok((Self::from_pem(path, &pem)?, false))
            }
            Err(e) => Err(io("create", e)),
        }
    }

    fn from_pem(path: &Path, pem: &str) -> Result<KeyPair, KeyError> {
        let bad = |why: String| KeyError::Bad {
            path: path.to_path_buf(),
            why,
        };
        let key = rcgen::KeyPair::from_pem(pem).map_err(|e| bad(e.to_string()))?;
        let params = rcgen::CertificateParams::new(vec!["tandem".to_string()])
            .map_err(|e| KeyError::Generate(e.to_string()))?;
        let cert = params
            .self_signed(&key)
            .map_err(|e| KeyError::Generate(e.to_string()))?;
        Ok(KeyPair {
            id: id_of_public_key(&rcgen::PublicKeyData::subject_public_key_info(&key)),
            key_der: key.serialize_der(),
            cert: cert.der().clone(),
        })
    }

    /// The id this key proves.
    pub fn id(&self) -> Uuid {
        self.id
    }

    /// The certificate.
    pub fn cert(&self) -> CertificateDer<'static> {
        self.cert.clone()
    }

    /// The private key, for rustls.
    pub fn private_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_catch_typos() {
        let id = Uuid::new_v4();
        let s = format_id(&id);
        assert_eq!(s.len(), ID_CHARS + 3, "{s}");
        assert_eq!(s.matches('-').count(), 3);
        assert_eq!(parse_id(&s), Ok(id));
        assert_eq!(parse_id(&s.to_lowercase()), Ok(id));
        assert_eq!(parse_id(&s.replace('-', "")), Ok(id));
        // A single-character change never reads back as the same id (it is
        // refused, or once in 256 reads as another id: see the next test).
        let chars: Vec<char> = s.chars().collect();
        for i in [0usize, 5, 9, 20, 30] {
            if chars[i] == '-' {
                continue;
            }
            let mut c = chars.clone();
            c[i] = if c[i] == 'A' { 'B' } else { 'A' };
            let typo: String = c.into_iter().collect();
            assert_ne!(parse_id(&typo), Ok(id), "{typo} read as {s}");
        }
        assert!(matches!(parse_id("hello"), Err(IdError::Malformed(_))));
        assert!(matches!(
            parse_id(&"1".repeat(28)),
            Err(IdError::Malformed(_))
        ));
    }

    // The test above used to assert that every typo it made was refused,
    // and failed for about one random id in 60 (a typo of some id read as
    // this valid one). The check byte catches 255 typos in 256, not all.
    #[test]
    fn the_check_byte_catches_most_typos_not_all() {
        let s = "A6VY43Y-PENHH3K-I6VQW62-VPUUBNQ";
        let id = parse_id(s).unwrap();
        assert_eq!(format_id(&id), s);
        let chars: Vec<char> = s.chars().collect();
        let (mut typos, mut other_ids) = (0, 0);
        for i in (0..chars.len()).filter(|&i| chars[i] != '-') {
            for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567".chars() {
                if c == chars[i] {
                    continue;
                }
                let mut typo = chars.clone();
                typo[i] = c;
                let typo: String = typo.into_iter().collect();
                typos += 1;
                match parse_id(&typo) {
                    Ok(other) => {
                        assert_ne!(other, id, "{typo} read as {s}");
                        other_ids += 1;
                    }
                    Err(IdError::Checksum(_) | IdError::Malformed(_)) => {}
                }
            }
        }
        assert_eq!((typos, other_ids), (28 * 31, 6));
    }

    #[test]
    fn key_files_are_private_stable_and_shared_by_racers() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("tandem-key-{}", Uuid::new_v4().simple()));
        let path = dir.join("node.key");
        let (a, made) = KeyPair::load_or_create(&path).unwrap();
        assert!(made);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (b, made) = KeyPair::load_or_create(&path).unwrap();
        assert!(!made);
        assert_eq!(a.id(), b.id(), "the id survives a reload");
        std::fs::write(&path, "not a key").unwrap();
        let err = KeyPair::load_or_create(&path).unwrap_err().to_string();
        assert!(err.contains("is not a Tandem key file"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
