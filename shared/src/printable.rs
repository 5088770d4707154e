//! Text from elsewhere (a probe, a gateway's certificate, a log line) made safe for a terminal
//! or a page: control characters (escape sequences that repaint a terminal, bells, carriage
//! returns that hide what came before) are dropped, a tab becomes a space.

use std::borrow::Cow;

/// `text` without control characters (a tab becomes a space); borrowed when it has none.
pub fn printable(text: &str) -> Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return Cow::Borrowed(text);
    }
    Cow::Owned(
        text.chars()
            .filter_map(|c| match c {
                '\t' => Some(' '),
                c if c.is_control() => None,
                c => Some(c),
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_sequences_bells_and_returns_are_dropped() {
        assert_eq!(printable("gateway"), Cow::Borrowed("gateway"));
        assert_eq!(printable("a\x1b[2Jb\x07\rc\td"), "a[2Jbc d");
    }
}
