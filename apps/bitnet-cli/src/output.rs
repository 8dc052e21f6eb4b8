//! Writing to the terminal without panicking: stdout errors are returned (a closed pipe ends the command
//! quietly through [`StdoutClosed`]; a full device is an error), stderr messages are best effort.

use std::io::Write;

/// Stdout's reader went away (`EPIPE`): the command stops and exits quietly.
#[derive(Debug)]
pub struct StdoutClosed;

impl std::fmt::Display for StdoutClosed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("standard output was closed")
    }
}

impl std::error::Error for StdoutClosed {}

/// Writes `text` to stdout and flushes it.
pub fn print(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(StdoutClosed.into()),
        Err(e) => Err(anyhow::Error::new(e).context("writing to standard output")),
    }
}

/// Writes `text` and a newline to stdout.
pub fn println(text: &str) -> anyhow::Result<()> {
    print(&format!("{text}\n"))
}

/// Writes a message line to stderr, ignoring failures (stderr may be closed too).
pub fn note(text: &str) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{text}");
}

/// Writes `text` to stderr without a newline (progress lines), ignoring failures.
pub fn note_inline(text: &str) {
    let mut err = std::io::stderr().lock();
    let _ = write!(err, "{text}");
    let _ = err.flush();
}

/// Whether the error is [`StdoutClosed`].
pub fn is_closed_stdout(e: &anyhow::Error) -> bool {
    e.downcast_ref::<StdoutClosed>().is_some()
}
