//! Errors as one log line: a top-level error and the chain of its
//! sources, `a: b: c`, so the reason under "error sending request" or
//! "transport error" (refused, TLS, timeout) is not lost.

use std::error::Error;

/// `e` and its sources on one line.
pub fn chain(e: &dyn Error) -> String {
    with_sources(e.to_string(), e)
}

/// `head` followed by the sources of `e` (not `e` itself), each once: a
/// source whose text the line already holds is not repeated.
pub fn with_sources(head: String, e: &dyn Error) -> String {
    let mut line = head;
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = s.source();
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct E(&'static str, Option<Box<E>>);

    impl std::fmt::Display for E {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl Error for E {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            self.1.as_deref().map(|e| e as &(dyn Error + 'static))
        }
    }

    #[test]
    fn sources_follow_once() {
        let e = E(
            "error sending request",
            Some(Box::new(E(
                "connect",
                Some(Box::new(E("Connection refused", None))),
            ))),
        );
        assert_eq!(
            chain(&e),
            "error sending request: connect: Connection refused"
        );
        let repeats = E("tls: bad cert", Some(Box::new(E("bad cert", None))));
        assert_eq!(chain(&repeats), "tls: bad cert");
        assert_eq!(
            with_sources("timed out".into(), &e),
            "timed out: connect: Connection refused"
        );
    }
}
