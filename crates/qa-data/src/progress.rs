//! Progress bars for the long loops (tokenizing, inference, training): one look for all of them.

use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

/// Whether a long loop draws a progress bar (on stderr, and only when stderr is a terminal).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Progress {
    #[default]
    Show,
    /// Library callers and tests that must not write to the terminal.
    Hidden,
}

/// A bar of `len` steps drawn as `{label} [bar] {pos}/{len} {unit} ({per_sec}, ETA {eta}) {msg}`:
/// `unit` names what is counted (may be empty), `msg` is whatever the loop sets
/// with [`ProgressBar::set_message`] (e.g. the current loss).
pub fn bar(len: u64, label: &str, unit: &str, visibility: Progress) -> ProgressBar {
    if visibility == Progress::Hidden {
        return ProgressBar::hidden();
    }
    let unit = if unit.is_empty() {
        String::new()
    } else {
        format!(" {unit}")
    };
    // Braces in the label or unit would read as template keys.
    let escape = |s: &str| s.replace('{', "{{").replace('}', "}}");
    let template = format!(
        "{} {{bar:30}} {{pos}}/{{len}}{} ({{per_sec}}, ETA {{eta}}) {{msg}}",
        escape(label),
        escape(&unit)
    );
    ProgressBar::new(len)
        .with_style(ProgressStyle::with_template(&template).expect("valid progress template"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidden_bars_are_hidden_and_any_label_makes_a_valid_template() {
        assert!(bar(10, "features", "examples", Progress::Hidden).is_hidden());
        // Shown bars build (the template parses) whatever the label holds.
        let shown = bar(3, "odd {label}", "", Progress::Show);
        assert_eq!(shown.length(), Some(3));
    }
}
