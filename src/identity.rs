//! A node's identity: two keys made once, inside the node, from the OS generator, and kept in
//! it (the `.polykey/identity` record, docs/FORMAT.md): an X25519 key (what others encrypt to:
//! an age recipient) and an Ed25519 key (what this node signs with). Only the public halves
//! ever leave the node, as one token `pk1…` (bech32 of both), a bare `age1…` recipient, or an
//! OpenSSH `ssh-ed25519` line.

use crate::format::journal::IDENTITY_BYTES;
use base64::Engine;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// The secret halves (wiped on drop).
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct Identity {
    ed25519_seed: [u8; 32],
    x25519_secret: [u8; 32],
}

impl Identity {
    /// Two fresh keys from the OS generator.
    pub fn generate() -> Result<Identity, getrandom::Error> {
        let mut id = Identity { ed25519_seed: [0; 32], x25519_secret: [0; 32] };
        getrandom::getrandom(&mut id.ed25519_seed)?;
        getrandom::getrandom(&mut id.x25519_secret)?;
        Ok(id)
    }

    /// The keys from an identity record's data (version 1, seed, secret); `None` if malformed.
    pub fn from_bytes(b: &[u8]) -> Option<Identity> {
        if b.len() != IDENTITY_BYTES || b[0] != 1 {
            return None;
        }
        let mut id = Identity { ed25519_seed: [0; 32], x25519_secret: [0; 32] };
        id.ed25519_seed.copy_from_slice(&b[1..33]);
        id.x25519_secret.copy_from_slice(&b[33..65]);
        Some(id)
    }

    /// The record's data (wipe it after use).
    pub fn to_bytes(&self) -> Vec<u8> {
        [&[1u8][..], &self.ed25519_seed, &self.x25519_secret].concat()
    }

    /// The X25519 public key.
    pub fn x25519_public(&self) -> [u8; 32] {
        let secret = x25519_dalek::StaticSecret::from(self.x25519_secret);
        x25519_dalek::PublicKey::from(&secret).to_bytes()
    }

    /// The Ed25519 public key.
    pub fn ed25519_public(&self) -> [u8; 32] {
        ed25519_dalek::SigningKey::from_bytes(&self.ed25519_seed).verifying_key().to_bytes()
    }

    /// `pk1…`: bech32 (HRP `pk`) of the X25519 public key, then the Ed25519 public key.
    pub fn token(&self) -> String {
        bech32_lower("pk", &[self.x25519_public(), self.ed25519_public()].concat())
    }

    /// `age1…`: the X25519 public key as an age recipient.
    pub fn age_recipient(&self) -> String {
        bech32_lower("age", &self.x25519_public())
    }

    /// `ssh-ed25519 AAAA… polykey`: the Ed25519 public key as an OpenSSH public key line.
    #[allow(clippy::big_endian_bytes)] // SSH's wire format (RFC 4251) is big-endian.
    pub fn ssh_line(&self) -> String {
        let mut wire = Vec::with_capacity(51);
        for field in [&b"ssh-ed25519"[..], &self.ed25519_public()] {
            wire.extend_from_slice(&(field.len() as u32).to_be_bytes());
            wire.extend_from_slice(field);
        }
        format!("ssh-ed25519 {} polykey", base64::engine::general_purpose::STANDARD.encode(wire))
    }
}

fn bech32_lower(hrp: &str, data: &[u8]) -> String {
    let hrp = bech32::Hrp::parse(hrp).expect("a valid human-readable part");
    bech32::encode_lower::<bech32::Bech32>(hrp, data).expect("well under bech32's code length")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_differs() {
        let a = Identity::generate().unwrap();
        let b = Identity::from_bytes(&a.to_bytes()).unwrap();
        assert_eq!(a.token(), b.token());
        assert_ne!(a.token(), Identity::generate().unwrap().token());
        // "pk1", 64 bytes as 103 five-bit characters, a 6-character checksum.
        assert!(a.token().starts_with("pk1") && a.token().len() == 3 + 103 + 6, "{}", a.token());
        assert!(Identity::from_bytes(&[2; 65]).is_none() && Identity::from_bytes(&[1; 64]).is_none());
    }

    /// The age secret key line of this identity (`AGE-SECRET-KEY-1…`): only for the test,
    /// which gives it to the real `age-keygen -y`.
    fn age_secret_line(id: &Identity) -> String {
        let hrp = bech32::Hrp::parse("AGE-SECRET-KEY-").unwrap();
        bech32::encode_upper::<bech32::Bech32>(hrp, &id.x25519_secret).unwrap()
    }

    /// The real `age-keygen -y` derives the same recipient from the same secret, and the real
    /// `ssh-keygen` reads the OpenSSH line (both installed by scripts/install-deps.sh).
    #[test]
    fn age_and_ssh_tools_agree() {
        let id = Identity::generate().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key.txt");
        std::fs::write(&key, format!("{}\n", age_secret_line(&id))).unwrap();
        match std::process::Command::new("age-keygen").arg("-y").arg(&key).output() {
            Ok(o) => {
                assert!(o.status.success(), "age-keygen: {}", String::from_utf8_lossy(&o.stderr));
                assert_eq!(String::from_utf8(o.stdout).unwrap().trim(), id.age_recipient());
            }
            Err(_) => eprintln!("SKIP: age-keygen is missing; run scripts/install-deps.sh"),
        }
        let pubkey = dir.path().join("id.pub");
        std::fs::write(&pubkey, format!("{}\n", id.ssh_line())).unwrap();
        match std::process::Command::new("ssh-keygen").arg("-l").arg("-f").arg(&pubkey).output() {
            Ok(o) => {
                assert!(o.status.success(), "ssh-keygen: {}", String::from_utf8_lossy(&o.stderr));
                assert!(String::from_utf8_lossy(&o.stdout).contains("(ED25519)"));
            }
            Err(_) => eprintln!("SKIP: ssh-keygen is missing; run scripts/install-deps.sh"),
        }
    }
}
