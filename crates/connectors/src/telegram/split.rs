//! Measuring and splitting texts the way Telegram counts them: in UTF-16 code units.

use unicode_segmentation::UnicodeSegmentation;

/// The length of `text` in UTF-16 code units, the unit of Telegram's length limits and entity
/// offsets.
///
/// ```
/// use ferrule_connectors::telegram::utf16_len;
///
/// assert_eq!(utf16_len("naïve"), 5);
/// assert_eq!(utf16_len("🎉"), 2); // outside the BMP: a surrogate pair
/// ```
pub fn utf16_len(text: &str) -> usize {
    text.chars().map(char::len_utf16).sum()
}

/// Splits `text` into parts of at most `limit` UTF-16 code units, in order.
///
/// Each cut prefers, in turn: the last paragraph break (a blank line) in the window, the last
/// line break, the last whitespace, and only then the last grapheme boundary that fits. Paragraph
/// and line breaks are taken only from the second half of the window, so a break near the start
/// does not produce a tiny part. The whitespace a cut happens at is dropped; everything else is
/// kept, so the parts joined with their breaks give back the text. A cut never falls inside a
/// UTF-16 surrogate pair, and inside a grapheme cluster only when one cluster alone exceeds
/// `limit`. Parts are never empty; a `text` within the limit comes back as one part (none when
/// it is empty or only whitespace). A `limit` of 0 counts as 1; a character needing two units
/// still makes a part of its own then.
///
/// ```
/// use ferrule_connectors::telegram::split_text;
///
/// let text = "first paragraph\n\nsecond one, longer";
/// assert_eq!(split_text(text, 20), ["first paragraph", "second one, longer"]);
/// assert_eq!(split_text("one two three", 8), ["one two", "three"]);
/// ```
pub fn split_text(text: &str, limit: usize) -> Vec<String> {
    let limit = limit.max(1);
    let mut parts = Vec::new();
    let mut rest = text;
    loop {
        if rest.trim().is_empty() {
            break;
        }
        if utf16_len(rest) <= limit {
            parts.push(rest.to_owned());
            break;
        }
        let window = fit(rest, limit);
        let (end, next) = cut(rest, window, limit);
        let part = &rest[..end];
        if !part.trim().is_empty() {
            parts.push(part.to_owned());
        }
        rest = &rest[next..];
    }
    parts
}

/// The largest byte index `i` such that `text[..i]` fits in `limit` units and ends on a
/// grapheme boundary; failing that, on a char boundary; and at least one char.
fn fit(text: &str, limit: usize) -> usize {
    let mut units = 0;
    let mut end = 0;
    for (i, grapheme) in text.grapheme_indices(true) {
        let len = utf16_len(grapheme);
        if units + len > limit {
            break;
        }
        units += len;
        end = i + grapheme.len();
    }
    if end > 0 {
        return end;
    }
    // One grapheme is longer than the limit: cut between its chars.
    let mut units = 0;
    for (i, c) in text.char_indices() {
        if units + c.len_utf16() > limit {
            return if i == 0 { c.len_utf8() } else { i };
        }
        units += c.len_utf16();
    }
    text.len()
}

/// Where to cut `text` within `text[..window]`: the end of the part and the start of the next.
fn cut(text: &str, window: usize, limit: usize) -> (usize, usize) {
    let head = &text[..window];
    let half = limit / 2;
    // A break counts only when what comes before it is long enough.
    let long_enough = |i: usize| utf16_len(&head[..i]) >= half;
    if let Some(i) = head.rfind("\n\n").filter(|&i| i > 0 && long_enough(i)) {
        return (trim_end(head, i), skip_newlines(text, i));
    }
    if let Some(i) = head.rfind('\n').filter(|&i| i > 0 && long_enough(i)) {
        return (trim_end(head, i), i + 1);
    }
    // The whitespace right after the window counts too: the window may end just before it.
    let candidate = text[window..]
        .chars()
        .next()
        .filter(|c| c.is_whitespace())
        .map(|_| window);
    let space = candidate.or_else(|| {
        head.char_indices()
            .rev()
            .find(|&(i, c)| i > 0 && c.is_whitespace())
            .map(|(i, _)| i)
    });
    if let Some(i) = space {
        let width = text[i..].chars().next().map_or(1, char::len_utf8);
        return (i, i + width);
    }
    (window, window)
}

/// `i` moved back over trailing `\r` (of a `\r\n` break).
fn trim_end(head: &str, i: usize) -> usize {
    head[..i].trim_end_matches('\r').len()
}

/// The index after the run of line breaks starting at `i`.
fn skip_newlines(text: &str, i: usize) -> usize {
    i + (text[i..].len() - text[i..].trim_start_matches(['\n', '\r']).len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, limit: usize) -> Vec<String> {
        let parts = split_text(text, limit);
        for part in &parts {
            assert!(utf16_len(part) <= limit.max(2), "{part:?} over {limit}");
            assert!(!part.trim().is_empty());
        }
        // Nothing but cut whitespace is lost, and the order is kept.
        let squash = |s: &str| s.split_whitespace().collect::<String>();
        assert_eq!(squash(&parts.concat()), squash(text));
        parts
    }

    #[test]
    fn short_texts_are_one_part() {
        assert_eq!(check("hello", 4096), ["hello"]);
        assert!(split_text("", 10).is_empty());
        assert!(split_text(" \n\n ", 1).is_empty());
    }

    #[test]
    fn prefers_paragraphs_then_lines_then_words() {
        let para = format!("{}\n\n{}", "a".repeat(30), "b".repeat(30));
        assert_eq!(check(&para, 40), ["a".repeat(30), "b".repeat(30)]);
        let lines = format!("{}\n{} {}", "a".repeat(30), "b".repeat(10), "c".repeat(10));
        assert_eq!(
            check(&lines, 40),
            [
                "a".repeat(30),
                format!("{} {}", "b".repeat(10), "c".repeat(10))
            ]
        );
        assert_eq!(check("aaa bbb ccc ddd", 8), ["aaa bbb", "ccc ddd"]);
        // A paragraph break early in the window loses to a later line break.
        let early = format!("ab\n\n{}\n{}", "c".repeat(30), "d".repeat(10));
        assert_eq!(
            check(&early, 40),
            [format!("ab\n\n{}", "c".repeat(30)), "d".repeat(10)]
        );
        // CRLF breaks leave no stray `\r`.
        assert_eq!(
            check("first line\r\nsecond line", 12),
            ["first line", "second line"]
        );
    }

    #[test]
    fn words_longer_than_the_limit_are_cut() {
        assert_eq!(check("abcdefghij", 4), ["abcd", "efgh", "ij"]);
    }

    #[test]
    fn counts_utf16_and_never_splits_a_surrogate_pair() {
        // Each emoji is two units: a limit of 5 holds two of them, not two and a half.
        let parts = check("😀😀😀😀😀", 5);
        assert_eq!(parts, ["😀😀", "😀😀", "😀"]);
        // A two-unit char with a limit of 1 still makes progress.
        assert_eq!(check("😀😀", 1), ["😀", "😀"]);
        assert_eq!(utf16_len(&"é".repeat(4096)), 4096);
    }

    #[test]
    fn keeps_graphemes_whole() {
        // A family emoji is one grapheme of 11 units; e + combining acute is one of 2.
        let family = "👨‍👩‍👧‍👦";
        assert_eq!(utf16_len(family), 11);
        let text = format!("ab{family}{family}");
        assert_eq!(
            check(&text, 12),
            ["ab".to_owned(), family.into(), family.into()]
        );
        assert_eq!(
            check("e\u{301}e\u{301}e\u{301}", 3),
            ["e\u{301}", "e\u{301}", "e\u{301}"]
        );
        // One grapheme longer than the limit is cut between its chars.
        assert_eq!(check(family, 4).concat(), family);
    }

    #[test]
    fn a_long_text_splits_within_the_telegram_limit() {
        let paragraph = "Lorem ipsum dolor sit amet, consectetur adipiscing elit. ".repeat(20);
        let text = vec![paragraph; 10].join("\n\n");
        let parts = check(&text, 4096);
        assert_eq!(parts.len(), 4); // three paragraphs of 1140 units fit in each
        assert!(
            parts
                .iter()
                .all(|p| !p.starts_with('\n') && !p.ends_with('\n'))
        );
    }
}
