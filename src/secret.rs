//! Zeroizing holders for passphrases, keys and plaintext buffers.
//!
//! What this protects: the bytes are wiped when dropped, and `Debug` never shows them.
//! What it does not: copies made by the allocator when a `Vec` grows before it is wrapped,
//! copies in the kernel's pipe and page buffers, swap (the daemon locks its memory for that),
//! and a process that can read this one's memory (ptrace, /proc/PID/mem, a core dump).

use std::fmt;
use zeroize::{Zeroize, Zeroizing};

/// A passphrase: arbitrary bytes, never empty once accepted.
#[derive(Clone, Zeroize)]
#[zeroize(drop)]
pub struct Passphrase(Vec<u8>);

impl Passphrase {
    /// Wraps bytes as a passphrase (emptiness is checked by the password sources).
    pub fn new(bytes: Vec<u8>) -> Self {
        Passphrase(bytes)
    }

    /// The passphrase bytes.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Passphrase(<redacted>)")
    }
}

/// A 256-bit symmetric key (data key or key-encryption key).
#[derive(Clone, Zeroize)]
#[zeroize(drop)]
pub struct Key(pub(crate) [u8; 32]);

impl Key {
    /// A fresh random key from the operating system.
    pub fn random() -> std::io::Result<Self> {
        let mut k = [0u8; 32];
        crate::secret::fill_random(&mut k)?;
        Ok(Key(k))
    }

    /// The key bytes.
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(<redacted>)")
    }
}

/// Fills `buf` from the operating system's random source.
pub fn fill_random(buf: &mut [u8]) -> std::io::Result<()> {
    getrandom::getrandom(buf).map_err(|e| std::io::Error::other(format!("no randomness: {e}")))
}

/// A plaintext buffer that is wiped on drop.
pub type SecretBytes = Zeroizing<Vec<u8>>;

/// Makes room for `additional` more bytes in `buf` without leaving a copy behind: if it has
/// too little, its bytes move to a new buffer of at least twice the capacity (at least 64
/// bytes, at most `limit` unless the bytes asked for need more) and the old one is wiped as
/// it is dropped, where `Vec`'s own growth would free it unwiped.
pub fn reserve(buf: &mut SecretBytes, additional: usize, limit: usize) {
    let needed = buf.len().saturating_add(additional);
    if needed <= buf.capacity() {
        return;
    }
    let capacity = buf.capacity().saturating_mul(2).max(64).min(limit).max(needed);
    let mut bigger = Zeroizing::new(Vec::with_capacity(capacity));
    bigger.extend_from_slice(buf);
    *buf = bigger;
}
