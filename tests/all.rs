//! Integration tests, compiled into one binary (see each module's doc for what it guards).

mod util;

mod cli;
mod corruption;
mod editors;
mod faultinjection;
mod faults;
mod import;
mod mount;
mod mounted;
mod rollback;
mod roundtrip;
mod secrecy;
mod vectors;
