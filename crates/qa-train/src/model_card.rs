//! The `README.md` model card of a trained model folder, as the HF Trainer writes it
//! (`Trainer.create_model_card`, transformers v4.57.6 `modelcard.py` `TrainingSummary`): Hub
//! metadata (base model, datasets, `model-index` results) in YAML front matter, then the final
//! metrics, the hyper-parameters, the evaluations during training and the framework versions.
//! The folder can then be uploaded to the Hub as is.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use qa_eval::metrics::{Metric, Metrics};

use crate::config::{Precision, TrainConfig};
use crate::optim::LrScheduler;
use crate::trainer::TrainResults;

/// Where something a model was trained from came from: a Hub repo (named in the card's
/// metadata, so the Hub links it) or a local path (named in the text only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Hub(String),
    Local(PathBuf),
}

impl Origin {
    /// The name the card's metadata gives it: the Hub id, or a local file's name.
    fn shown(&self) -> String {
        match self {
            Self::Hub(id) => id.clone(),
            Self::Local(path) => path.file_name().map_or_else(
                || path.display().to_string(),
                |n| n.to_string_lossy().into(),
            ),
        }
    }
}

/// What the card says the model was made from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardFacts {
    pub base_model: Origin,
    /// The training data (a Hub dataset, or the training file).
    pub train_data: Origin,
}

/// The Burn release the models run on (pinned in the workspace `Cargo.toml`; a test checks).
pub const BURN_VERSION: &str = "0.20.1";
/// The `tokenizers` release (pinned likewise).
pub const TOKENIZERS_VERSION: &str = "0.22.2";

/// The card's Markdown.
pub fn render(
    facts: &CardFacts,
    name: &str,
    cfg: &TrainConfig,
    results: &TrainResults,
    metrics: Option<&Metrics>,
    log_history: &[serde_json::Value],
) -> String {
    let mut card = String::from("---\nlibrary_name: transformers\n");
    if let Origin::Hub(id) = &facts.base_model {
        let _ = writeln!(card, "base_model: {}", yaml_str(id));
    }
    card.push_str("tags:\n- generated_from_trainer\n- question-answering\n");
    if let Origin::Hub(id) = &facts.train_data {
        let _ = writeln!(card, "datasets:\n- {}", yaml_str(id));
    }
    let _ = writeln!(card, "model-index:\n- name: {}", yaml_str(name));
    match (metrics, &facts.train_data) {
        (Some(metrics), data) if metrics.iter().next().is_some() => {
            let dataset = data.shown();
            let _ = writeln!(
                card,
                "  results:\n  - task:\n      name: Question Answering\n      type: question-answering\n    \
                 dataset:\n      name: {0}\n      type: {0}\n    metrics:",
                yaml_str(&dataset)
            );
            for (metric, value) in metrics.iter().filter(|(m, _)| m.is_score()) {
                let _ = writeln!(
                    card,
                    "    - name: {}\n      type: {}\n      value: {value}",
                    yaml_str(&title(metric)),
                    metric.key()
                );
            }
        }
        _ => card.push_str("  results: []\n"),
    }
    card.push_str("---\n\n");
    card.push_str(
        "<!-- This model card has been generated automatically by `qa train`, from what the \
         trainer knew. Proofread and complete it, then remove this comment. -->\n\n",
    );
    let _ = writeln!(card, "# {name}\n");
    let _ = write!(
        card,
        "This model is a fine-tuned version of {} on {} for extractive question answering",
        link(&facts.base_model, "models"),
        link(&facts.train_data, "datasets"),
    );
    match metrics {
        Some(metrics) => {
            card.push_str(".\nIt achieves the following results on the evaluation set:\n");
            for (metric, value) in metrics.iter() {
                let _ = writeln!(card, "- {}: {}", title(metric), shown_value(metric, value));
            }
        }
        None => card.push_str(" (it was not evaluated during training).\n"),
    }
    for section in [
        "Model description",
        "Intended uses & limitations",
        "Training and evaluation data",
    ] {
        let _ = writeln!(card, "\n## {section}\n\nMore information needed");
    }
    card.push_str("\n## Training procedure\n\n### Training hyperparameters\n\n");
    card.push_str("The following hyperparameters were used during training:\n");
    for (key, value) in hyperparameters(cfg, results) {
        let _ = writeln!(card, "- {key}: {value}");
    }
    training_results(&mut card, log_history);
    let _ = write!(
        card,
        "\n### Framework versions\n\n- qa {} (Rust)\n- Burn {BURN_VERSION}\n- Tokenizers {TOKENIZERS_VERSION}\n",
        env!("CARGO_PKG_VERSION")
    );
    card
}

/// The hyper-parameter list, with the Trainer's names and only the lines it would write.
fn hyperparameters(cfg: &TrainConfig, results: &TrainResults) -> Vec<(&'static str, String)> {
    let mut out = vec![
        ("learning_rate", format!("{:e}", cfg.learning_rate)),
        (
            "train_batch_size",
            cfg.per_device_train_batch_size.to_string(),
        ),
        (
            "eval_batch_size",
            cfg.per_device_eval_batch_size.to_string(),
        ),
        ("seed", cfg.seed.to_string()),
    ];
    let devices = results.world_size;
    if devices > 1 {
        let kind = if cfg!(feature = "cuda") {
            "multi-GPU"
        } else {
            "multi-CPU"
        };
        out.push(("distributed_type", kind.into()));
        out.push(("num_devices", devices.to_string()));
    }
    if cfg.gradient_accumulation_steps > 1 {
        out.push((
            "gradient_accumulation_steps",
            cfg.gradient_accumulation_steps.to_string(),
        ));
    }
    let total_train = cfg.per_device_train_batch_size * devices * cfg.gradient_accumulation_steps;
    if total_train != cfg.per_device_train_batch_size {
        out.push(("total_train_batch_size", total_train.to_string()));
    }
    if devices > 1 {
        out.push((
            "total_eval_batch_size",
            (cfg.per_device_eval_batch_size * devices).to_string(),
        ));
    }
    out.push((
        "optimizer",
        format!(
            "AdamW with betas=(0.9,0.999), epsilon={:e} and weight_decay={}",
            cfg.adam_epsilon, cfg.weight_decay
        ),
    ));
    out.push(("lr_scheduler_type", scheduler_name(cfg.lr_scheduler_type)));
    match cfg.warmup_steps {
        Some(steps) if steps > 0 => out.push(("lr_scheduler_warmup_steps", steps.to_string())),
        _ if cfg.warmup_ratio > 0.0 => {
            out.push(("lr_scheduler_warmup_ratio", cfg.warmup_ratio.to_string()))
        }
        _ => {}
    }
    match cfg.max_steps() {
        Some(steps) => out.push(("training_steps", steps.to_string())),
        None => out.push(("num_epochs", format!("{:.1}", cfg.num_train_epochs))),
    }
    match results.precision {
        Precision::F32 | Precision::F64 => {}
        Precision::Fp16 => out.push(("mixed_precision_training", "fp16".into())),
        Precision::Bf16 => out.push(("mixed_precision_training", "bf16".into())),
    }
    out
}

fn scheduler_name(scheduler: LrScheduler) -> String {
    serde_json::to_value(scheduler)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| format!("{scheduler:?}").to_lowercase())
}

/// The Trainer's results table: one row per evaluation, with the training loss logged last
/// before it ("No log" when none was).
fn training_results(card: &mut String, log_history: &[serde_json::Value]) {
    let evals: Vec<&serde_json::Value> = log_history
        .iter()
        .filter(|e| {
            e.as_object()
                .is_some_and(|o| o.keys().any(|k| k.starts_with("eval_")))
        })
        .collect();
    let Some(first) = evals.first() else {
        return;
    };
    let metrics: Vec<Metric> = first
        .as_object()
        .into_iter()
        .flat_map(|o| o.keys())
        .filter_map(|k| k.strip_prefix("eval_"))
        .filter_map(|k| {
            Metric::ALL
                .into_iter()
                .find(|m| m.key() == k && m.is_score())
        })
        .collect();
    card.push_str("\n### Training results\n\n| Training Loss | Epoch | Step |");
    for metric in &metrics {
        let _ = write!(card, " {} |", title(*metric));
    }
    card.push_str("\n|:---:|:---:|:---:|");
    card.push_str(&":---:|".repeat(metrics.len()));
    card.push('\n');
    let mut loss = None;
    let mut evals_seen = 0;
    for entry in log_history {
        if let Some(l) = entry.get("loss").and_then(|l| l.as_f64()) {
            loss = Some(l);
        }
        if evals_seen < evals.len() && std::ptr::eq(entry, evals[evals_seen]) {
            evals_seen += 1;
            let number = |key: &str| entry.get(key).and_then(|v| v.as_f64());
            let _ = write!(
                card,
                "| {} | {:.4} | {} |",
                loss.map_or("No log".to_string(), |l| format!("{l:.4}")),
                number("epoch").unwrap_or(0.0),
                number("step").unwrap_or(0.0) as u64
            );
            for metric in &metrics {
                let value = number(&format!("eval_{}", metric.key()));
                let _ = write!(
                    card,
                    " {} |",
                    value.map_or("-".into(), |v| format!("{v:.4}"))
                );
            }
            card.push('\n');
        }
    }
}

/// `F1`, `Exact Match`, `HasAns F1`…: a metric as a reader reads it.
fn title(metric: Metric) -> String {
    metric
        .key()
        .split('_')
        .map(|word| {
            let mut chars = word.chars();
            chars.next().map_or(String::new(), |c| {
                if word.chars().all(|c| c.is_ascii_lowercase()) && word.len() <= 2 {
                    word.to_uppercase()
                } else {
                    c.to_uppercase().chain(chars).collect()
                }
            })
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn shown_value(metric: Metric, value: f64) -> String {
    if metric.is_count() {
        format!("{}", value as u64)
    } else {
        format!("{value:.4}")
    }
}

fn link(origin: &Origin, kind: &str) -> String {
    match origin {
        Origin::Hub(id) => {
            let base = if kind == "models" {
                String::new()
            } else {
                format!("{kind}/")
            };
            format!("[{id}](https://huggingface.co/{base}{id})")
        }
        Origin::Local(path) => format!("`{}`", path.display()),
    }
}

/// A YAML scalar: plain when it is safe, else double-quoted (JSON strings are YAML).
fn yaml_str(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./ ".contains(c))
        && !s.starts_with(['-', '.', ' '])
        && !s.ends_with(' ');
    if plain {
        s.to_string()
    } else {
        serde_json::Value::String(s.to_string()).to_string()
    }
}

/// Writes `README.md` into `dir`, whole or not at all.
pub fn write(dir: &Path, card: &str) -> Result<(), qa_data::atomic::WriteError> {
    qa_data::atomic::write_atomically(&dir.join("README.md"), |w| {
        std::io::Write::write_all(w, card.as_bytes())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinned_versions_are_the_workspace_pins() {
        let manifest =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.toml"))
                .unwrap();
        assert!(manifest.contains(&format!("burn = {{ version = \"={BURN_VERSION}\"")));
        assert!(manifest.contains(&format!(
            "tokenizers = {{ version = \"={TOKENIZERS_VERSION}\""
        )));
    }

    #[test]
    fn metric_titles_read_like_the_trainer_s() {
        assert_eq!(title(Metric::F1), "F1");
        assert_eq!(title(Metric::ExactMatch), "Exact Match");
        assert_eq!(title(Metric::HasAnsF1), "HasAns F1");
        assert_eq!(title(Metric::BestF1Thresh), "Best F1 Thresh");
    }

    #[test]
    fn yaml_scalars_are_quoted_when_needed() {
        assert_eq!(yaml_str("org/name-1.0"), "org/name-1.0");
        assert_eq!(yaml_str("a: b"), "\"a: b\"");
        assert_eq!(yaml_str("-x"), "\"-x\"");
        assert_eq!(yaml_str("Exact Match"), "Exact Match");
    }
}
