//! Integration tests, compiled into one binary (see each module's doc for what it guards).

mod util;

mod cli;
mod concurrency;
mod control;
mod corruption;
mod crashstorm;
mod edit;
mod editors;
mod faultinjection;
mod faults;
mod growth;
mod history;
mod hostile;
mod identity;
mod import;
mod interactive;
mod memory;
mod mergeatsave;
mod mount;
mod mounted;
mod mountpoint;
mod posix;
mod rollback;
mod roundtrip;
mod secrecy;
mod stick;
mod sync;
mod syncmodel;
mod usage;
mod usermount;
mod vectors;
