//! Classifying `std::io` errors by their [`ErrorKind`].

use std::io::{self, ErrorKind};

use super::{Classify, Outcome};

/// Classifies `std::io::Error`s by kind: network trouble that may clear up is transient,
/// everything else is permanent.
///
/// | kind | outcome |
/// |---|---|
/// | `ConnectionRefused`, `ConnectionReset`, `ConnectionAborted`, `NotConnected`, `BrokenPipe` | transient: the peer or the path to it failed |
/// | `TimedOut`, `Interrupted`, `WouldBlock`, `UnexpectedEof` | transient: the operation was cut short |
/// | `HostUnreachable`, `NetworkUnreachable`, `NetworkDown` | transient: routing or the local network |
/// | `AddrNotAvailable`, `AddrInUse`, `ResourceBusy` | transient: local resources, e.g. ephemeral ports |
/// | anything else (`NotFound`, `PermissionDenied`, `InvalidInput`, `InvalidData`, …) | permanent |
///
/// As a [`Classify`], `Ok` is a success.
///
/// ```
/// use std::io;
/// use ferrule_policy::{Classify, Outcome, classify::IoClassifier};
///
/// let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
/// assert_eq!(IoClassifier.classify(&Err::<(), _>(refused)), Outcome::Transient);
/// assert_eq!(IoClassifier::classify_kind(io::ErrorKind::NotFound), Outcome::Permanent);
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct IoClassifier;

impl IoClassifier {
    /// The outcome for an I/O error of `kind` (see the table on [`IoClassifier`]).
    pub fn classify_kind(kind: ErrorKind) -> Outcome {
        match kind {
            ErrorKind::ConnectionRefused
            | ErrorKind::ConnectionReset
            | ErrorKind::ConnectionAborted
            | ErrorKind::NotConnected
            | ErrorKind::BrokenPipe
            | ErrorKind::TimedOut
            | ErrorKind::Interrupted
            | ErrorKind::WouldBlock
            | ErrorKind::UnexpectedEof
            | ErrorKind::HostUnreachable
            | ErrorKind::NetworkUnreachable
            | ErrorKind::NetworkDown
            | ErrorKind::AddrNotAvailable
            | ErrorKind::AddrInUse
            | ErrorKind::ResourceBusy => Outcome::Transient,
            _ => Outcome::Permanent,
        }
    }

    /// The outcome for `error`.
    pub fn classify_error(error: &io::Error) -> Outcome {
        Self::classify_kind(error.kind())
    }
}

impl<T> Classify<T, io::Error> for IoClassifier {
    #[inline]
    fn classify(&self, result: &Result<T, io::Error>) -> Outcome {
        match result {
            Ok(_) => Outcome::Success,
            Err(e) => Self::classify_error(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_table() {
        let transient = [
            ErrorKind::ConnectionRefused,
            ErrorKind::ConnectionReset,
            ErrorKind::ConnectionAborted,
            ErrorKind::NotConnected,
            ErrorKind::BrokenPipe,
            ErrorKind::TimedOut,
            ErrorKind::Interrupted,
            ErrorKind::WouldBlock,
            ErrorKind::UnexpectedEof,
            ErrorKind::HostUnreachable,
            ErrorKind::NetworkUnreachable,
            ErrorKind::NetworkDown,
            ErrorKind::AddrNotAvailable,
            ErrorKind::AddrInUse,
            ErrorKind::ResourceBusy,
        ];
        for kind in transient {
            assert_eq!(
                IoClassifier::classify_kind(kind),
                Outcome::Transient,
                "{kind:?}"
            );
        }
        let permanent = [
            ErrorKind::NotFound,
            ErrorKind::PermissionDenied,
            ErrorKind::AlreadyExists,
            ErrorKind::InvalidInput,
            ErrorKind::InvalidData,
            ErrorKind::Unsupported,
            ErrorKind::OutOfMemory,
            ErrorKind::Other,
        ];
        for kind in permanent {
            assert_eq!(
                IoClassifier::classify_kind(kind),
                Outcome::Permanent,
                "{kind:?}"
            );
        }
    }

    #[test]
    fn classifies_results() {
        let c = IoClassifier;
        assert_eq!(c.classify(&Ok::<_, io::Error>(5)), Outcome::Success);
        let reset = io::Error::new(ErrorKind::ConnectionReset, "peer reset");
        assert_eq!(c.classify(&Err::<(), _>(reset)), Outcome::Transient);
        let denied = io::Error::from(ErrorKind::PermissionDenied);
        assert_eq!(c.classify(&Err::<(), _>(denied)), Outcome::Permanent);
    }
}
