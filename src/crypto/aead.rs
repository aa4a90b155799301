//! XChaCha20-Poly1305 with a random 24-byte nonce and caller-supplied associated data.

use crate::secret::Key;
use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};

/// Nonce length in bytes.
pub const NONCE_BYTES: usize = 24;
/// Authentication tag length in bytes.
pub const TAG_BYTES: usize = 16;

/// A fresh random nonce. Random 192-bit nonces never repeat in practice, which is why
/// XChaCha20 is used: no counter needs to survive crashes or file copies.
pub fn random_nonce() -> std::io::Result<[u8; NONCE_BYTES]> {
    let mut n = [0u8; NONCE_BYTES];
    crate::secret::fill_random(&mut n)?;
    Ok(n)
}

/// Encrypts `buf` in place and appends the tag.
pub fn seal(key: &Key, nonce: &[u8; NONCE_BYTES], aad: &[u8], buf: &mut Vec<u8>) {
    seal_from(key, nonce, aad, buf, 0);
}

/// Encrypts `buf[from..]` in place and appends the tag (what comes before, a clear header,
/// stays as it is).
pub fn seal_from(key: &Key, nonce: &[u8; NONCE_BYTES], aad: &[u8], buf: &mut Vec<u8>, from: usize) {
    let cipher = XChaCha20Poly1305::new(key.expose().into());
    let tag = cipher
        .encrypt_in_place_detached(XNonce::from_slice(nonce), aad, &mut buf[from..])
        .expect("XChaCha20 accepts messages up to 256 GiB; frames are far smaller");
    buf.extend_from_slice(&tag);
}

/// Authenticates and decrypts `buf` (ciphertext followed by tag) in place, leaving the
/// plaintext. Returns `false` (and leaves `buf` unspecified) if authentication fails.
pub fn open(key: &Key, nonce: &[u8; NONCE_BYTES], aad: &[u8], buf: &mut Vec<u8>) -> bool {
    if buf.len() < TAG_BYTES {
        return false;
    }
    let split = buf.len() - TAG_BYTES;
    let tag = Tag::clone_from_slice(&buf[split..]);
    buf.truncate(split);
    let cipher = XChaCha20Poly1305::new(key.expose().into());
    cipher.decrypt_in_place_detached(XNonce::from_slice(nonce), aad, buf, &tag).is_ok()
}

/// Authenticates and decrypts `buf` (ciphertext followed by tag) in place; returns the
/// plaintext's length (the tag's bytes after it are left as they were), or `None` if
/// authentication fails, leaving `buf` unchanged.
pub fn open_in_place(key: &Key, nonce: &[u8; NONCE_BYTES], aad: &[u8], buf: &mut [u8]) -> Option<usize> {
    let split = buf.len().checked_sub(TAG_BYTES)?;
    let (body, tag) = buf.split_at_mut(split);
    let cipher = XChaCha20Poly1305::new(key.expose().into());
    cipher.decrypt_in_place_detached(XNonce::from_slice(nonce), aad, body, Tag::from_slice(tag)).ok()?;
    Some(split)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_tamper() {
        let key = Key([7; 32]);
        let nonce = [9; NONCE_BYTES];
        let mut buf = b"hello".to_vec();
        seal(&key, &nonce, b"aad", &mut buf);
        assert_eq!(buf.len(), 5 + TAG_BYTES);
        let sealed = buf.clone();
        assert!(open(&key, &nonce, b"aad", &mut buf));
        assert_eq!(buf, b"hello");
        let mut wrong_aad = sealed.clone();
        assert!(!open(&key, &nonce, b"other", &mut wrong_aad));
        let mut flipped = sealed.clone();
        flipped[0] ^= 1;
        assert!(!open(&key, &nonce, b"aad", &mut flipped));
        let mut short = vec![0u8; 3];
        assert!(!open(&key, &nonce, b"aad", &mut short));
    }
}
