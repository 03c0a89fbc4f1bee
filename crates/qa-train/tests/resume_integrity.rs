//! A damaged checkpoint is refused, naming the file and the tensor or field, instead of being
//! resumed into silently wrong state: the optimizer file replaced, a moment missing, of another
//! length or dtype, NaN moments or weights, and a hand-edited `trainer_state.json`. An intact
//! checkpoint still resumes to the uninterrupted run's weights, for every model family and
//! across steps the loss scaler skipped.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use qa_data::{Feature, Progress};
use qa_model::backend::{default_device, Train};
use qa_model::checkpoint::{build_model, export_tensors};
use qa_model::weights::{write_safetensors, HostTensor, WeightFile};
use qa_model::{Architecture, ModelConfig, QaModel};
use qa_train::checkpoint::TrainerState;
use qa_train::{train, LossScaling, TrainConfig, TrainJob, TrainOutcome};

mod common;
use common::{max_diff, read_log, serial};

type B = Train;

/// The tiny golden BERT without dropout and 16 windows of COVID-QA dev.
struct Tiny {
    config: ModelConfig,
    weights: WeightFile,
    windows: Vec<Feature>,
}

impl Tiny {
    fn load() -> Self {
        let (config, weights) = common::tiny_model(common::Dropout::Off);
        let (_, with, without) = common::covid_windows(6);
        let windows = with
            .into_iter()
            .take(8)
            .chain(without.into_iter().take(8))
            .collect();
        Self {
            weights,
            config,
            windows,
        }
    }

    fn train_model(
        &self,
        config: &ModelConfig,
        weights: Option<&WeightFile>,
        cfg: &TrainConfig,
    ) -> qa_train::Result<TrainOutcome<B>> {
        let device = default_device();
        let model: QaModel<B> = build_model(config, weights, 0, &device).unwrap().0;
        let job = TrainJob {
            model_config: config,
            tokenizer_dir: None,
            train_features: &self.windows,
            eval: None,
            card: None,
        };
        train(model, &job, cfg, &device)
    }

    fn train(&self, cfg: &TrainConfig) -> qa_train::Result<TrainOutcome<B>> {
        self.train_model(&self.config, Some(&self.weights), cfg)
    }
}

/// 16 windows in batches of 8: 2 steps an epoch, 6 in all, a checkpoint every 3 steps.
fn base(dir: &Path) -> TrainConfig {
    TrainConfig {
        learning_rate: 1e-3,
        weight_decay: 0.01,
        max_steps: Some(6),
        per_device_train_batch_size: 8,
        save_steps: Some(3),
        logging_steps: 1,
        progress: Progress::Hidden,
        ..TrainConfig::new(dir)
    }
}

/// A run killed after step 3: `checkpoint-3` (epoch 1, batch 1) is its newest checkpoint.
fn killed_run(tiny: &Tiny) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let killed = TrainConfig {
        interrupt_after_steps: Some(3),
        ..base(dir.path())
    };
    assert!(tiny.train(&killed).unwrap().results.interrupted);
    let checkpoint = dir.path().join("checkpoint-3");
    assert!(checkpoint.join("optimizer.safetensors").is_file());
    (dir, checkpoint)
}

/// Kills a run at step 3, lets `damage` edit `checkpoint-3`, and returns the resume's error
/// and the checkpoint folder.
fn resume_after(damage: impl FnOnce(&Path)) -> (String, PathBuf, tempfile::TempDir) {
    let tiny = Tiny::load();
    let (dir, checkpoint) = killed_run(&tiny);
    damage(&checkpoint);
    let error = match tiny.train(&base(dir.path())) {
        Ok(out) => panic!(
            "a damaged checkpoint was resumed (to step {})",
            out.results.global_step
        ),
        Err(e) => e.to_string(),
    };
    (error, checkpoint, dir)
}

fn read_tensors(path: &Path) -> BTreeMap<String, HostTensor> {
    WeightFile::read(path).unwrap().tensors
}

fn optimizer_file(checkpoint: &Path) -> PathBuf {
    checkpoint.join("optimizer.safetensors")
}

/// Rewrites the optimizer file of `checkpoint` through `edit`.
fn edit_moments(checkpoint: &Path, edit: impl FnOnce(&mut BTreeMap<String, HostTensor>)) {
    let path = optimizer_file(checkpoint);
    let mut tensors = read_tensors(&path);
    edit(&mut tensors);
    write_safetensors(&path, &tensors).unwrap();
}

/// Rewrites `trainer_state.json` of `checkpoint` through `edit`.
fn edit_state(checkpoint: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = checkpoint.join("trainer_state.json");
    let mut state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut state);
    std::fs::write(&path, serde_json::to_string_pretty(&state).unwrap()).unwrap();
}

const ADVICE: &str = "resume from another checkpoint or pass --overwrite-output-dir";

#[test]
fn model_weights_copied_over_the_optimizer_file_are_refused() {
    let (error, checkpoint, _dir) = resume_after(|c| {
        std::fs::copy(c.join("model.safetensors"), optimizer_file(c)).unwrap();
    });
    assert_eq!(
        error,
        format!(
            "{}: tensor bert.embeddings.LayerNorm.bias is not an optimizer moment \
             (m.PARAMETER or v.PARAMETER): the file was replaced (by model weights?); {ADVICE}",
            optimizer_file(&checkpoint).display()
        )
    );
}

#[test]
fn a_missing_moment_is_refused() {
    let (error, checkpoint, _dir) = resume_after(|c| {
        edit_moments(c, |t| {
            t.remove("m.bert.encoder.layer.1.output.dense.weight")
                .unwrap();
        })
    });
    assert_eq!(
        error,
        format!(
            "{}: tensor m.bert.encoder.layer.1.output.dense.weight is missing (after an update \
             every parameter has both moments): the file is damaged; {ADVICE}",
            optimizer_file(&checkpoint).display()
        )
    );
    // A parameter with neither moment is named by its first.
    let (error, checkpoint, _dir) = resume_after(|c| {
        edit_moments(c, |t| {
            t.remove("m.qa_outputs.bias").unwrap();
            t.remove("v.qa_outputs.bias").unwrap();
        })
    });
    assert_eq!(
        error,
        format!(
            "{}: tensor m.qa_outputs.bias is missing (after an update every parameter has both \
             moments): the file is damaged; {ADVICE}",
            optimizer_file(&checkpoint).display()
        )
    );
}

#[test]
fn a_moment_of_another_length_or_shape_is_refused() {
    // qa_outputs.weight is [2, 32]: its moments hold 64 values.
    let (error, checkpoint, _dir) = resume_after(|c| {
        edit_moments(c, |t| {
            let v = t.get_mut("v.qa_outputs.weight").unwrap();
            *v = HostTensor::new(vec![63], v.data[..63].to_vec());
        })
    });
    assert_eq!(
        error,
        format!(
            "{}: tensor v.qa_outputs.weight has shape [63], but qa_outputs.weight has 64 values \
             (expected shape [64]): the file is damaged or belongs to another model; {ADVICE}",
            optimizer_file(&checkpoint).display()
        )
    );
    let (error, checkpoint, _dir) = resume_after(|c| {
        edit_moments(c, |t| {
            let m = t.get_mut("m.qa_outputs.weight").unwrap();
            *m = HostTensor::new(vec![2, 32], m.data.clone());
        })
    });
    assert_eq!(
        error,
        format!(
            "{}: tensor m.qa_outputs.weight has shape [2, 32], but qa_outputs.weight has 64 \
             values (expected shape [64]): the file is damaged or belongs to another model; \
             {ADVICE}",
            optimizer_file(&checkpoint).display()
        )
    );
}

#[test]
fn moments_stored_as_f16_are_refused() {
    let (error, checkpoint, _dir) = resume_after(|c| {
        let path = optimizer_file(c);
        let tensors = candle_core::safetensors::load(&path, &candle_core::Device::Cpu).unwrap();
        let halved: HashMap<String, candle_core::Tensor> = tensors
            .into_iter()
            .map(|(name, t)| (name, t.to_dtype(candle_core::DType::F16).unwrap()))
            .collect();
        candle_core::safetensors::save(&halved, &path).unwrap();
    });
    assert_eq!(
        error,
        format!(
            "{}: tensor m.bert.embeddings.LayerNorm.bias is F16, but moments are saved as F32: \
             the file was converted or damaged; {ADVICE}",
            optimizer_file(&checkpoint).display()
        )
    );
}

#[test]
fn non_finite_moments_are_a_corrupt_checkpoint_not_a_divergence() {
    for (value, tensor) in [
        (f32::NAN, "v.bert.encoder.layer.0.attention.self.key.bias"),
        (f32::INFINITY, "m.qa_outputs.weight"),
    ] {
        let (error, checkpoint, _dir) =
            resume_after(|c| edit_moments(c, |t| t.get_mut(tensor).unwrap().data[1] = value));
        assert_eq!(
            error,
            format!(
                "{}: tensor {tensor} holds NaN or infinite values: the checkpoint is corrupt \
                 (training never saves them); {ADVICE}",
                optimizer_file(&checkpoint).display()
            )
        );
    }
}

#[test]
fn non_finite_weights_are_a_corrupt_checkpoint() {
    let (error, checkpoint, _dir) = resume_after(|c| {
        let path = c.join("model.safetensors");
        let mut tensors = read_tensors(&path);
        tensors
            .get_mut("bert.encoder.layer.1.intermediate.dense.weight")
            .unwrap()
            .data[5] = f32::NEG_INFINITY;
        write_safetensors(&path, &tensors).unwrap();
    });
    assert_eq!(
        error,
        format!(
            "{}: tensor bert.encoder.layer.1.intermediate.dense.weight holds NaN or infinite \
             values: the checkpoint is corrupt (training never saves them); {ADVICE}",
            checkpoint.join("model.safetensors").display()
        )
    );
}

/// `field … is …, but …` for `trainer_state.json` of `checkpoint`.
fn inconsistent(checkpoint: &Path, field: &str, value: &str, expected: &str) -> String {
    format!(
        "{}: field {field} is {value}, but {expected}: the trainer state was edited or \
         damaged; {ADVICE}",
        checkpoint.join("trainer_state.json").display()
    )
}

#[test]
fn global_step_other_than_the_folders_step_is_refused() {
    let (error, checkpoint, _dir) =
        resume_after(|c| edit_state(c, |s| s["global_step"] = 2.into()));
    assert_eq!(
        error,
        inconsistent(
            &checkpoint,
            "global_step",
            "2",
            "the folder is checkpoint-3"
        )
    );
}

#[test]
fn an_epoch_or_batch_that_global_step_does_not_reach_is_refused() {
    let (error, checkpoint, _dir) =
        resume_after(|c| edit_state(c, |s| s["epoch"] = 1_000_000.into()));
    assert_eq!(
        error,
        inconsistent(
            &checkpoint,
            "epoch",
            "1000000",
            "step 3 at 2 steps per epoch lies in epoch 1"
        )
    );
    let (error, checkpoint, _dir) =
        resume_after(|c| edit_state(c, |s| s["batch_in_epoch"] = 0.into()));
    assert_eq!(
        error,
        inconsistent(
            &checkpoint,
            "batch_in_epoch",
            "0",
            "step 3 at 2 steps per epoch lies at batch 1 of epoch 1"
        )
    );
}

#[test]
fn a_fractional_epoch_names_the_field() {
    let (error, checkpoint, _dir) = resume_after(|c| edit_state(c, |s| s["epoch"] = 1e6.into()));
    let state_path = checkpoint.join("trainer_state.json");
    // serde's own words, with the line and column of the edited file.
    let text = std::fs::read_to_string(&state_path).unwrap();
    let serde = serde_json::from_str::<TrainerState>(&text).unwrap_err();
    assert!(
        serde
            .to_string()
            .starts_with("invalid type: floating point `1000000.0`, expected usize at line "),
        "{serde}"
    );
    assert_eq!(
        error,
        format!(
            "{}: malformed trainer state: field epoch: {serde}",
            state_path.display()
        )
    );
}

#[test]
fn log_entries_past_global_step_are_refused() {
    let (error, checkpoint, _dir) = resume_after(|c| {
        edit_state(c, |s| {
            assert_eq!(s["log_history"].as_array().unwrap().len(), 3);
            s["log_history"][1]["step"] = 9.into();
        })
    });
    assert_eq!(
        error,
        inconsistent(
            &checkpoint,
            "log_history[1].step",
            "9",
            "log entries hold a step from 1 to global_step 3"
        )
    );
    let (error, checkpoint, _dir) = resume_after(|c| {
        edit_state(c, |s| {
            s["log_history"][2]
                .as_object_mut()
                .unwrap()
                .remove("step")
                .unwrap();
        })
    });
    assert_eq!(
        error,
        inconsistent(
            &checkpoint,
            "log_history[2].step",
            "missing",
            "log entries hold a step from 1 to global_step 3"
        )
    );
}

#[test]
fn more_skipped_steps_than_steps_are_refused() {
    let (error, checkpoint, _dir) = resume_after(|c| {
        edit_state(c, |s| {
            s["loss_scaler"] = serde_json::json!({
                "settings": LossScaling::default(),
                "scale": 1024.0,
                "good_steps": 0,
                "skipped_steps": 4,
            });
        })
    });
    assert_eq!(
        error,
        inconsistent(
            &checkpoint,
            "loss_scaler.skipped_steps",
            "4",
            "only 3 steps were taken (global_step)"
        )
    );
}

#[test]
fn an_intact_checkpoint_resumes_to_the_uninterrupted_weights() {
    let _serial = serial();
    let tiny = Tiny::load();
    let straight_dir = tempfile::tempdir().unwrap();
    let straight = tiny.train(&base(straight_dir.path())).unwrap();
    let (dir, checkpoint) = killed_run(&tiny);
    let resumed = tiny.train(&base(dir.path())).unwrap();
    assert_eq!(
        resumed.results.resumed_from.as_deref(),
        Some(checkpoint.as_path())
    );
    assert_eq!(resumed.results.global_step, 6);
    let diff = max_diff(
        &export_tensors(&straight.model, &tiny.config),
        &export_tensors(&resumed.model, &tiny.config),
    );
    assert_eq!(diff, 0.0);
    let steps: Vec<u64> = read_log(dir.path())
        .iter()
        .map(|e| e["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, [1, 2, 3, 4, 5, 6]);
}

#[test]
fn a_resume_after_skipped_steps_matches_the_uninterrupted_run() {
    let _serial = serial();
    let tiny = Tiny::load();
    // 1e39 × loss overflows f32: the first steps are skipped until the scale has backed off,
    // and AdamW's bias correction must count only the updates on resume.
    let cfg = |dir: &Path| TrainConfig {
        loss_scaling: Some(LossScaling {
            init_scale: 1e39,
            growth_interval: 2,
            ..Default::default()
        }),
        ..base(dir)
    };
    let straight_dir = tempfile::tempdir().unwrap();
    let straight = tiny.train(&cfg(straight_dir.path())).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let killed = TrainConfig {
        interrupt_after_steps: Some(3),
        ..cfg(dir.path())
    };
    tiny.train(&killed).unwrap();
    let state: TrainerState = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("checkpoint-3/trainer_state.json")).unwrap(),
    )
    .unwrap();
    let skipped = state.loss_scaler.unwrap().skipped_steps;
    assert!((1..3).contains(&skipped), "skipped {skipped} of 3 steps");
    let resumed = tiny.train(&cfg(dir.path())).unwrap();
    let diff = max_diff(
        &export_tensors(&straight.model, &tiny.config),
        &export_tensors(&resumed.model, &tiny.config),
    );
    assert_eq!(diff, 0.0);
    assert_eq!(
        resumed.results.skipped_steps,
        straight.results.skipped_steps
    );
}

#[test]
fn every_model_family_resumes_its_own_checkpoints() {
    let tiny = Tiny::load();
    for architecture in Architecture::ALL {
        let config = ModelConfig::small(architecture, tiny.config.vocab_size, 16, 1, 2, 32);
        let dir = tempfile::tempdir().unwrap();
        let cfg = TrainConfig {
            max_steps: Some(2),
            save_steps: Some(1),
            ..base(dir.path())
        };
        let killed = TrainConfig {
            interrupt_after_steps: Some(1),
            ..cfg.clone()
        };
        tiny.train_model(&config, None, &killed).unwrap();
        let resumed = tiny
            .train_model(&config, None, &cfg)
            .unwrap_or_else(|e| panic!("{architecture:?}: {e}"));
        assert_eq!(
            resumed.results.resumed_from.as_deref(),
            Some(dir.path().join("checkpoint-1").as_path()),
            "{architecture:?}"
        );
        assert_eq!(resumed.results.global_step, 2, "{architecture:?}");
    }
}
