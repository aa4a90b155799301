//! The tar reader: `format::journal::parse`, by itself and in round trips with its `Writer`.
//!
//! Input: a mode byte, then
//! - even mode: a tar stream to parse. Whatever parses must survive a round trip: written
//!   back with `Writer` it parses to the same records, and writing those gives the same bytes.
//! - odd mode: a recipe for records (names at the rules' edges, long names, objects), written
//!   with `Writer` and parsed back: the records must come back unchanged, and bytes appended
//!   after them (the next transaction, or garbage) must not change how they parse.
#![no_main]

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use polykey::format::journal::{parse, Record, Writer};
use polykey_fuzz::RecordGen;

fn write(records: &[Record]) -> Vec<u8> {
    let mut w = Writer::new();
    records.iter().for_each(|r| w.push(r));
    w.into_bytes().to_vec()
}

fn parse_any(data: &[u8]) {
    let Ok(records) = parse(data) else { return };
    let bytes = write(&records);
    let again = parse(&bytes).expect("the writer's output parses");
    assert_eq!(again, records, "records changed on a round trip");
    assert_eq!(write(&again), bytes, "the writer is not deterministic");
}

fn round_trip(u: &mut Unstructured<'_>) -> Result<()> {
    let mut gen = RecordGen::default();
    let mut records = Vec::new();
    for _ in 0..u.int_in_range(0..=6)? {
        records.extend(gen.records(u)?);
    }
    let bytes = write(&records);
    assert_eq!(parse(&bytes).expect("the writer's output parses"), records);
    // Whatever follows a transaction either parses as further members or is damage.
    let rest = u.len();
    let tail = u.bytes(rest)?;
    let joined = [&bytes[..], tail].concat();
    if let Ok(more) = parse(&joined) {
        assert!(more.get(..records.len()) == Some(&records[..]), "appended bytes changed earlier members");
    }
    parse_any(&joined);
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    if mode & 1 == 0 {
        parse_any(rest);
    } else {
        let _ = round_trip(&mut Unstructured::new(rest));
    }
});
