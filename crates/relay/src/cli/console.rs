//! Output meant for the person at the terminal (not logs): results on stdout, notes and
//! questions on stderr, answers from stdin.

use std::io::{BufRead, IsTerminal, Write};

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

/// Asks `question [y/N]` on stderr and reads the answer from stdin: `Some(true)` for `y` or
/// `yes` (any case), `Some(false)` for anything else, and `None` without asking when stdin is
/// not a terminal, where no person can answer.
pub(crate) fn confirm(question: &str) -> Option<bool> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return None;
    }
    let mut stderr = std::io::stderr().lock();
    let _ = write!(stderr, "{question} [y/N] ");
    let _ = stderr.flush();
    let mut answer = String::new();
    if stdin.lock().read_line(&mut answer).is_err() {
        return Some(false);
    }
    Some(matches!(
        answer.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}
