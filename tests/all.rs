//! Integration tests, compiled into one binary (see each module's doc for what it guards).

mod util;

mod cli;
mod concurrency;
mod corruption;
mod crashstorm;
mod editors;
mod faultinjection;
mod faults;
mod import;
mod mount;
mod mounted;
mod posix;
mod rollback;
mod roundtrip;
mod secrecy;
mod stick;
mod vectors;
