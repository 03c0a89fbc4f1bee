//! `OUTPUT/checkpoint-STEP/` as HF names it: the model as an HF folder, `optimizer.safetensors`
//! (AdamW moments by HF parameter name) and `trainer_state.json` (step, data position, schedule,
//! best metric, log). Written to a temp folder and renamed, so a kill never leaves half a one.

use std::path::{Path, PathBuf};

use burn::tensor::backend::AutodiffBackend;
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
    /// FNV-1a of every window's token ids and labels, in order (see [`windows_fingerprint`]).
    pub windows_hash: u64,
    pub windows: usize,
    pub per_device_train_batch_size: usize,
    pub gradient_accumulation_steps: usize,
}

/// A stable hash of the training windows (FNV-1a: unlike `std`'s hasher it never changes
/// between toolchains, so old checkpoints stay resumable).
pub fn windows_fingerprint(features: &[qa_data::Feature]) -> u64 {
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |value: u64| {
        for byte in value.to_le_bytes() {
            hash = (hash ^ u64::from(byte)).wrapping_mul(PRIME);
        }
    };
    for f in features {
        eat(f.input_ids.len() as u64);
        f.input_ids.iter().for_each(|&id| eat(u64::from(id)));
        eat(f.start_position as u64);
        eat(f.end_position as u64);
    }
    hash
}

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
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
    }
    save_pretrained(model, config, &tmp, tokenizer_dir)?;
    write_safetensors(&tmp.join(OPTIMIZER_FILE), &optimizer.export())?;
    write_state(&tmp.join(STATE_FILE), state)?;
    if final_dir.exists() {
        std::fs::remove_dir_all(&final_dir).map_err(io(&final_dir))?;
    }
    std::fs::rename(&tmp, &final_dir).map_err(io(&final_dir))?;
    Ok(final_dir)
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
    let state: TrainerState = serde_json::from_str(&text).map_err(|e| TrainError::Checkpoint {
        path: state_path.clone(),
        what: CheckpointProblem::MalformedState(e.to_string()),
    })?;
    let (model, _, _) = load_pretrained::<B>(dir, None, state.seed, device)?;
    let moments = WeightFile::read(&dir.join(OPTIMIZER_FILE))?;
    let mut optimizer = optimizer;
    let inner_device = model.qa_outputs.weight.val().inner().device();
    optimizer
        .import(state.global_step, &moments.tensors, &inner_device)
        .map_err(|what| TrainError::Checkpoint {
            path: dir.join(OPTIMIZER_FILE),
            what,
        })?;
    // Moments under names the model lacks (an older key scheme, another model) would leave
    // every parameter starting from zero moments: refuse instead of resuming differently.
    let names: std::collections::HashSet<String> = qa_model::hf_param_names(&model)
        .into_iter()
        .map(|p| p.name)
        .collect();
    if let Some(unknown) = optimizer.moments.keys().find(|k| !names.contains(*k)) {
        return Err(TrainError::Checkpoint {
            path: dir.join(OPTIMIZER_FILE),
            what: CheckpointProblem::UnknownParameter(unknown.clone()),
        });
    }
    Ok(Resumed {
        model,
        optimizer,
        state,
    })
}
