//! Cryptographic primitives: the passphrase KDF and the AEAD, with their bounds.

pub mod aead;
pub mod kdf;
