//! Passphrase sources and their precedence (a stable interface: see docs/CLI.md).
//!
//! First found wins: a file (`--password-file`, `$POLYKEY_PASSWORD_FILE`), a command
//! (`--password-command`, `$POLYKEY_PASSWORD_COMMAND`), `$POLYKEY_PASSWORD`, a no-echo prompt
//! on the terminal. From a file or a command exactly one trailing `\n` or `\r\n` is stripped.

use crate::error::{Error, Result};
use crate::secret::Passphrase;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use zeroize::Zeroizing;

/// Environment variable holding the passphrase itself (the least safe source).
pub const ENV_PASSWORD: &str = "POLYKEY_PASSWORD";

/// Where the current passphrase may come from, in precedence order.
#[derive(Default, Clone)]
pub struct Sources {
    /// A file whose content is the passphrase.
    pub file: Option<PathBuf>,
    /// A shell command whose stdout is the passphrase.
    pub command: Option<String>,
    /// The value of `$POLYKEY_PASSWORD`.
    pub value: Option<Passphrase>,
}

/// Strips exactly one trailing `\n` or `\r\n`.
pub fn strip_newline(v: &mut Vec<u8>) {
    if v.ends_with(b"\r\n") {
        v.truncate(v.len() - 2);
    } else if v.ends_with(b"\n") {
        v.truncate(v.len() - 1);
    }
}

fn accept(mut bytes: Zeroizing<Vec<u8>>, from: &str) -> Result<Passphrase> {
    strip_newline(&mut bytes);
    if bytes.is_empty() {
        return Err(Error::Passphrase(format!("the passphrase from {from} is empty; refusing it")));
    }
    Ok(Passphrase::new(std::mem::take(&mut *bytes)))
}

/// Reads a passphrase from a file.
pub fn from_file(path: &Path) -> Result<Passphrase> {
    let bytes = std::fs::read(path).map_err(|e| Error::io("cannot read passphrase file", path, e))?;
    accept(Zeroizing::new(bytes), &format!("file {}", path.display()))
}

/// Runs `sh -c command` and takes its stdout as the passphrase. The child does not inherit
/// `$POLYKEY_PASSWORD`.
pub fn from_command(command: &str) -> Result<Passphrase> {
    let shell = if cfg!(windows) { ("cmd", "/C") } else { ("sh", "-c") };
    let out = Command::new(shell.0)
        .args([shell.1, command])
        .env_remove(ENV_PASSWORD)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| Error::Passphrase(format!("cannot run password command: {e}")))?;
    let stdout = Zeroizing::new(out.stdout);
    if !out.status.success() {
        return Err(Error::Passphrase(format!("password command failed ({})", out.status)));
    }
    accept(stdout, "the password command")
}

/// Whether a terminal is available for prompting.
fn has_terminal() -> bool {
    #[cfg(unix)]
    {
        std::fs::OpenOptions::new().read(true).write(true).open("/dev/tty").is_ok()
    }
    #[cfg(not(unix))]
    {
        use std::io::IsTerminal;
        std::io::stdin().is_terminal()
    }
}

/// Reads one line from the terminal without echo.
fn read_hidden(prompt: &str) -> Result<Zeroizing<Vec<u8>>> {
    rpassword::prompt_password(prompt)
        .map(|s| Zeroizing::new(s.into_bytes()))
        .map_err(|e| Error::Passphrase(format!("cannot read from the terminal: {e}")))
}

/// Prompts on the terminal without echo; `twice` asks again and compares.
pub fn prompt(label: &str, twice: bool) -> Result<Passphrase> {
    if !has_terminal() {
        return Err(Error::NoPassphraseSource);
    }
    let first = read_hidden(&format!("{label}: "))?;
    if first.is_empty() {
        return Err(Error::EmptyPassphrase);
    }
    if twice && read_hidden(&format!("{label} (again): "))? != first {
        return Err(Error::Passphrase("the passphrases do not match".into()));
    }
    Ok(Passphrase::new(first.to_vec()))
}

/// Asks for a secret's value on the terminal: one line, without echo, twice (as `pass insert`
/// does), so a typo is caught before it is stored. An empty value is refused.
pub fn prompt_value(what: &str) -> Result<Zeroizing<Vec<u8>>> {
    let first = read_hidden(&format!("Value for {what}: "))?;
    if first.is_empty() {
        return Err(Error::Passphrase(format!("the value for {what} is empty; nothing was stored")));
    }
    if read_hidden(&format!("Value for {what} (again): "))? != first {
        return Err(Error::Passphrase("the values do not match; nothing was stored".into()));
    }
    Ok(first)
}

/// Asks a yes/no `question` on the terminal (with echo); only `y` or `yes` is a yes.
pub fn confirm(question: &str) -> Result<bool> {
    use std::io::{BufRead, Write};
    let fail = |e: std::io::Error| Error::Passphrase(format!("cannot ask on the terminal: {e}"));
    let tty = std::fs::OpenOptions::new().read(true).write(true).open("/dev/tty").map_err(fail)?;
    (&tty).write_all(format!("{question} [y/N] ").as_bytes()).map_err(fail)?;
    let mut answer = String::new();
    std::io::BufReader::new(&tty).read_line(&mut answer).map_err(fail)?;
    Ok(matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes"))
}

/// How many times a passphrase typed at the prompt may be wrong before the command gives up
/// (as sudo and gpg do).
pub const PROMPT_ATTEMPTS: u32 = 3;

impl Sources {
    /// Is any non-interactive source set?
    pub fn any(&self) -> bool {
        self.file.is_some() || self.command.is_some() || self.value.is_some()
    }

    /// Whether the passphrase will come from the terminal prompt (so a wrong one may be
    /// typed again).
    pub fn prompts(&self) -> bool {
        !self.any()
    }

    /// The passphrase from the first source that is set, else from the terminal
    /// (asked twice when `confirm`).
    pub fn resolve(&self, label: &str, confirm: bool) -> Result<Passphrase> {
        if let Some(f) = &self.file {
            return from_file(f);
        }
        if let Some(c) = &self.command {
            return from_command(c);
        }
        if let Some(v) = &self.value {
            if v.expose().is_empty() {
                return Err(Error::Passphrase(format!("${ENV_PASSWORD} is empty; refusing it")));
            }
            return Ok(v.clone());
        }
        prompt(label, confirm)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_exactly_one_newline() {
        for (input, want) in [(&b"pw\n"[..], &b"pw"[..]), (b"pw\r\n", b"pw"), (b"pw\n\n", b"pw\n"), (b"pw ", b"pw "), (b"pw", b"pw")] {
            let mut v = input.to_vec();
            strip_newline(&mut v);
            assert_eq!(v, want);
        }
    }

    #[test]
    fn command_output_and_failure() {
        assert_eq!(from_command("printf 'a b\\n'").unwrap().expose(), b"a b");
        assert!(from_command("exit 3").is_err());
        assert!(from_command("true").is_err(), "empty output is refused");
    }
}
