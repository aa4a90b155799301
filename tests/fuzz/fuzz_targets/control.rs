//! The daemon's socket protocol: `control::read_message`, `Request::decode` and
//! `Response::decode`, and their encoders.
//!
//! Input: a mode byte, then
//! - 0: a byte stream as a client or daemon might send it, read message by message, each body
//!   decoded as a request and as a response;
//! - 1: a request body, 2: a response body. Whatever decodes re-encodes (with its length
//!   prefix right) to a message that decodes to the same thing;
//! - 3: a recipe for requests and responses (names at the rules' edges), encoded and decoded
//!   back unchanged.
#![no_main]

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use polykey::control::{read_message, Request, Response};
use polykey::{LogEntry, NameKind, Passphrase};
use polykey_fuzz::{bytes, name};
use zeroize::Zeroizing;

/// Checks the length prefix and returns the body.
fn body(msg: &[u8]) -> &[u8] {
    let len = u32::from_le_bytes(msg[..4].try_into().unwrap()) as usize;
    assert_eq!(len, msg.len() - 4, "length prefix");
    assert!(len > 0, "read_message refuses empty bodies");
    &msg[4..]
}

/// `Debug` plus what it redacts.
fn show_request(r: &Request) -> String {
    match r {
        Request::Passwd(current, new) => format!("Passwd({:?}, {:?})", current.expose(), new.expose()),
        r => format!("{r:?}"),
    }
}

fn request(b: &[u8]) {
    let Ok(r) = Request::decode(b) else { return };
    let _ = r.access();
    let back = Request::decode(body(&r.encode())).expect("an encoded request decodes");
    assert_eq!(show_request(&back), show_request(&r));
}

fn response(b: &[u8]) {
    let Ok(r) = Response::decode(b) else { return };
    let back = Response::decode(body(&r.encode())).expect("an encoded response decodes");
    assert_eq!(format!("{back:?}"), format!("{r:?}"));
}

fn recipe(u: &mut Unstructured<'_>) -> Result<()> {
    use NameKind::{Repo, Secret, Tag, TagEntry};
    let opt = |u: &mut Unstructured<'_>, k| -> Result<_> {
        if u.arbitrary()? {
            Ok(Some(name(u, k)?))
        } else {
            Ok(None)
        }
    };
    let req = match u.int_in_range(0..=14)? {
        0 => Request::Ls(opt(u, Repo)?),
        1 => Request::Tags(opt(u, Tag)?),
        2 => Request::Put(name(u, Repo)?, name(u, Secret)?, Zeroizing::new(bytes(u, 300)?.to_vec())),
        3 => Request::Get(name(u, Repo)?, name(u, Secret)?),
        4 => Request::Rm(name(u, Repo)?, name(u, Secret)?),
        5 => Request::RmRepo(name(u, Repo)?),
        6 => Request::Mv(name(u, Repo)?, name(u, Secret)?, name(u, Secret)?),
        7 => Request::Tag(name(u, Tag)?, name(u, TagEntry)?, name(u, Repo)?, name(u, Secret)?),
        8 => Request::Untag(name(u, Tag)?, name(u, TagEntry)?),
        9 => Request::Log(name(u, Repo)?, opt(u, Secret)?),
        10 => Request::Export,
        11 => Request::Passwd(Passphrase::new(bytes(u, 64)?.to_vec()), Passphrase::new(bytes(u, 64)?.to_vec())),
        12 => Request::Status,
        13 => Request::Import(
            (0..u.int_in_range(0..=3)?)
                .map(|_| Ok((name(u, Repo)?, name(u, Secret)?, Zeroizing::new(bytes(u, 64)?.to_vec()))))
                .collect::<Result<_>>()?,
        ),
        _ => Request::Unmount,
    };
    let back = Request::decode(body(&req.encode())).expect("an encoded request decodes");
    assert_eq!(show_request(&back), show_request(&req));
    let n = u.int_in_range(0..=3)?;
    let resp = match u.int_in_range(0..=8)? {
        0 => Response::Done,
        1 => Response::Names((0..n).map(|_| name(u, TagEntry)).collect::<Result<Vec<_>>>()?.iter().collect()),
        2 => Response::Entries((0..n).map(|_| Ok((name(u, TagEntry)?, name(u, Repo)?, name(u, Secret)?))).collect::<Result<_>>()?),
        3 => Response::Data(Zeroizing::new(bytes(u, 300)?.to_vec())),
        4 => Response::Log(
            (0..n)
                .map(|_| {
                    let id = git2::Oid::from_bytes(&u.arbitrary::<[u8; 20]>()?).unwrap();
                    let message = String::from_utf8_lossy(bytes(u, 40)?).into_owned();
                    Ok(LogEntry { id, time: u.arbitrary()?, message })
                })
                .collect::<Result<_>>()?,
        ),
        6 => Response::Count(u.arbitrary()?),
        5 => Response::Mounted(u.arbitrary()?, bytes(u, 64)?.to_vec(), bytes(u, 64)?.to_vec()),
        7 => {
            let path =
                |u: &mut Unstructured| -> Result<std::path::PathBuf> { Ok(String::from_utf8_lossy(bytes(u, 64)?).into_owned().into()) };
            Response::Health(polykey::control::Health {
                log: path(u)?,
                failing_since: u.arbitrary()?,
                error: String::from_utf8_lossy(bytes(u, 64)?).into_owned(),
                waiting: u.arbitrary()?,
                rescued: if u.arbitrary()? { Some(path(u)?).filter(|p| !p.as_os_str().is_empty()) } else { None },
            })
        }
        _ => Response::Failed(String::from_utf8_lossy(bytes(u, 64)?).into_owned(), u.arbitrary()?),
    };
    let back = Response::decode(body(&resp.encode())).expect("an encoded response decodes");
    assert_eq!(format!("{back:?}"), format!("{resp:?}"));
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    match mode % 4 {
        0 => {
            // Lengths far past the input only test the growth of the read buffer: they are cut
            // short so that the fuzzer spends its time on the rest of the protocol.
            let mut stream = rest;
            loop {
                if let Some(len) = stream.get(..4) {
                    if u32::from_le_bytes(len.try_into().unwrap()) as usize > stream.len() + (1 << 16) {
                        break;
                    }
                }
                let Ok(Some(msg)) = read_message(&mut stream, polykey::control::MAX_REQUEST_BYTES) else { break };
                request(&msg);
                response(&msg);
            }
        }
        1 => request(rest),
        2 => response(rest),
        _ => {
            let _ = recipe(&mut Unstructured::new(rest));
        }
    }
});
