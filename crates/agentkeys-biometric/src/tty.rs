//! Questions on the controlling terminal (`/dev/tty`), never on stdin: a pipe, a file or an agent
//! writing to our stdin cannot answer them. Without a controlling terminal there is no question.
//!
//! Input is read a byte at a time with echo, canonical mode and signal keys off, so Ctrl-C and
//! Ctrl-D arrive as bytes and end the question as "cancelled" with the terminal restored, instead
//! of killing the process with echo still off. Backspace and Ctrl-U edit as usual.
//!
//! Unix only for now: on Windows there is no terminal to ask on (Windows Hello asks instead).

use std::fs::File;
use std::time::Duration;

#[cfg(not(unix))]
use secrecy::SecretString;

/// The longest answer accepted, in bytes; a longer one is cut off and refused.
pub const MAX_ANSWER: usize = 1024;

/// Why a question got no answer.
#[derive(Debug, thiserror::Error)]
pub enum TtyError {
    /// No controlling terminal (a service, a pipe, `setsid`, CI).
    #[error("there is no terminal to ask on")]
    NoTerminal,
    /// Ctrl-C or Ctrl-D.
    #[error("cancelled at the terminal")]
    Cancelled,
    #[error("the answer is longer than {MAX_ANSWER} bytes")]
    TooLong,
    /// Nothing was typed within the time allowed.
    #[error("no answer in time")]
    TimedOut,
    #[error("terminal error: {0}")]
    Io(#[from] std::io::Error),
}

/// The controlling terminal, open for one or more questions.
#[derive(Debug)]
#[cfg_attr(not(unix), allow(dead_code))]
pub struct Tty {
    file: File,
    /// Each question gives up at this long after it was asked.
    timeout: Option<Duration>,
}

#[cfg(not(unix))]
impl Tty {
    pub fn open() -> Result<Self, TtyError> {
        Err(TtyError::NoTerminal)
    }
    pub fn with_timeout(self, _timeout: Duration) -> Self {
        self
    }
    pub fn set_timeout(&mut self, _timeout: Duration) {}
    pub fn say(&mut self, _text: &str) -> Result<(), TtyError> {
        Err(TtyError::NoTerminal)
    }
    pub fn read_secret(&mut self, _prompt: &str) -> Result<SecretString, TtyError> {
        Err(TtyError::NoTerminal)
    }
    pub fn read_line(&mut self, _prompt: &str) -> Result<String, TtyError> {
        Err(TtyError::NoTerminal)
    }
}

#[cfg(unix)]
mod unix {
    use std::fs::{File, OpenOptions};
    use std::io::{Read as _, Write as _};
    use std::time::{Duration, Instant};

    use rustix::termios::{self, LocalModes, OptionalActions, SpecialCodeIndex, Termios};
    use secrecy::SecretString;
    use zeroize::Zeroizing;

    use super::{MAX_ANSWER, Tty, TtyError};

    /// Puts the terminal back as it was, on every path out of a question.
    struct Restore<'a> {
        file: &'a File,
        original: Termios,
    }

    impl Drop for Restore<'_> {
        fn drop(&mut self) {
            let _ = termios::tcsetattr(self.file, OptionalActions::Flush, &self.original);
        }
    }

    const CTRL_C: u8 = 0x03;
    const CTRL_D: u8 = 0x04;
    const CTRL_U: u8 = 0x15;
    const BACKSPACE: u8 = 0x08;
    const DELETE: u8 = 0x7f;

    impl Tty {
        /// Opens `/dev/tty`, or `Err(NoTerminal)` when the process has no controlling terminal.
        pub fn open() -> Result<Self, TtyError> {
            let file = OpenOptions::new().read(true).write(true).open("/dev/tty").map_err(|_| TtyError::NoTerminal)?;
            if !termios::isatty(&file) {
                return Err(TtyError::NoTerminal);
            }
            Ok(Self { file, timeout: None })
        }

        /// Gives every later question at most `timeout` for its whole answer.
        pub fn with_timeout(mut self, timeout: Duration) -> Self {
            self.timeout = Some(timeout);
            self
        }

        /// Changes the time the next questions get.
        pub fn set_timeout(&mut self, timeout: Duration) {
            self.timeout = Some(timeout);
        }

        /// Writes `text` to the terminal (not to stdout or stderr, which may be redirected).
        pub fn say(&mut self, text: &str) -> Result<(), TtyError> {
            self.file.write_all(text.as_bytes())?;
            Ok(self.file.flush()?)
        }

        /// Asks for a secret: nothing is echoed.
        pub fn read_secret(&mut self, prompt: &str) -> Result<SecretString, TtyError> {
            let bytes = self.read_answer(prompt, false)?;
            let text = String::from_utf8_lossy(&bytes).into_owned();
            Ok(SecretString::from(text))
        }

        /// Asks for a visible answer (a typed confirmation).
        pub fn read_line(&mut self, prompt: &str) -> Result<String, TtyError> {
            let bytes = self.read_answer(prompt, true)?;
            Ok(String::from_utf8_lossy(&bytes).into_owned())
        }

        fn read_answer(&mut self, prompt: &str, visible: bool) -> Result<Zeroizing<Vec<u8>>, TtyError> {
            let original = termios::tcgetattr(&self.file).map_err(std::io::Error::from)?;
            let mut raw = original.clone();
            raw.local_modes.remove(LocalModes::ECHO | LocalModes::ICANON | LocalModes::ISIG | LocalModes::IEXTEN);
            raw.special_codes[SpecialCodeIndex::VMIN] = 1;
            raw.special_codes[SpecialCodeIndex::VTIME] = 0;
            termios::tcsetattr(&self.file, OptionalActions::Flush, &raw).map_err(std::io::Error::from)?;
            let restore = Restore { file: &self.file, original };
            // `&File` reads and writes through a shared borrow, which the restore guard also holds.
            let mut file = &self.file;
            file.write_all(prompt.as_bytes())?;
            file.flush()?;
            // Never reallocated (the cap is checked before each push), so no unzeroized copy is left.
            let mut answer = Zeroizing::new(Vec::with_capacity(MAX_ANSWER));
            let mut byte = [0u8; 1];
            let deadline = self.timeout.map(|t| Instant::now() + t);
            let outcome = loop {
                if let Some(deadline) = deadline
                    && !Self::wait_readable(file, deadline)?
                {
                    break Err(TtyError::TimedOut);
                }
                if file.read(&mut byte)? == 0 {
                    break Err(TtyError::Cancelled);
                }
                match byte[0] {
                    b'\r' | b'\n' => break Ok(()),
                    CTRL_C => break Err(TtyError::Cancelled),
                    CTRL_D if answer.is_empty() => break Err(TtyError::Cancelled),
                    BACKSPACE | DELETE => {
                        // Drop one whole UTF-8 character.
                        while let Some(last) = answer.pop() {
                            if last & 0xc0 != 0x80 {
                                break;
                            }
                        }
                        if visible {
                            file.write_all(b"\x08 \x08")?;
                        }
                    }
                    CTRL_U => {
                        if visible {
                            let chars = String::from_utf8_lossy(&answer).chars().count();
                            file.write_all(&b"\x08 \x08".repeat(chars))?;
                        }
                        answer.clear();
                    }
                    other if other < 0x20 => {}
                    other => {
                        if answer.len() >= MAX_ANSWER {
                            break Err(TtyError::TooLong);
                        }
                        answer.push(other);
                        if visible {
                            file.write_all(&byte)?;
                        }
                    }
                }
            };
            file.write_all(b"\r\n")?;
            drop(restore);
            // Zero the one-byte buffer too: it held the last character typed.
            zeroize::Zeroize::zeroize(&mut byte);
            outcome.map(|()| answer)
        }

        /// Waits until a byte can be read or `deadline` passes (`false`).
        fn wait_readable(file: &File, deadline: Instant) -> Result<bool, TtyError> {
            use rustix::event::{PollFd, PollFlags, Timespec};
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Ok(false);
                }
                let timeout = Timespec { tv_sec: left.as_secs() as _, tv_nsec: left.subsec_nanos() as _ };
                let mut fds = [PollFd::new(file, PollFlags::IN)];
                match rustix::event::poll(&mut fds, Some(&timeout)) {
                    Ok(0) => return Ok(false),
                    Ok(_) => return Ok(true),
                    Err(rustix::io::Errno::INTR) => continue,
                    Err(error) => return Err(TtyError::Io(error.into())),
                }
            }
        }
    }
}
