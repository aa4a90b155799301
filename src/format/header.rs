//! The node header: two identical 512-byte slots, each with its own CRC-32.
//!
//! Two copies make a header rewrite (passphrase change, compaction) safe on filesystems
//! without atomic rename: slot A is written and synced, then slot B; a crash tears at most
//! one, and the other still opens. A single damaged slot is survivable for the same reason.

use crate::crypto::{aead, kdf};
use crate::secret::{Key, Passphrase};

/// Size of one header slot.
pub const SLOT_BYTES: usize = 512;
/// Where the frame log begins after init: right after the two slots.
pub const LOG_OFFSET: u64 = 2 * SLOT_BYTES as u64;
/// The magic number at the start of each slot.
pub const MAGIC: &[u8; 8] = b"POLYKEY\0";
/// The format version this code writes and reads.
pub const VERSION: u16 = 1;
/// Required feature bit 0: the log holds tree deltas (docs/FORMAT.md, "Tree deltas").
pub const FEATURE_TREE_DELTAS: u32 = 0x1;
/// Required feature bit 1: the log's end after a compaction is an authenticated END frame,
/// and the unauthenticated marker of version 1 is refused (docs/FORMAT.md, "Compaction").
pub const FEATURE_AUTHENTICATED_END: u32 = 0x2;
/// Required feature bit 2: records of nodes working together (identity keys, repository
/// settings, removed repositories, the sub-node mark); set before the first of them is written.
pub const FEATURE_NODES: u32 = 0x4;
/// Required feature flags this build understands: any other bit is refused.
pub const KNOWN_REQUIRED_FEATURES: u32 = FEATURE_TREE_DELTAS | FEATURE_AUTHENTICATED_END | FEATURE_NODES;
/// KDF identifier: Argon2id, version 0x13.
pub const KDF_ARGON2ID: u8 = 1;

const WRAP_CONTEXT: &[u8] = b"polykey v1 key wrap";
const SEAL_CONTEXT: &[u8] = b"polykey v1 header seal";
const CRC_AT: usize = SLOT_BYTES - 4;

/// The header's fields (one slot's content).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// Format version.
    pub version: u16,
    /// Required feature flags (unknown ones are refused).
    pub required_features: u32,
    /// Optional feature flags (unknown ones are ignored).
    pub optional_features: u32,
    /// Random identity of this node, bound into every frame's associated data.
    pub node_id: [u8; 16],
    /// Increases with every header rewrite; the newer valid slot wins.
    pub generation: u64,
    /// The frame log's epoch; increases with every compaction.
    pub epoch: u32,
    /// Offset of the first frame of the log.
    pub log_start: u64,
    /// End of the checkpoint at the start of the log: frames before it must all be valid.
    pub base_end: u64,
    /// Argon2id parameters.
    pub kdf: kdf::KdfParams,
    /// Argon2id salt.
    pub salt: [u8; kdf::SALT_BYTES],
    /// Nonce of the wrapped data key.
    pub wrap_nonce: [u8; aead::NONCE_BYTES],
    /// The data key, sealed with the key-encryption key.
    pub wrapped_key: [u8; 32 + aead::TAG_BYTES],
    /// Nonce of the header seal.
    pub seal_nonce: [u8; aead::NONCE_BYTES],
    /// Tag sealing bytes 0..176 under the data key, so the log pointers, epoch and generation
    /// cannot be changed by anyone who lacks the key (a checksum alone would not stop that).
    pub seal_tag: [u8; aead::TAG_BYTES],
}

/// What is wrong with the header region, for the caller to phrase with the node's path.
#[derive(Debug, PartialEq, Eq)]
pub enum HeaderError {
    /// Neither slot is intact; the string says why.
    Damaged(String),
    /// A newer version or unknown required feature.
    Unsupported(String),
    /// The data key did not unwrap.
    WrongPassphrase,
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(b[at..at + 2].try_into().expect("2 bytes"))
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

impl Header {
    /// A new header for a fresh node: random id and salt, the data key wrapped under `pass`.
    /// The caller seals it with [`Header::seal`] before writing. Returns the header, the data
    /// key and the key-encryption key (see [`Header::require`]).
    pub fn create(pass: &Passphrase, params: kdf::KdfParams) -> std::io::Result<(Header, Key, Key)> {
        let mut node_id = [0u8; 16];
        crate::secret::fill_random(&mut node_id)?;
        let data_key = Key::random()?;
        let mut h = Header {
            version: VERSION,
            // Set here and at a passphrase change, which re-wrap the key: the features are
            // bound into the key wrap, so a compaction (which has no passphrase) cannot.
            required_features: FEATURE_AUTHENTICATED_END,
            optional_features: 0,
            node_id,
            generation: 1,
            epoch: 0,
            log_start: LOG_OFFSET,
            base_end: LOG_OFFSET,
            kdf: params,
            salt: [0; kdf::SALT_BYTES],
            wrap_nonce: [0; aead::NONCE_BYTES],
            wrapped_key: [0; 48],
            seal_nonce: [0; aead::NONCE_BYTES],
            seal_tag: [0; aead::TAG_BYTES],
        };
        let kek = h.wrap(pass, params, &data_key)?;
        h.seal(&data_key)?;
        Ok((h, data_key, kek))
    }

    /// Re-wraps `data_key` under a new passphrase (fresh salt and nonce). Returns the new
    /// key-encryption key.
    pub fn wrap(&mut self, pass: &Passphrase, params: kdf::KdfParams, data_key: &Key) -> std::io::Result<Key> {
        self.kdf = params;
        crate::secret::fill_random(&mut self.salt)?;
        let kek = self.kdf.derive(pass, &self.salt);
        self.wrap_with(&kek, data_key)?;
        Ok(kek)
    }

    /// Wraps `data_key` under `kek` with a fresh nonce, binding the header's fields as they
    /// are now.
    fn wrap_with(&mut self, kek: &Key, data_key: &Key) -> std::io::Result<()> {
        self.wrap_nonce = aead::random_nonce()?;
        let mut buf = zeroize::Zeroizing::new(data_key.expose().to_vec());
        aead::seal(kek, &self.wrap_nonce, &self.wrap_aad(), &mut buf);
        self.wrapped_key.copy_from_slice(&buf);
        Ok(())
    }

    /// Sets required feature bits. They are bound into the key wrap (an older reader must
    /// not be tricked past them), so the data key is wrapped again under the same
    /// key-encryption key `kek`: the passphrase stays, and no key derivation is needed.
    pub fn require(&mut self, bits: u32, kek: &Key, data_key: &Key) -> std::io::Result<()> {
        self.required_features |= bits;
        self.wrap_with(kek, data_key)
    }

    /// Unwraps the data key with `pass`.
    pub fn unwrap_key(&self, pass: &Passphrase) -> Result<Key, HeaderError> {
        self.unwrap_with(&self.kdf.derive(pass, &self.salt))
    }

    /// Unwraps the data key with a key-encryption key derived for this header's KDF settings.
    fn unwrap_with(&self, kek: &Key) -> Result<Key, HeaderError> {
        let mut buf = zeroize::Zeroizing::new(self.wrapped_key.to_vec());
        if !aead::open(kek, &self.wrap_nonce, &self.wrap_aad(), &mut buf) {
            return Err(HeaderError::WrongPassphrase);
        }
        let mut key = Key([0; 32]);
        key.0.copy_from_slice(&buf);
        Ok(key)
    }

    /// Seals the header's bytes 0..176 under the data key (after any change to them).
    pub fn seal(&mut self, data_key: &Key) -> std::io::Result<()> {
        self.seal_nonce = aead::random_nonce()?;
        let mut buf = Vec::new();
        aead::seal(data_key, &self.seal_nonce, &self.seal_aad(), &mut buf);
        self.seal_tag.copy_from_slice(&buf);
        Ok(())
    }

    /// Checks the seal made by [`Header::seal`].
    pub fn verify_seal(&self, data_key: &Key) -> bool {
        let mut buf = self.seal_tag.to_vec();
        aead::open(data_key, &self.seal_nonce, &self.seal_aad(), &mut buf)
    }

    fn seal_aad(&self) -> Vec<u8> {
        [SEAL_CONTEXT, &self.encode()[..176]].concat()
    }

    /// The associated data of the key wrap: every field that must not change while the
    /// wrapped key stays (magic, version, features, node id, KDF parameters, salt).
    fn wrap_aad(&self) -> Vec<u8> {
        let slot = self.encode();
        [WRAP_CONTEXT, &slot[0..40], &slot[72..104]].concat()
    }

    /// Encodes one slot, CRC included.
    pub fn encode(&self) -> [u8; SLOT_BYTES] {
        let mut b = [0u8; SLOT_BYTES];
        b[0..8].copy_from_slice(MAGIC);
        b[8..10].copy_from_slice(&self.version.to_le_bytes());
        b[10..12].copy_from_slice(&(SLOT_BYTES as u16).to_le_bytes());
        b[12..16].copy_from_slice(&self.required_features.to_le_bytes());
        b[16..20].copy_from_slice(&self.optional_features.to_le_bytes());
        b[24..40].copy_from_slice(&self.node_id);
        b[40..48].copy_from_slice(&self.generation.to_le_bytes());
        b[48..52].copy_from_slice(&self.epoch.to_le_bytes());
        b[56..64].copy_from_slice(&self.log_start.to_le_bytes());
        b[64..72].copy_from_slice(&self.base_end.to_le_bytes());
        b[72] = KDF_ARGON2ID;
        b[76..80].copy_from_slice(&self.kdf.memory_kib.to_le_bytes());
        b[80..84].copy_from_slice(&self.kdf.time_cost.to_le_bytes());
        b[84..88].copy_from_slice(&self.kdf.parallelism.to_le_bytes());
        b[88..104].copy_from_slice(&self.salt);
        b[104..128].copy_from_slice(&self.wrap_nonce);
        b[128..176].copy_from_slice(&self.wrapped_key);
        b[176..200].copy_from_slice(&self.seal_nonce);
        b[200..216].copy_from_slice(&self.seal_tag);
        let crc = crc32fast::hash(&b[..CRC_AT]);
        b[CRC_AT..].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes one slot: `Ok(None)` if its magic or CRC is wrong (damaged or torn).
    fn decode_slot(b: &[u8]) -> Result<Option<Header>, HeaderError> {
        if b.len() < SLOT_BYTES || &b[0..8] != MAGIC {
            return Ok(None);
        }
        if crc32fast::hash(&b[..CRC_AT]) != u32_at(b, CRC_AT) {
            return Ok(None);
        }
        // The slot is intact: from here on, what we do not understand is a version matter.
        let version = u16_at(b, 8);
        if version != VERSION {
            return Err(HeaderError::Unsupported(format!("has format version {version}; this polykey reads version {VERSION}")));
        }
        let required = u32_at(b, 12);
        if required & !KNOWN_REQUIRED_FEATURES != 0 {
            return Err(HeaderError::Unsupported(format!("needs unknown features 0x{:08x}", required & !KNOWN_REQUIRED_FEATURES)));
        }
        if b[72] != KDF_ARGON2ID {
            return Err(HeaderError::Unsupported(format!("uses unknown key derivation {}", b[72])));
        }
        let bad = |what: String| Err(HeaderError::Damaged(what));
        if u16_at(b, 10) as usize != SLOT_BYTES
            || b[20..24] != [0; 4]
            || b[52..56] != [0; 4]
            || b[73..76] != [0; 3]
            || b[216..CRC_AT].iter().any(|&x| x != 0)
        {
            return bad("header has non-zero reserved fields".into());
        }
        let kdf = kdf::KdfParams { memory_kib: u32_at(b, 76), time_cost: u32_at(b, 80), parallelism: u32_at(b, 84) };
        if let Err(what) = kdf.check() {
            return bad(format!("header asks for {what}"));
        }
        let h = Header {
            version,
            required_features: required,
            optional_features: u32_at(b, 16),
            node_id: b[24..40].try_into().expect("16 bytes"),
            generation: u64_at(b, 40),
            epoch: u32_at(b, 48),
            log_start: u64_at(b, 56),
            base_end: u64_at(b, 64),
            kdf,
            salt: b[88..104].try_into().expect("16 bytes"),
            wrap_nonce: b[104..128].try_into().expect("24 bytes"),
            wrapped_key: b[128..176].try_into().expect("48 bytes"),
            seal_nonce: b[176..200].try_into().expect("24 bytes"),
            seal_tag: b[200..216].try_into().expect("16 bytes"),
        };
        if h.log_start < LOG_OFFSET || h.base_end < h.log_start {
            return bad("header's log bounds are impossible".into());
        }
        Ok(Some(h))
    }

    /// Reads the header copies from the start of a node file: the intact slots, newest first,
    /// and whether both were intact and equal (if not, the next header write repairs them).
    /// An intact slot of an unknown version or feature makes the whole node unsupported, so
    /// an older copy never hides a newer format.
    pub fn decode(file: &[u8]) -> Result<(Vec<Header>, bool), HeaderError> {
        if file.len() < SLOT_BYTES {
            return Err(HeaderError::Damaged(format!("file is {} bytes, shorter than a header", file.len())));
        }
        let a = Self::decode_slot(&file[..SLOT_BYTES]);
        let b = if file.len() >= 2 * SLOT_BYTES { Self::decode_slot(&file[SLOT_BYTES..2 * SLOT_BYTES]) } else { Ok(None) };
        let (a, b) = match (a, b) {
            (Err(e @ HeaderError::Unsupported(_)), _) | (_, Err(e @ HeaderError::Unsupported(_))) => return Err(e),
            (a, b) => (a, b),
        };
        let both = matches!((&a, &b), (Ok(Some(x)), Ok(Some(y))) if x == y);
        let mut found: Vec<Header> = [a, b].into_iter().filter_map(|r| r.ok().flatten()).collect();
        found.sort_by_key(|h| std::cmp::Reverse(h.generation));
        found.dedup();
        if !found.is_empty() {
            return Ok((found, both));
        }
        Self::decode_slot(&file[..SLOT_BYTES])?; // Report slot A's own complaint, if any.
        if file[..8] != MAGIC[..] && file.get(SLOT_BYTES..SLOT_BYTES + 8) != Some(&MAGIC[..]) {
            Err(HeaderError::Damaged("not a Polykey node (bad magic number)".into()))
        } else {
            Err(HeaderError::Damaged("header checksum mismatch in both copies".into()))
        }
    }

    /// Opens the header of `file` with `pass`: the newest intact copy that unwraps and whose
    /// seal holds. Returns it, the data key, and whether both copies were intact and equal.
    pub fn open(file: &[u8], pass: &Passphrase) -> Result<(Header, Key, bool), HeaderError> {
        Self::open_keys(file, pass).map(|(h, key, _, both)| (h, key, both))
    }

    /// [`Header::open`], also returning the key-encryption key (after the data key).
    pub fn open_keys(file: &[u8], pass: &Passphrase) -> Result<(Header, Key, Key, bool), HeaderError> {
        Self::open_deriving(file, &mut |kdf, salt| kdf.derive(pass, salt))
    }

    /// [`Header::open_keys`] with the key derivation given: it is called once per distinct KDF
    /// settings and salt, so two copies that ask for the same (a crafted header differing only
    /// in its log pointers, an interrupted compaction) cost one derivation, not two.
    fn open_deriving(
        file: &[u8],
        derive: &mut dyn FnMut(&kdf::KdfParams, &[u8; kdf::SALT_BYTES]) -> Key,
    ) -> Result<(Header, Key, Key, bool), HeaderError> {
        let (candidates, both) = Self::decode(file)?;
        let mut err = HeaderError::WrongPassphrase;
        let mut derived: Vec<(kdf::KdfParams, [u8; kdf::SALT_BYTES], Key)> = Vec::new();
        for h in candidates {
            let i = match derived.iter().position(|(p, s, _)| *p == h.kdf && *s == h.salt) {
                Some(i) => i,
                None => {
                    derived.push((h.kdf, h.salt, derive(&h.kdf, &h.salt)));
                    derived.len() - 1
                }
            };
            match h.unwrap_with(&derived[i].2) {
                Ok(key) if h.verify_seal(&key) => return Ok((h, key, derived.swap_remove(i).2, both)),
                Ok(_) => err = HeaderError::Damaged("header seal does not verify (tampered log pointers?)".into()),
                Err(e) => {
                    if !matches!(err, HeaderError::Damaged(_)) {
                        err = e;
                    }
                }
            }
        }
        Err(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fast() -> kdf::KdfParams {
        kdf::KdfParams { memory_kib: 8, time_cost: 1, parallelism: 1 }
    }

    fn file(h: &Header) -> Vec<u8> {
        let s = h.encode();
        [s, s].concat()
    }

    #[test]
    fn create_encode_open() {
        let pw = Passphrase::new(b"pw".to_vec());
        let (h, key) = Header::create(&pw, fast()).map(|(h, k, _)| (h, k)).unwrap();
        let (back, k2, both) = Header::open(&file(&h), &pw).unwrap();
        assert!(both);
        assert_eq!(back, h);
        assert_eq!(k2.expose(), key.expose());
        assert_eq!(Header::open(&file(&h), &Passphrase::new(b"no".to_vec())).err(), Some(HeaderError::WrongPassphrase));
    }

    #[test]
    fn one_damaged_slot_is_survived_two_are_damage() {
        let pw = Passphrase::new(b"pw".to_vec());
        let (h, _) = Header::create(&pw, fast()).map(|(h, k, _)| (h, k)).unwrap();
        let mut f = file(&h);
        f[100] ^= 1;
        let (back, _, both) = Header::open(&f, &pw).unwrap();
        assert_eq!((back, both), (h.clone(), false));
        f[612] ^= 1;
        assert!(matches!(Header::open(&f, &pw), Err(HeaderError::Damaged(_))));
    }

    #[test]
    fn unknown_version_and_features_are_refused_even_beside_a_good_copy() {
        let pw = Passphrase::new(b"pw".to_vec());
        let (mut h, _) = Header::create(&pw, fast()).map(|(h, k, _)| (h, k)).unwrap();
        let good = h.encode();
        h.version = 2;
        assert!(matches!(Header::decode(&[good, h.encode()].concat()), Err(HeaderError::Unsupported(_))));
        h.version = 1;
        h.required_features = 8;
        assert!(matches!(Header::decode(&file(&h)), Err(HeaderError::Unsupported(_))));
        h.required_features = 0;
        h.kdf.memory_kib = u32::MAX;
        assert!(matches!(Header::decode(&file(&h)), Err(HeaderError::Damaged(_))));
    }

    #[test]
    fn tampered_fields_are_caught() {
        let pw = Passphrase::new(b"pw".to_vec());
        let (h, _) = Header::create(&pw, fast()).map(|(h, k, _)| (h, k)).unwrap();
        // KDF parameters are bound to the key wrap.
        let mut t = h.clone();
        t.kdf.time_cost = 2;
        assert_eq!(Header::open(&file(&t), &pw).err(), Some(HeaderError::WrongPassphrase));
        // Log pointers are bound to the seal (the CRC alone is recomputable by anyone).
        let mut t = h.clone();
        t.log_start += 52;
        t.base_end = t.log_start;
        assert!(matches!(Header::open(&file(&t), &pw), Err(HeaderError::Damaged(_))));
    }

    #[test]
    fn copies_asking_for_the_same_settings_and_salt_cost_one_derivation() {
        let pw = Passphrase::new(b"pw".to_vec());
        let (h, key, _) = Header::create(&pw, fast()).unwrap();
        // Slot A differs from slot B only in its sealed fields, as after an interrupted
        // compaction (or in a crafted header): both are tried, the KEK is derived once.
        let mut a = h.clone();
        a.generation += 1;
        a.log_start += 52;
        a.base_end = a.log_start;
        a.seal(&key).unwrap();
        let f = [a.encode(), h.encode()].concat();
        let count = |pass: &Passphrase| {
            let mut n = 0;
            let r = Header::open_deriving(&f, &mut |kdf, salt| {
                n += 1;
                kdf.derive(pass, salt)
            });
            (r.map(|(h, _, _, _)| h), n)
        };
        assert_eq!(count(&Passphrase::new(b"wrong".to_vec())), (Err(HeaderError::WrongPassphrase), 1));
        assert_eq!(count(&pw), (Ok(a.clone()), 1));
        // Different salts (an interrupted passphrase change) need one derivation each.
        let mut b = h.clone();
        b.wrap(&pw, fast(), &key).unwrap();
        b.seal(&key).unwrap();
        let f = [a.encode(), b.encode()].concat();
        let mut n = 0;
        let r = Header::open_deriving(&f, &mut |kdf, salt| {
            n += 1;
            kdf.derive(&Passphrase::new(b"wrong".to_vec()), salt)
        });
        assert_eq!((r.err(), n), (Some(HeaderError::WrongPassphrase), 2));
    }

    #[test]
    fn an_interrupted_passphrase_change_opens_with_either_passphrase() {
        let (old, new) = (Passphrase::new(b"old".to_vec()), Passphrase::new(b"new".to_vec()));
        let (h, key, _) = Header::create(&old, fast()).unwrap();
        let mut h2 = h.clone();
        h2.wrap(&new, fast(), &key).unwrap();
        h2.generation += 1;
        h2.seal(&key).unwrap();
        let f = [h2.encode(), h.encode()].concat();
        assert_eq!(Header::open(&f, &new).unwrap().0, h2);
        assert_eq!(Header::open(&f, &old).unwrap().0, h);
    }
}
