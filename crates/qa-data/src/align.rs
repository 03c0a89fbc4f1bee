//! Checking that `answer_start` points at the answer text, and repairing it when it does not.
//!
//! COVID-QA ships 234 answers whose `answer_start` is off. run_qa trusts the offset and trains on
//! the wrong tokens; we relocate the text to its occurrence nearest the given offset and count it.

use serde::{Deserialize, Serialize};

/// What to do with an answer whose `answer_start` does not point at its text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AnswerAlignment {
    /// Move the start to the occurrence of the text nearest the given start (exact match first,
    /// then case-insensitive). Unfindable answers keep `char_start = None`.
    #[default]
    Repair,
    /// Keep the given offsets as they are (what HF run_qa does); still counted.
    AsGiven,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlignOutcome {
    Aligned,
    Repaired { from: usize, to: usize },
    Unrepairable,
}

/// Byte offset of every char of a string, plus one past the end: converts Python-style char
/// offsets to byte ranges and back in O(1).
#[derive(Debug, Clone)]
pub struct CharIndex {
    byte_of_char: Vec<usize>,
}

impl CharIndex {
    pub fn new(text: &str) -> Self {
        let mut byte_of_char: Vec<usize> = text.char_indices().map(|(b, _)| b).collect();
        byte_of_char.push(text.len());
        Self { byte_of_char }
    }

    /// Number of chars in the text.
    pub fn len_chars(&self) -> usize {
        self.byte_of_char.len() - 1
    }

    /// Byte offset of char `c` (`c == len_chars()` gives the text's byte length).
    pub fn byte(&self, c: usize) -> Option<usize> {
        self.byte_of_char.get(c).copied()
    }

    /// Char offset of a byte offset that lies on a char boundary.
    pub fn char_of_byte(&self, b: usize) -> Option<usize> {
        self.byte_of_char.binary_search(&b).ok()
    }

    /// The substring between two char offsets, if both are in range and ordered.
    pub fn slice<'t>(&self, text: &'t str, start: usize, end: usize) -> Option<&'t str> {
        if start > end {
            return None;
        }
        Some(&text[self.byte(start)?..self.byte(end)?])
    }
}

/// Checks one answer and, with [`AnswerAlignment::Repair`], returns the corrected char start.
pub fn align_answer(
    context: &str,
    index: &CharIndex,
    text: &str,
    given_start: usize,
    mode: AnswerAlignment,
) -> (Option<usize>, AlignOutcome) {
    let len = text.chars().count();
    if index.slice(context, given_start, given_start.saturating_add(len)) == Some(text) {
        return (Some(given_start), AlignOutcome::Aligned);
    }
    if mode == AnswerAlignment::AsGiven {
        let in_range = given_start.saturating_add(len) <= index.len_chars();
        return (in_range.then_some(given_start), AlignOutcome::Unrepairable);
    }
    let nearest = nearest_occurrence(context, index, text, given_start, Case::Exact)
        .or_else(|| nearest_occurrence(context, index, text, given_start, Case::Ignore));
    match nearest {
        Some(to) => (
            Some(to),
            AlignOutcome::Repaired {
                from: given_start,
                to,
            },
        ),
        None => (None, AlignOutcome::Unrepairable),
    }
}

/// Whether text search tells upper from lower case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Case {
    Exact,
    /// Unicode lowercase on both sides (DEFNLP labels, second-chance answer repair).
    Ignore,
}

/// Char offset of the occurrence of `needle` closest to `near` (ties go to the earlier one).
pub fn nearest_occurrence(
    haystack: &str,
    index: &CharIndex,
    needle: &str,
    near: usize,
    case: Case,
) -> Option<usize> {
    find_all(haystack, index, needle, case)
        .into_iter()
        .min_by_key(|&s| (s.abs_diff(near), s))
}

/// Char offsets of every (possibly overlapping) occurrence of `needle` in `haystack`.
/// Case-insensitive matching folds each char to its first lowercase char, so offsets stay 1:1.
pub fn find_all(haystack: &str, index: &CharIndex, needle: &str, case: Case) -> Vec<usize> {
    if needle.is_empty() {
        return Vec::new();
    }
    if case == Case::Exact {
        let mut starts = Vec::new();
        let mut from = 0;
        while let Some(pos) = haystack[from..].find(needle) {
            let byte = from + pos;
            starts.extend(index.char_of_byte(byte));
            // Step one char, so overlapping occurrences are found too.
            from = byte + haystack[byte..].chars().next().map_or(1, char::len_utf8);
        }
        return starts;
    }
    let fold = |c: char| c.to_lowercase().next().unwrap_or(c);
    let hay: Vec<char> = haystack.chars().map(fold).collect();
    let pat: Vec<char> = needle.chars().map(fold).collect();
    if pat.len() > hay.len() {
        return Vec::new();
    }
    (0..=hay.len() - pat.len())
        .filter(|&i| hay[i] == pat[0] && hay[i..i + pat.len()] == pat[..])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_answer_is_kept() {
        let ctx = "The cat sat on the mat.";
        let idx = CharIndex::new(ctx);
        let r = align_answer(ctx, &idx, "cat", 4, AnswerAlignment::Repair);
        assert_eq!(r, (Some(4), AlignOutcome::Aligned));
    }

    #[test]
    fn misaligned_answer_moves_to_nearest_occurrence() {
        let ctx = "mat one, mat two, mat three";
        let idx = CharIndex::new(ctx);
        // Given 11 ("t two"): occurrences at 0, 9, 18 → nearest is 9.
        let r = align_answer(ctx, &idx, "mat", 11, AnswerAlignment::Repair);
        assert_eq!(r, (Some(9), AlignOutcome::Repaired { from: 11, to: 9 }));
    }

    #[test]
    fn offsets_are_chars_not_bytes() {
        let ctx = "café — naïve résumé";
        let idx = CharIndex::new(ctx);
        let r = align_answer(ctx, &idx, "résumé", 13, AnswerAlignment::Repair);
        assert_eq!(r, (Some(13), AlignOutcome::Aligned));
        let r = align_answer(ctx, &idx, "naïve", 0, AnswerAlignment::Repair);
        assert_eq!(r.0, Some(7));
    }

    #[test]
    fn case_insensitive_fallback_and_unrepairable() {
        let ctx = "Results from the NHANES survey";
        let idx = CharIndex::new(ctx);
        assert_eq!(
            align_answer(ctx, &idx, "nhanes", 0, AnswerAlignment::Repair).0,
            Some(17)
        );
        assert_eq!(
            align_answer(ctx, &idx, "absent", 3, AnswerAlignment::Repair),
            (None, AlignOutcome::Unrepairable)
        );
    }

    #[test]
    fn as_given_keeps_bad_offsets_in_range_only() {
        let ctx = "short";
        let idx = CharIndex::new(ctx);
        assert_eq!(
            align_answer(ctx, &idx, "or", 0, AnswerAlignment::AsGiven),
            (Some(0), AlignOutcome::Unrepairable)
        );
        assert_eq!(
            align_answer(ctx, &idx, "or", 10, AnswerAlignment::AsGiven).0,
            None
        );
    }

    #[test]
    fn find_all_finds_overlaps() {
        let ctx = "aaaa";
        assert_eq!(
            find_all(ctx, &CharIndex::new(ctx), "aa", Case::Exact),
            vec![0, 1, 2]
        );
    }
}
