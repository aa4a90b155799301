//! The header parser: `Header::decode` and `Header::open`.
//!
//! Input: a mode byte, then bytes. Bits 0 and 1 of the mode fix the CRC of slot A and B (so
//! the fuzzer gets past the checksum); bit 2 XORs the bytes over the test node's two slots
//! instead of taking them as the file (so it starts from a header that opens); bit 3 opens
//! the result with the test passphrase when its KDF is cheap.
//!
//! Checks: no panic; an intact slot decodes to a header that encodes back to the same bytes;
//! "both copies equal" means both slots are byte-identical; and a header that opens with the
//! test passphrase, when made from the test node's, is exactly the test node's (no field can
//! change without the key).
#![no_main]

use libfuzzer_sys::fuzz_target;
use polykey::format::header::{Header, HeaderError, LOG_OFFSET, SLOT_BYTES};
use polykey_fuzz::{fix_slot_crc, pass, test_node};

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

/// Whether Argon2 with the slot's parameters costs little enough to run per input.
fn cheap_kdf(slot: &[u8]) -> bool {
    slot.len() < SLOT_BYTES || (u32_at(slot, 76) <= 256 && u32_at(slot, 80) <= 4)
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let node = test_node();
    let mut file = if mode & 4 != 0 {
        let mut f = node.slots.clone();
        f.iter_mut().zip(rest).for_each(|(b, x)| *b ^= x);
        f.extend_from_slice(rest.get(f.len()..).unwrap_or_default());
        f
    } else {
        rest.to_vec()
    };
    if mode & 1 != 0 {
        fix_slot_crc(&mut file, 0);
    }
    if mode & 2 != 0 {
        fix_slot_crc(&mut file, SLOT_BYTES);
    }
    let slot_a = file.get(..SLOT_BYTES);
    let slot_b = file.get(SLOT_BYTES..2 * SLOT_BYTES);
    match Header::decode(&file) {
        Ok((found, both)) => {
            assert!(!found.is_empty() && found.len() <= 2);
            for h in &found {
                let enc = h.encode();
                assert!(slot_a == Some(&enc[..]) || slot_b == Some(&enc[..]), "a decoded slot does not re-encode to its bytes");
                assert!(h.log_start >= LOG_OFFSET && h.base_end >= h.log_start);
                assert!(h.kdf.check().is_ok());
            }
            assert!(found.windows(2).all(|w| w[0].generation >= w[1].generation), "newest first");
            if both {
                assert_eq!(found.len(), 1);
                assert_eq!(slot_a, slot_b);
            }
        }
        Err(HeaderError::WrongPassphrase) => panic!("decode never checks the passphrase"),
        Err(_) => {}
    }
    if mode & 8 != 0 && slot_a.is_none_or(cheap_kdf) && slot_b.is_none_or(cheap_kdf) {
        // (Checked against the test node only when the input was made from it: a seed may be
        // another node with the same passphrase.)
        if let (Ok((h, key, _)), true) = (Header::open(&file, &pass()), mode & 4 != 0) {
            assert_eq!(h, node.header, "a header that opens with the passphrase was changed");
            assert_eq!(key.expose(), node.key.expose());
        }
    }
});
