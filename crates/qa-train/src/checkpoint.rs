//! `OUTPUT/checkpoint-STEP/` as HF names it: the model as an HF folder, `optimizer.safetensors`
//! (AdamW moments by HF parameter name) and `trainer_state.json` (step, data position, schedule,
//! best metric, log). Written to a temp folder and renamed, so a kill never leaves half a one.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::Tensor;
use qa_model::checkpoint::{load_pretrained, save_pretrained};
use qa_model::weights::{write_safetensors, WeightFile};
use qa_model::{ModelConfig, QaModel};
use serde::{Deserialize, Serialize};

use crate::error::{io, CheckpointProblem, Result, TrainError};
use crate::loss_scaler::LossScaler;
use crate::optim::AdamW;

/// Everything besides weights and moments that an exact resume needs.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct TrainerState {
    pub global_step: usize,
    pub total_steps: usize,
    pub warmup_steps: usize,
    /// Epoch being read and the next batch within it (the data position).
    pub epoch: usize,
    pub batch_in_epoch: usize,
    pub seed: u64,
    /// What the run read and how: a resume with other data or batching would read other
    /// batches (or past the end), so it is refused.
    pub run: RunFingerprint,
    /// Peers that trained (1 on one device; older checkpoints have none and were one).
    #[serde(default = "one_peer")]
    pub world_size: usize,
    pub loss_sum: f64,
    pub best_metric: Option<f64>,
    /// Dynamic loss scaling (fp16).
    pub loss_scaler: Option<LossScaler>,
    pub best_checkpoint: Option<PathBuf>,
    pub log_history: Vec<serde_json::Value>,
}

fn one_peer() -> usize {
    1
}

/// The training windows and batching of a run, as resume must find them again.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct RunFingerprint {
    /// FNV-1a of every window's token ids and labels, in order
    /// ([`qa_data::WindowSource::fingerprint`]).
    pub windows_hash: u64,
    pub windows: usize,
    pub per_device_train_batch_size: usize,
    pub gradient_accumulation_steps: usize,
}

/// FNV-1a, 64 bits: the stable hash of the run fingerprints (data, model) that checkpoints and
/// data-parallel nodes compare; the windows' is [`qa_data::WindowSource::fingerprint`].
pub use qa_data::windows::Fnv1a;

pub const STATE_FILE: &str = "trainer_state.json";
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";

pub fn checkpoint_dir(output_dir: &Path, step: usize) -> PathBuf {
    output_dir.join(format!("checkpoint-{step}"))
}

/// `checkpoint-N` folders of an output dir, oldest first.
pub fn list_checkpoints(output_dir: &Path) -> Vec<(usize, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(output_dir) else {
        return Vec::new();
    };
    let mut found: Vec<(usize, PathBuf)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let step = name.strip_prefix("checkpoint-")?.parse().ok()?;
            let path = e.path();
            path.join(STATE_FILE).is_file().then_some((step, path))
        })
        .collect();
    found.sort();
    found
}

pub fn save_checkpoint<B: AutodiffBackend>(
    output_dir: &Path,
    model: &QaModel<B>,
    config: &ModelConfig,
    tokenizer_dir: Option<&Path>,
    optimizer: &AdamW<B::InnerBackend>,
    state: &TrainerState,
) -> Result<PathBuf> {
    let final_dir = checkpoint_dir(output_dir, state.global_step);
    let tmp = output_dir.join(format!(".checkpoint-{}.tmp", state.global_step));
    let written = (|| {
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
        }
        save_pretrained(model, config, &tmp, tokenizer_dir)?;
        write_safetensors(&tmp.join(OPTIMIZER_FILE), &optimizer.export())?;
        write_state(&tmp.join(STATE_FILE), state)
    })();
    if let Err(source) = written {
        // A half-written checkpoint is never published; its space is given back.
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(TrainError::SaveFailed {
            what: format!("checkpoint-{}", state.global_step),
            previous: latest_checkpoint(output_dir),
            source: Box::new(source),
        });
    }
    if final_dir.exists() {
        std::fs::remove_dir_all(&final_dir).map_err(io(&final_dir))?;
    }
    std::fs::rename(&tmp, &final_dir).map_err(io(&final_dir))?;
    Ok(final_dir)
}

/// The newest complete checkpoint of `output_dir`, if any.
pub fn latest_checkpoint(output_dir: &Path) -> Option<PathBuf> {
    list_checkpoints(output_dir).pop().map(|(_, path)| path)
}

pub fn write_state(path: &Path, state: &TrainerState) -> Result<()> {
    let text = serde_json::to_string_pretty(state).expect("state serializes");
    std::fs::write(path, text + "\n").map_err(io(path))
}

/// Deletes the oldest checkpoints beyond `limit`, never the best one.
pub fn prune(output_dir: &Path, limit: usize, best: Option<&Path>) -> Result<()> {
    let all = list_checkpoints(output_dir);
    let mut excess = all.len().saturating_sub(limit);
    for (_, path) in all {
        if excess == 0 {
            break;
        }
        if Some(path.as_path()) == best {
            continue;
        }
        std::fs::remove_dir_all(&path).map_err(io(&path))?;
        excess -= 1;
    }
    Ok(())
}

/// A checkpoint read back: model, optimizer and state.
pub struct Resumed<B: AutodiffBackend> {
    pub model: QaModel<B>,
    pub optimizer: AdamW<B::InnerBackend>,
    pub state: TrainerState,
}

pub fn load_checkpoint<B: AutodiffBackend>(
    dir: &Path,
    optimizer: AdamW<B::InnerBackend>,
    device: &B::Device,
) -> Result<Resumed<B>> {
    let state_path = dir.join(STATE_FILE);
    let text = std::fs::read_to_string(&state_path).map_err(io(&state_path))?;
    let state = parse_state(&text).map_err(|e| TrainError::Checkpoint {
        path: state_path.clone(),
        what: CheckpointProblem::MalformedState(e),
    })?;
    // Training never saves NaN or infinite weights: in a checkpoint they are corruption.
    let (model, _, _) =
        load_pretrained::<B>(dir, None, state.seed, device).map_err(|e| match e {
            qa_model::ModelError::NonFinite { path, name } => TrainError::Checkpoint {
                path,
                what: CheckpointProblem::NonFiniteTensor(name),
            },
            other => other.into(),
        })?;
    let optimizer_path = dir.join(OPTIMIZER_FILE);
    let moments = WeightFile::read(&optimizer_path)?;
    // Steps skipped by the loss scaler never reached AdamW: its bias correction counts the
    // updates only.
    let skipped = state.loss_scaler.map_or(0, |s| s.skipped_steps);
    let updates = state.global_step.saturating_sub(skipped);
    // Every moment must be one the run saved: under a parameter's name, F32, as long as the
    // parameter, finite; and after an update every parameter has both. Anything else would
    // silently resume from zero (or wrong) moments.
    check_moments(&model, &moments, updates).map_err(|what| TrainError::Checkpoint {
        path: optimizer_path.clone(),
        what,
    })?;
    let mut optimizer = optimizer;
    let inner_device = model.qa_outputs.weight.val().inner().device();
    optimizer
        .import(updates, &moments.tensors, &inner_device)
        .map_err(|what| TrainError::Checkpoint {
            path: optimizer_path,
            what,
        })?;
    Ok(Resumed {
        model,
        optimizer,
        state,
    })
}

/// `trainer_state.json`'s text as a state; an error names the field that does not read.
fn parse_state(text: &str) -> std::result::Result<TrainerState, String> {
    serde_json::from_str(text).map_err(|e| {
        // serde_json names a line and column only: find the field by reading each alone.
        let value = serde_json::from_str::<serde_json::Value>(text).ok();
        let field = value
            .as_ref()
            .and_then(|v| v.as_object())
            .and_then(|fields| {
                fields.iter().find_map(|(key, value)| {
                    let alone = serde_json::Map::from_iter([(key.clone(), value.clone())]);
                    serde_json::from_value::<TrainerState>(alone.into())
                        .is_err()
                        .then(|| key.clone())
                })
            });
        match field {
            Some(field) => format!("field {field}: {e}"),
            None => e.to_string(),
        }
    })
}

/// The number of values of every parameter of `model`, by HF name.
fn parameter_sizes<B: Backend>(model: &QaModel<B>) -> BTreeMap<String, usize> {
    struct Sizes(HashMap<ParamId, usize>);
    impl<B: Backend> ModuleVisitor<B> for Sizes {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            self.0.insert(param.id, param.val().shape().num_elements());
        }
    }
    let mut sizes = Sizes(HashMap::new());
    model.visit(&mut sizes);
    qa_model::hf_param_names(model)
        .into_iter()
        .filter_map(|p| Some((p.name, *sizes.0.get(&p.id)?)))
        .collect()
}

/// Checks the tensors of `optimizer.safetensors` (read as `file`) against the model's
/// parameters, after `updates` AdamW updates.
fn check_moments<B: Backend>(
    model: &QaModel<B>,
    file: &WeightFile,
    updates: usize,
) -> std::result::Result<(), CheckpointProblem> {
    let sizes = parameter_sizes(model);
    let dtypes = &file.stored_dtypes;
    for (name, dtype) in dtypes {
        let Some(parameter) = name.strip_prefix("m.").or_else(|| name.strip_prefix("v.")) else {
            return Err(CheckpointProblem::NotAMoment(name.clone()));
        };
        // Moments under names the model lacks (an older key scheme, another model) would
        // leave every parameter starting from zero moments.
        let Some(&expected) = sizes.get(parameter) else {
            return Err(CheckpointProblem::UnknownParameter(parameter.to_string()));
        };
        let tensor = match (dtype.as_str(), file.tensors.get(name)) {
            ("F32", Some(tensor)) => tensor,
            _ => {
                return Err(CheckpointProblem::MomentDtype {
                    tensor: name.clone(),
                    dtype: dtype.clone(),
                })
            }
        };
        if tensor.shape != [expected] {
            return Err(CheckpointProblem::MomentShape {
                tensor: name.clone(),
                parameter: parameter.to_string(),
                expected,
                found: tensor.shape.clone(),
            });
        }
        if tensor.data.iter().any(|v| !v.is_finite()) {
            return Err(CheckpointProblem::NonFiniteTensor(name.clone()));
        }
    }
    if updates > 0 {
        for parameter in sizes.keys() {
            for moment in [format!("m.{parameter}"), format!("v.{parameter}")] {
                if !dtypes.contains_key(&moment) {
                    return Err(CheckpointProblem::MissingMoment(moment));
                }
            }
        }
    }
    Ok(())
}

/// Cross-checks a resumed state against its folder and itself, for a run whose epochs have
/// `batches_per_epoch` micro-batches read `accumulation` to a step: the folder's step is
/// `global_step`, the data position is the one `global_step` steps reach, and no log entry
/// lies past it.
pub fn check_state(
    dir: &Path,
    state: &TrainerState,
    batches_per_epoch: usize,
    accumulation: usize,
) -> std::result::Result<(), CheckpointProblem> {
    let bad = |field: String, value: String, expected: String| {
        Err(CheckpointProblem::InconsistentState {
            field,
            value,
            expected,
        })
    };
    let step = state.global_step;
    let folder_step = dir.file_name().and_then(|name| {
        name.to_str()?
            .strip_prefix("checkpoint-")?
            .parse::<usize>()
            .ok()
    });
    if let Some(folder_step) = folder_step.filter(|&s| s != step) {
        return bad(
            "global_step".into(),
            step.to_string(),
            format!("the folder is checkpoint-{folder_step}"),
        );
    }
    // Every epoch takes ⌈batches / accumulation⌉ steps (the last one may read fewer).
    let steps_per_epoch = batches_per_epoch.div_ceil(accumulation.max(1)).max(1);
    let epoch = step / steps_per_epoch;
    if state.epoch != epoch {
        return bad(
            "epoch".into(),
            state.epoch.to_string(),
            format!("step {step} at {steps_per_epoch} steps per epoch lies in epoch {epoch}"),
        );
    }
    let batch = (step % steps_per_epoch) * accumulation;
    if state.batch_in_epoch != batch {
        return bad(
            "batch_in_epoch".into(),
            state.batch_in_epoch.to_string(),
            format!(
                "step {step} at {steps_per_epoch} steps per epoch lies at batch {batch} of epoch \
                 {epoch}"
            ),
        );
    }
    if let Some(skipped) = state.loss_scaler.map(|s| s.skipped_steps) {
        if skipped > step {
            return bad(
                "loss_scaler.skipped_steps".into(),
                skipped.to_string(),
                format!("only {step} steps were taken (global_step)"),
            );
        }
    }
    for (i, entry) in state.log_history.iter().enumerate() {
        let logged = entry.get("step");
        if !logged
            .and_then(serde_json::Value::as_u64)
            .is_some_and(|s| (1..=step as u64).contains(&s))
        {
            return bad(
                format!("log_history[{i}].step"),
                logged.map_or("missing".into(), |s| s.to_string()),
                format!("log entries hold a step from 1 to global_step {step}"),
            );
        }
    }
    Ok(())
}
