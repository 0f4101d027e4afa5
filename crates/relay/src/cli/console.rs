//! Output meant for the person at the terminal (not logs): results on stdout, notes on stderr.

use std::io::Write;

/// Writes `text` and a newline to stdout.
pub(crate) fn out(text: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{}", text.trim_end_matches('\n'));
    let _ = stdout.flush();
}

/// Writes `text` and a newline to stderr.
pub(crate) fn err(text: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{text}");
}
