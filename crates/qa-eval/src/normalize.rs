//! Answer normalisation, exact match and token F1 exactly as the official SQuAD scripts define
//! them: lowercase, drop ASCII punctuation (Python's `string.punctuation`), drop the whole words
//! a/an/the, collapse whitespace.

use std::collections::HashMap;

use crate::squad::SquadVersion;

/// `normalize_answer` of `evaluate-v1.1.py` / `evaluate-v2.0.py`.
pub fn normalize_answer(s: &str) -> String {
    let lowered = s.to_lowercase();
    let no_punct: String = lowered
        .chars()
        .filter(|c| !c.is_ascii_punctuation())
        .collect();
    // `re.sub(r'\b(a|an|the)\b', ' ', text)`: an article is a whole run of word chars
    // (Python's Unicode `\w`: alphanumerics and '_').
    let mut no_articles = String::with_capacity(no_punct.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        if matches!(word.as_str(), "a" | "an" | "the") {
            out.push(' ');
        } else {
            out.push_str(word);
        }
        word.clear();
    };
    for c in no_punct.chars() {
        if c.is_alphanumeric() || c == '_' {
            word.push(c);
        } else {
            flush(&mut word, &mut no_articles);
            no_articles.push(c);
        }
    }
    flush(&mut word, &mut no_articles);
    // `' '.join(text.split())`: Python splits on Unicode whitespace.
    no_articles.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// 1.0 when the normalised strings are equal.
pub fn exact_match(prediction: &str, gold: &str) -> f64 {
    f64::from(normalize_answer(prediction) == normalize_answer(gold))
}

/// Bag-of-tokens F1 between normalised answers.
///
/// `rule` V2 selects the v2.0 rule (if either side has no tokens, F1 is 1 when both are
/// empty and 0 otherwise); v1.1 has no such rule, so empty vs empty scores 0 there.
pub fn f1_score(prediction: &str, gold: &str, rule: SquadVersion) -> f64 {
    let pred = normalize_answer(prediction);
    let gold = normalize_answer(gold);
    let pred_tokens: Vec<&str> = pred.split_whitespace().collect();
    let gold_tokens: Vec<&str> = gold.split_whitespace().collect();
    // v2.0 scores an empty prediction against an empty gold (no answer) as a match; v1.1
    // has no empty golds and scores token overlap only.
    if rule == SquadVersion::V2 && (pred_tokens.is_empty() || gold_tokens.is_empty()) {
        return f64::from(pred_tokens == gold_tokens);
    }
    let mut counts: HashMap<&str, i64> = HashMap::new();
    for t in &gold_tokens {
        *counts.entry(t).or_default() += 1;
    }
    let mut same = 0i64;
    for t in &pred_tokens {
        if let Some(c) = counts.get_mut(t) {
            if *c > 0 {
                *c -= 1;
                same += 1;
            }
        }
    }
    if same == 0 {
        return 0.0;
    }
    let precision = same as f64 / pred_tokens.len() as f64;
    let recall = same as f64 / gold_tokens.len() as f64;
    2.0 * precision * recall / (precision + recall)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation_rules() {
        assert_eq!(normalize_answer("The  Cat, sat!"), "cat sat");
        assert_eq!(normalize_answer("an apple a day"), "apple day");
        // Articles only as whole words.
        assert_eq!(
            normalize_answer("theatre and another"),
            "theatre and another"
        );
        // Punctuation removal can create a whole-word article: "the." → "the" → removed.
        assert_eq!(normalize_answer("in the."), "in");
        // Unicode quotes and dashes are not ASCII punctuation: they stay, and split words.
        assert_eq!(normalize_answer("“the” end–to–end"), "“ ” end–to–end");
        assert_eq!(normalize_answer("\u{2019}the\u{2019}"), "\u{2019} \u{2019}");
        // Underscore is punctuation in Python's string.punctuation.
        assert_eq!(normalize_answer("snake_case"), "snakecase");
        assert_eq!(normalize_answer("Éclair THE"), "éclair");
        assert_eq!(normalize_answer("..."), "");
    }

    #[test]
    fn f1_is_a_bag_of_tokens_score() {
        assert_eq!(
            f1_score("the cat sat", "cat", SquadVersion::V2),
            2.0 * 0.5 * 1.0 / 1.5
        );
        // Repeated tokens count once per occurrence.
        let f = f1_score("cat cat", "cat dog", SquadVersion::V2);
        assert!((f - 0.5).abs() < 1e-12);
        assert_eq!(f1_score("", "", SquadVersion::V2), 1.0);
        assert_eq!(f1_score("", "", SquadVersion::V1), 0.0);
        assert_eq!(f1_score("the", "a", SquadVersion::V2), 1.0);
        assert_eq!(f1_score("x", "", SquadVersion::V2), 0.0);
        assert_eq!(exact_match("The Cat.", "cat"), 1.0);
    }
}
