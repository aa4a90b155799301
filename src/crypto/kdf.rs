//! Argon2id: passphrase → key-encryption key, with parameter bounds checked on decode.

use crate::secret::{Key, Passphrase};

/// Default memory cost in KiB (64 MiB): about 0.25 s on a small laptop core, which makes
/// each passphrase guess cost an attacker that much memory-time too (see docs/FORMAT.md).
pub const DEFAULT_MEMORY_KIB: u32 = 64 * 1024;
/// Default number of passes over memory.
pub const DEFAULT_TIME_COST: u32 = 3;
/// Default lanes: one, so the cost is the same on one core as on many.
pub const DEFAULT_PARALLELISM: u32 = 1;

/// Largest memory cost a node may ask for when opened (1 GiB): a hostile file must not be
/// able to make us allocate without bound.
pub const MAX_MEMORY_KIB: u32 = 1024 * 1024;
/// Smallest memory cost accepted at all (tests use it; users should not).
pub const MIN_MEMORY_KIB: u32 = 8;
/// Largest time cost accepted when opening (the default is 3).
pub const MAX_TIME_COST: u32 = 16;
/// Largest memory × passes accepted when opening, in KiB (4 GiB: 1 GiB × 4 passes, about 21
/// times the default's work). Each bound alone would still let a crafted header ask for
/// 1 GiB × 16 passes, minutes of work before "wrong passphrase".
pub const MAX_MEMORY_TIME_KIB: u64 = 4 << 20;
/// Largest parallelism accepted when opening.
pub const MAX_PARALLELISM: u32 = 16;
/// Salt length in bytes.
pub const SALT_BYTES: usize = 16;

/// Argon2id parameters as stored in the node header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory cost in KiB.
    pub memory_kib: u32,
    /// Number of passes.
    pub time_cost: u32,
    /// Lanes.
    pub parallelism: u32,
}

impl Default for KdfParams {
    fn default() -> Self {
        KdfParams { memory_kib: DEFAULT_MEMORY_KIB, time_cost: DEFAULT_TIME_COST, parallelism: DEFAULT_PARALLELISM }
    }
}

impl KdfParams {
    /// Checks the decode-time bounds; returns what is out of range.
    pub fn check(&self) -> Result<(), String> {
        if !(1..=MAX_PARALLELISM).contains(&self.parallelism) {
            return Err(format!("Argon2 parallelism {} is outside 1..={MAX_PARALLELISM}", self.parallelism));
        }
        if !(1..=MAX_TIME_COST).contains(&self.time_cost) {
            return Err(format!("Argon2 time cost {} is outside 1..={MAX_TIME_COST}", self.time_cost));
        }
        let min = MIN_MEMORY_KIB.max(8 * self.parallelism);
        if !(min..=MAX_MEMORY_KIB).contains(&self.memory_kib) {
            return Err(format!("Argon2 memory {} KiB is outside {min}..={MAX_MEMORY_KIB} KiB", self.memory_kib));
        }
        let work = u64::from(self.memory_kib) * u64::from(self.time_cost);
        if work > MAX_MEMORY_TIME_KIB {
            return Err(format!(
                "Argon2 memory × time cost {} KiB × {} is above {MAX_MEMORY_TIME_KIB} KiB",
                self.memory_kib, self.time_cost
            ));
        }
        Ok(())
    }

    /// Derives the key-encryption key. The parameters must have passed [`KdfParams::check`].
    pub fn derive(&self, passphrase: &Passphrase, salt: &[u8; SALT_BYTES]) -> Key {
        let params = argon2::Params::new(self.memory_kib, self.time_cost, self.parallelism, Some(32))
            .expect("parameters were checked against argon2's bounds");
        let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let mut out = Key([0u8; 32]);
        argon.hash_password_into(passphrase.expose(), salt, &mut out.0).expect("salt length and output length are fixed and valid");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_refuse_hostile_costs() {
        let ok = KdfParams { memory_kib: 8, time_cost: 1, parallelism: 1 };
        assert!(ok.check().is_ok());
        assert!(KdfParams { memory_kib: 100 * 1024 * 1024, ..ok }.check().is_err());
        assert!(KdfParams { time_cost: 0, ..ok }.check().is_err());
        assert!(KdfParams { time_cost: 1000, ..ok }.check().is_err());
        assert!(KdfParams { parallelism: 0, ..ok }.check().is_err());
        assert!(KdfParams { memory_kib: 8, parallelism: 2, ..ok }.check().is_err());
        // The largest of each alone is too much together: minutes of work per attempt.
        assert!(KdfParams { memory_kib: MAX_MEMORY_KIB, time_cost: 64, parallelism: 1 }.check().is_err());
        assert!(KdfParams { memory_kib: MAX_MEMORY_KIB, time_cost: 5, parallelism: 1 }.check().is_err());
        assert!(KdfParams { memory_kib: 64 * 1024, time_cost: 17, parallelism: 1 }.check().is_err());
        // The largest accepted, and the defaults.
        assert!(KdfParams { memory_kib: MAX_MEMORY_KIB, time_cost: 4, parallelism: 1 }.check().is_ok());
        assert!(KdfParams { memory_kib: 256 * 1024, time_cost: 16, parallelism: 1 }.check().is_ok());
        assert!(KdfParams::default().check().is_ok());
    }

    #[test]
    fn derivation_is_deterministic_and_salted() {
        let p = KdfParams { memory_kib: 8, time_cost: 1, parallelism: 1 };
        let pw = Passphrase::new(b"pw".to_vec());
        let a = p.derive(&pw, &[1; SALT_BYTES]);
        let b = p.derive(&pw, &[1; SALT_BYTES]);
        let c = p.derive(&pw, &[2; SALT_BYTES]);
        assert_eq!(a.expose(), b.expose());
        assert_ne!(a.expose(), c.expose());
    }
}
