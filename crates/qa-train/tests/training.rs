//! Training on the CPU with the tiny golden BERT: it learns, accumulation is exact, resume is
//! exact, and AdamW's first step is torch's.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::module::AutodiffModule;
use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor, TensorData};
use qa_data::features::pad_batch;
use qa_data::{Example, Feature, Progress};
use qa_eval::Metric;
use qa_model::backend::{default_device, Train};
use qa_model::checkpoint::{build_model, export_tensors};
use qa_model::model::{Encoder, QaBatch};
use qa_model::weights::{HostTensor, WeightFile};
use qa_model::{ModelConfig, QaModel};

mod common;
use common::{max_diff, read_log, serial, Dropout};
use qa_train::optim::{AdamW, AdamWConfig};
use qa_train::trainer::TrainResults;
use qa_train::{
    train, EvalSet, IntervalStrategy, LossScaling, Precision, TrainConfig, TrainJob, TrainOutcome,
};

type B = Train;

/// What every test trains: the tiny golden BERT, 16 short windows of COVID-QA dev
/// (max_length 64; 8 hold their answer, 8 do not) and the 6 questions they come from.
struct Tiny {
    dir: PathBuf,
    config: ModelConfig,
    weights: WeightFile,
    windows: Vec<Feature>,
    examples: Vec<Example>,
}

impl Tiny {
    fn load(dropout: Dropout) -> Self {
        let dir = common::tiny_model_dir();
        let (config, weights) = common::tiny_model(dropout);
        let (examples, with, without) = common::covid_windows(6);
        assert!(with.len() >= 8, "only {} answer windows", with.len());
        let windows = with
            .into_iter()
            .take(8)
            .chain(without.into_iter().take(8))
            .collect();
        Self {
            weights,
            dir,
            config,
            windows,
            examples,
        }
    }

    /// A fresh copy of the model on backend `Bk`.
    fn model<Bk: AutodiffBackend>(&self, device: &Bk::Device) -> QaModel<Bk> {
        build_model::<Bk>(&self.config, Some(&self.weights), 0, device)
            .unwrap()
            .0
    }

    /// The model's tensors under their HF names.
    fn start_weights(&self) -> BTreeMap<String, HostTensor> {
        export_tensors(&self.model::<B>(&default_device()), &self.config)
    }

    /// The 6 questions as an evaluation set over the 16 windows.
    fn eval_set(&self) -> EvalSet<'_> {
        EvalSet {
            examples: &self.examples,
            features: &self.windows,
            decode: Default::default(),
        }
    }

    /// Trains a fresh copy on backend `Bk` (no tokenizer files copied).
    fn train_on<Bk: AutodiffBackend>(
        &self,
        cfg: &TrainConfig,
        eval: Option<&EvalSet>,
        device: &Bk::Device,
    ) -> qa_train::Result<TrainOutcome<Bk>> {
        self.train_from::<Bk>(&self.windows, cfg, eval, device)
    }

    /// [`Self::train_on`] reading its batches from `windows`.
    fn train_from<Bk: AutodiffBackend>(
        &self,
        windows: &dyn qa_data::WindowSource,
        cfg: &TrainConfig,
        eval: Option<&EvalSet>,
        device: &Bk::Device,
    ) -> qa_train::Result<TrainOutcome<Bk>> {
        let job = TrainJob {
            model_config: &self.config,
            tokenizer_dir: None,
            train_features: windows,
            eval,
            card: None,
        };
        train(self.model::<Bk>(device), &job, cfg, device)
    }

    fn train(
        &self,
        cfg: &TrainConfig,
        eval: Option<&EvalSet>,
    ) -> qa_train::Result<TrainOutcome<B>> {
        self.train_on::<B>(cfg, eval, &default_device())
    }
}

/// The defaults, silent, logging every step.
fn quiet(dir: &Path) -> TrainConfig {
    TrainConfig {
        progress: Progress::Hidden,
        logging_steps: 1,
        ..TrainConfig::new(dir)
    }
}

fn read_json(path: PathBuf) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// One key of every log entry.
fn logged(log: &[serde_json::Value], key: &str) -> Vec<f64> {
    log.iter().map(|e| e[key].as_f64().unwrap()).collect()
}

/// `bert.embeddings.LayerNorm` of the tiny golden BERT.
fn embeddings_layer_norm<Bk: Backend>(model: &QaModel<Bk>) -> &qa_model::layers::LayerNorm<Bk> {
    match &model.encoder {
        Encoder::Bert(bert) => &bert.embeddings.layer_norm,
        other => panic!(
            "the tiny golden model is BERT, not {:?}",
            other.architecture()
        ),
    }
}

/// Final weights and results of a run with AdamW made linear in the gradient (ε = 1, lr 0.5,
/// batch 8), so equal weights mean equal gradients.
fn linear_adam_run<Bk: AutodiffBackend>(
    tiny: &Tiny,
    precision: Precision,
    scaling: Option<LossScaling>,
    steps: usize,
    device: &Bk::Device,
) -> (BTreeMap<String, HostTensor>, TrainResults) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = TrainConfig {
        learning_rate: 0.5,
        adam_epsilon: 1.0,
        max_steps: Some(steps),
        per_device_train_batch_size: 8,
        precision,
        loss_scaling: scaling,
        ..quiet(dir.path())
    };
    let out = tiny.train_on::<Bk>(&cfg, None, device).unwrap();
    (export_tensors(&out.model, &tiny.config), out.results)
}

#[test]
fn tiny_model_overfits_a_small_slice() {
    let _serial = serial();
    // 16 windows, 100 steps of batch 8 at lr 3e-3. A head that knows nothing scores
    // ln(64) ≈ 4.16 per position; memorising 16 windows must take the mean loss of the last
    // logged steps well under 1.0 (a quarter of chance level).
    let dir = tempfile::tempdir().unwrap();
    let tiny = Tiny::load(Dropout::AsConfigured);
    let cfg = TrainConfig {
        learning_rate: 3e-3,
        max_steps: Some(100),
        per_device_train_batch_size: 8,
        ..quiet(dir.path())
    };
    let job = TrainJob {
        model_config: &tiny.config,
        tokenizer_dir: Some(&tiny.dir),
        train_features: &tiny.windows,
        eval: None,
        card: None,
    };
    let out = train(
        tiny.model::<B>(&default_device()),
        &job,
        &cfg,
        &default_device(),
    )
    .unwrap();
    let loss = logged(&read_log(dir.path()), "loss");
    let first = loss[0];
    let last: f64 = loss[loss.len() - 5..].iter().sum::<f64>() / 5.0;
    eprintln!("loss: first step {first:.3}, mean of last 5 steps {last:.3}");
    assert!(first > 3.0, "first loss {first}");
    assert!(last < 1.0, "final loss {last}");
    assert_eq!(out.results.global_step, 100);
    // The final model is an HF folder, plus HF's result files.
    for f in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "train_results.json",
        "trainer_state.json",
    ] {
        assert!(dir.path().join(f).is_file(), "{f}");
    }
}

#[test]
fn accumulating_4_batches_of_2_equals_one_batch_of_8() {
    let _serial = serial();
    let tiny = Tiny::load(Dropout::Off);
    let run = |bs: usize, accum: usize| {
        let dir = tempfile::tempdir().unwrap();
        // With ε = 1 AdamW's update is ≈ lr·g for small g: linear in the gradient, so equal
        // weights mean equal gradients (with ε = 1e-8 it is ≈ lr·sign(g), which turns float
        // noise in near-zero gradients into full-size steps).
        let cfg = TrainConfig {
            learning_rate: 0.5,
            adam_epsilon: 1.0,
            max_steps: Some(3),
            per_device_train_batch_size: bs,
            gradient_accumulation_steps: accum,
            max_grad_norm: 0.5,
            weight_decay: 0.01,
            ..quiet(dir.path())
        };
        let out = tiny.train(&cfg, None).unwrap();
        export_tensors(&out.model, &tiny.config)
    };
    let big = run(8, 1);
    let accumulated = run(2, 4);
    let start = tiny.start_weights();
    let moved = max_diff(&big, &start);
    let diff = max_diff(&big, &accumulated);
    eprintln!("weights moved by up to {moved:e}; batch 8 vs 4×2 differ by {diff:e}");
    assert!(moved > 1e-2);
    assert!(diff < 1e-6, "accumulation differs by {diff}");
}

/// Windows read batch by batch from a window file (the windows cache) train exactly as the
/// same windows in memory: same shuffle, same dropout, same weights bit for bit, and the same
/// run fingerprint in the checkpoint.
#[test]
fn training_from_a_window_file_is_bit_identical_to_training_from_memory() {
    let _serial = serial();
    let tiny = Tiny::load(Dropout::AsConfigured);
    let files = tempfile::tempdir().unwrap();
    let path = files.path().join("train.windows");
    let mut writer = qa_data::window_file::WindowWriter::create(&path, 30_522).unwrap();
    writer.write(&tiny.windows).unwrap();
    writer
        .finish(&qa_data::window_file::WindowMeta::default())
        .unwrap();
    let on_disk = qa_data::Windows::File {
        file: qa_data::window_file::WindowFile::open(&path).unwrap(),
        keep: None,
    };
    let run = |windows: &dyn qa_data::WindowSource| {
        let dir = tempfile::tempdir().unwrap();
        let cfg = TrainConfig {
            max_steps: Some(3),
            per_device_train_batch_size: 4,
            save_steps: Some(3),
            ..quiet(dir.path())
        };
        let out = tiny
            .train_from::<B>(windows, &cfg, None, &default_device())
            .unwrap();
        let state = read_json(dir.path().join("checkpoint-3/trainer_state.json"));
        (
            export_tensors(&out.model, &tiny.config),
            state["run"].clone(),
        )
    };
    let (in_memory, memory_fingerprint) = run(&tiny.windows);
    let (from_file, file_fingerprint) = run(&on_disk);
    assert!(max_diff(&in_memory, &tiny.start_weights()) > 1e-4);
    assert_eq!(in_memory, from_file);
    assert!(memory_fingerprint.is_object(), "{memory_fingerprint}");
    assert_eq!(memory_fingerprint, file_fingerprint);
}

#[test]
fn killed_and_resumed_run_ends_with_the_same_weights() {
    let _serial = serial();
    let tiny = Tiny::load(Dropout::AsConfigured);
    let base = |dir: &Path| TrainConfig {
        learning_rate: 5e-4,
        num_train_epochs: 2.0, // 16 windows / batch 4 → 4 steps an epoch, 8 in all
        per_device_train_batch_size: 4,
        warmup_ratio: 0.25,
        weight_decay: 0.01,
        save_steps: Some(2),
        save_total_limit: Some(2),
        ..quiet(dir)
    };
    let straight_dir = tempfile::tempdir().unwrap();
    let straight = tiny.train(&base(straight_dir.path()), None).unwrap();
    assert_eq!(straight.results.global_step, 8);

    let dir = tempfile::tempdir().unwrap();
    let killed = TrainConfig {
        interrupt_after_steps: Some(5),
        ..base(dir.path())
    };
    let first = tiny.train(&killed, None).unwrap();
    assert!(first.results.interrupted);
    // Checkpoints 2 and 4 were written; no final model yet.
    let names: Vec<_> = qa_train::checkpoint::list_checkpoints(dir.path())
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    assert_eq!(names, vec![2, 4]);
    assert!(!dir.path().join("model.safetensors").exists());
    // A new process: a fresh model object, auto-resume from checkpoint-4 (mid-epoch 2).
    let resumed = tiny.train(&base(dir.path()), None).unwrap();
    assert_eq!(
        resumed.results.resumed_from.as_deref(),
        Some(dir.path().join("checkpoint-4").as_path())
    );
    let diff = max_diff(
        &export_tensors(&straight.model, &tiny.config),
        &export_tensors(&resumed.model, &tiny.config),
    );
    eprintln!("straight vs resumed: max weight difference {diff:e}");
    assert_eq!(diff, 0.0);
    // The killed run had logged step 5 after its last checkpoint; the resumed run logs it
    // again, once: the log holds every step exactly once.
    let steps: Vec<f64> = logged(&read_log(dir.path()), "step");
    assert_eq!(steps, (1..=8).map(f64::from).collect::<Vec<_>>());
    // save_total_limit 2 kept the newest two.
    let names: Vec<_> = qa_train::checkpoint::list_checkpoints(dir.path())
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    assert_eq!(names, vec![6, 8]);
}

#[test]
fn adamw_first_step_moves_each_weight_by_lr_against_its_gradient_and_skips_decay_groups() {
    let device = default_device();
    let tiny = Tiny::load(Dropout::Off);
    let model = tiny.model::<B>(&device);
    let refs: Vec<&Feature> = tiny.windows.iter().take(4).collect();
    let padded = pad_batch(&refs, 0);
    let out = model.forward(&QaBatch::<B>::from_padded(&padded, &device));
    let labels =
        |v: &[i64]| Tensor::<B, 1, Int>::from_data(TensorData::new(v.to_vec(), [v.len()]), &device);
    let loss = qa_train::loss::qa_loss(
        &out,
        labels(&padded.start_positions),
        labels(&padded.end_positions),
    );
    let grads = GradientsParams::from_grads(loss.backward(), &model);
    let g: Vec<f32> = grads
        .get::<<B as burn::tensor::backend::AutodiffBackend>::InnerBackend, 2>(
            model.qa_outputs.weight.id,
        )
        .unwrap()
        .into_data()
        .to_vec()
        .unwrap();
    let before: Vec<f32> = model.qa_outputs.weight.val().into_data().to_vec().unwrap();
    let norm_before: Vec<f32> = embeddings_layer_norm(&model)
        .gamma
        .val()
        .into_data()
        .to_vec()
        .unwrap();
    let mut opt = AdamW::new(AdamWConfig {
        beta1: 0.9,
        beta2: 0.999,
        epsilon: 1e-8,
        weight_decay: 0.1,
    });
    let lr = 0.01;
    let model = opt.step(lr, model, &grads, 1.0);
    let after: Vec<f32> = model.qa_outputs.weight.val().into_data().to_vec().unwrap();
    for i in 0..before.len() {
        // Decoupled decay first, then m̂/(√v̂+ε) = g/(|g|+ε) on step 1.
        let expected = before[i] * (1.0 - lr as f32 * 0.1) - lr as f32 * g[i] / (g[i].abs() + 1e-8);
        assert!(
            (after[i] - expected).abs() < 1e-6,
            "{i}: {} vs {expected}",
            after[i]
        );
    }
    // LayerNorm weights are not decayed: their change is the Adam step alone (≤ lr).
    let norm_after: Vec<f32> = embeddings_layer_norm(&model.valid())
        .gamma
        .val()
        .into_data()
        .to_vec()
        .unwrap();
    for (a, b) in norm_after.iter().zip(&norm_before) {
        assert!((a - b).abs() <= lr as f32 * 1.0001);
    }
}

#[test]
fn bad_settings_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let tiny = Tiny::load(Dropout::Off);
    let cfg = TrainConfig {
        precision: Precision::Bf16,
        ..quiet(dir.path())
    };
    let err = tiny.train(&cfg, None).err().unwrap();
    assert!(err.to_string().contains("Bf16"), "{err}");
    let cfg = TrainConfig {
        per_device_train_batch_size: 0,
        ..quiet(dir.path())
    };
    let err = tiny.train(&cfg, None).err().unwrap();
    assert!(err.to_string().contains("batch size"), "{err}");
    // A metric the evaluation does not report would make load-best silently do nothing.
    let cfg = TrainConfig {
        load_best_model_at_end: true,
        eval_steps: Some(2),
        save_steps: Some(2),
        metric_for_best_model: Metric::Exact,
        ..quiet(dir.path())
    };
    let err = tiny.train(&cfg, Some(&tiny.eval_set())).err().unwrap();
    assert!(err.to_string().contains("exact is not reported"), "{err}");
    assert!(
        !dir.path().join("train_log.jsonl").exists(),
        "refused before any work"
    );
}

#[test]
fn load_best_model_at_end_returns_the_best_evaluated_checkpoint() {
    let _serial = serial();
    let tiny = Tiny::load(Dropout::AsConfigured);
    let dir = tempfile::tempdir().unwrap();
    let cfg = TrainConfig {
        learning_rate: 3e-3,
        max_steps: Some(8),
        per_device_train_batch_size: 8,
        eval_steps: Some(2),
        save_steps: Some(2),
        load_best_model_at_end: true,
        ..quiet(dir.path())
    };
    let out = tiny.train(&cfg, Some(&tiny.eval_set())).unwrap();
    let state = read_json(dir.path().join("trainer_state.json"));
    let evals: Vec<(u64, f64)> = state["log_history"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| Some((e["step"].as_u64()?, e["eval_f1"].as_f64()?)))
        .collect();
    assert_eq!(evals.iter().map(|e| e.0).collect::<Vec<_>>(), [2, 4, 6, 8]);
    // The first step with the highest F1 wins (later ties do not replace it).
    let best = evals
        .iter()
        .fold(evals[0], |b, e| if e.1 > b.1 { *e } else { b });
    let best_dir = dir.path().join(format!("checkpoint-{}", best.0));
    assert_eq!(state["best_checkpoint"].as_str(), best_dir.to_str());
    let saved = WeightFile::read(&dir.path().join("model.safetensors")).unwrap();
    let best_weights = WeightFile::read(&best_dir.join("model.safetensors")).unwrap();
    assert_eq!(saved.tensors, best_weights.tensors);
    assert!((out.eval_metrics.unwrap()[Metric::F1] - best.1).abs() < 1e-9);
}

#[test]
fn mixed_precision_path_with_loss_scaling_matches_f32_training() {
    let _serial = serial();
    // The CPU backend has no f16/bf16, so the mixed-precision machinery (casts around every
    // product, autodiff through them, scaled loss, unscaled update) runs with f64 products.
    let tiny = Tiny::load(Dropout::Off);
    let cpu = default_device();
    let (f32_weights, _) = linear_adam_run::<B>(&tiny, Precision::F32, None, 3, &cpu);
    let (mixed, _) = linear_adam_run::<B>(&tiny, Precision::F64, None, 3, &cpu);
    let scaled = LossScaling {
        init_scale: 1024.0,
        ..Default::default()
    };
    let (mixed_scaled, results) =
        linear_adam_run::<B>(&tiny, Precision::F64, Some(scaled), 3, &cpu);
    let d1 = max_diff(&f32_weights, &mixed);
    let d2 = max_diff(&mixed, &mixed_scaled);
    eprintln!("f32 vs f64-products: {d1:e}; unscaled vs loss scale 1024: {d2:e}");
    assert!(d1 < 1e-5, "{d1}");
    assert!(d2 < 1e-6, "{d2}");
    assert_eq!(results.skipped_steps, 0);
}

#[test]
fn overflowing_steps_are_skipped_and_the_scale_backs_off() {
    let _serial = serial();
    let tiny = Tiny::load(Dropout::Off);
    let start = tiny.start_weights();
    // 1e39 × loss overflows f32: every step is skipped until the scale has halved enough.
    let huge = LossScaling {
        init_scale: 1e39,
        growth_interval: 2,
        ..Default::default()
    };
    let (one_step, r1) =
        linear_adam_run::<B>(&tiny, Precision::F32, Some(huge), 1, &default_device());
    assert_eq!(r1.skipped_steps, 1);
    assert_eq!(
        max_diff(&start, &one_step),
        0.0,
        "a skipped step must not touch the weights"
    );
    let dir = tempfile::tempdir().unwrap();
    let cfg = TrainConfig {
        learning_rate: 0.5,
        adam_epsilon: 1.0,
        max_steps: Some(12),
        per_device_train_batch_size: 8,
        loss_scaling: Some(huge),
        ..quiet(dir.path())
    };
    let out = tiny.train(&cfg, None).unwrap();
    let log = read_log(dir.path());
    let scales = logged(&log, "loss_scale");
    let skips: Vec<u64> = log
        .iter()
        .map(|e| e["skipped_steps"].as_u64().unwrap())
        .collect();
    eprintln!("loss scales: {scales:?}; skipped {skips:?}");
    assert_eq!(scales.len(), 12);
    let skipped = out.results.skipped_steps;
    assert!((1..12).contains(&skipped), "skipped {skipped} of 12");
    assert_eq!(skips[11], skipped as u64);
    // Replay GradScaler's rule: ×0.5 on a skipped step, ×2 after every 2 good steps in a row.
    let (mut scale, mut good, mut prev_skips) = (1e39f64, 0, 0);
    for (step, (&logged, &skips)) in scales.iter().zip(&skips).enumerate() {
        assert!(skips - prev_skips <= 1);
        if skips > prev_skips {
            scale *= 0.5;
            good = 0;
        } else {
            good += 1;
            if good == 2 {
                scale *= 2.0;
                good = 0;
            }
        }
        prev_skips = skips;
        assert!(
            (logged / scale - 1.0).abs() < 1e-12,
            "step {step}: {logged} vs {scale}"
        );
    }
    let trained = export_tensors(&out.model, &tiny.config);
    assert!(trained
        .values()
        .all(|t| t.data.iter().all(|v| v.is_finite())));
    assert!(max_diff(&start, &trained) > 1e-3);
}

#[test]
fn epoch_schedules_evaluate_and_save_at_each_epoch_end() {
    let _serial = serial();
    let tiny = Tiny::load(Dropout::AsConfigured);
    let eval = tiny.eval_set();
    let dir = tempfile::tempdir().unwrap();
    // 16 windows, batch 6 → 3 steps per epoch (6 + 6 + 4), 2 epochs.
    let cfg = TrainConfig {
        learning_rate: 3e-3,
        num_train_epochs: 2.0,
        per_device_train_batch_size: 6,
        eval_strategy: Some(IntervalStrategy::Epoch),
        save_strategy: Some(IntervalStrategy::Epoch),
        load_best_model_at_end: true,
        ..quiet(dir.path())
    };
    let out = tiny.train(&cfg, Some(&eval)).unwrap();
    assert_eq!(out.results.global_step, 6);
    let state = read_json(dir.path().join("trainer_state.json"));
    let eval_steps: Vec<u64> = state["log_history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e.get("eval_f1").is_some())
        .map(|e| e["step"].as_u64().unwrap())
        .collect();
    assert_eq!(eval_steps, [3, 6]);
    let mut saved: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("checkpoint-"))
        .collect();
    saved.sort();
    assert_eq!(saved, ["checkpoint-3", "checkpoint-6"]);

    // Saving per epoch but evaluating per step cannot pick a best model: refused up front.
    let mismatched = TrainConfig {
        eval_strategy: None,
        eval_steps: Some(2),
        output_dir: dir.path().join("other"),
        ..cfg
    };
    let err = tiny.train(&mismatched, Some(&eval)).err().unwrap();
    assert!(err.to_string().contains("same schedule"), "{err}");
}

type Candle = burn::backend::Autodiff<burn_candle::Candle<f32, i64>>;

/// `--fp16` with real half-precision products: the Candle CPU backend multiplies in f16 (the
/// NdArray backend has no half types). One step of the linear AdamW above, f16 products against
/// f32 products on the same backend: the update (lr × gradient) differs only by f16 rounding.
#[test]
fn fp16_gradients_match_f32_gradients_within_f16_rounding() {
    let device = burn_candle::CandleDevice::Cpu;
    let tiny = Tiny::load(Dropout::Off);
    let start = export_tensors(&tiny.model::<Candle>(&device), &tiny.config);
    let scaling = Some(LossScaling {
        init_scale: 1024.0,
        ..Default::default()
    });
    let (w32, _) = linear_adam_run::<Candle>(&tiny, Precision::F32, None, 1, &device);
    let (w16, r16) = linear_adam_run::<Candle>(&tiny, Precision::Fp16, scaling, 1, &device);
    assert_eq!(r16.skipped_steps, 0);
    // The whole update as one vector: ‖Δw16 − Δw32‖ / ‖Δw32‖. (Per tensor would mislead: the
    // last LayerNorm bias has a true gradient of ~0, as the start/end softmax gradients sum to
    // zero over positions, so its f16 rounding residue looks huge next to it.)
    let (mut gap2, mut moved2) = (0f64, 0f64);
    for (name, t32) in &w32 {
        for ((a, b), w0) in t32.data.iter().zip(&w16[name].data).zip(&start[name].data) {
            gap2 += f64::from(a - b).powi(2);
            moved2 += f64::from(a - w0).powi(2);
        }
    }
    let rel = (gap2 / moved2).sqrt();
    eprintln!("one fp16 step vs f32 on candle-cpu: ‖Δw16 − Δw32‖ / ‖Δw32‖ = {rel:.2e}");
    assert!(rel > 0.0, "the products did not run in f16");
    assert!(rel < 1e-2, "fp16 update off by {rel}");
}

/// `--fp16` end to end with GradScaler's defaults (scale 2^16, growth after 2000 steps): it may
/// skip an early overflowing step, as torch does, and then learns as f32 does.
#[test]
fn fp16_training_with_real_half_products_tracks_f32_training() {
    let device = burn_candle::CandleDevice::Cpu;
    let tiny = Tiny::load(Dropout::Off);
    let run = |precision| {
        let dir = tempfile::tempdir().unwrap();
        let cfg = TrainConfig {
            learning_rate: 3e-3,
            max_steps: Some(40),
            per_device_train_batch_size: 8,
            precision,
            ..quiet(dir.path())
        };
        let out = tiny.train_on::<Candle>(&cfg, None, &device).unwrap();
        (out.results, read_log(dir.path()))
    };
    let (r32, log32) = run(Precision::F32);
    let (r16, log16) = run(Precision::Fp16);
    let (loss32, loss16) = (logged(&log32, "loss"), logged(&log16, "loss"));
    let tail = |l: &[f64]| l[l.len() - 5..].iter().sum::<f64>() / 5.0;
    let skipped = r16.skipped_steps;
    eprintln!(
        "candle-cpu, 40 steps: loss f32 {:.3} → {:.3} (mean of last 5), fp16 {:.3} → {:.3}; \
         fp16 skipped {skipped} step(s), final loss scale {}",
        loss32[0],
        tail(&loss32),
        loss16[0],
        tail(&loss16),
        log16[39]["loss_scale"]
    );
    assert_eq!(r32.skipped_steps, 0);
    assert_eq!(r16.precision, Precision::Fp16);
    assert!(skipped <= 2, "{skipped} of 40 steps overflowed");
    let scale = 65536.0 / f64::powi(2.0, skipped as i32);
    assert_eq!(log16[39]["loss_scale"].as_f64(), Some(scale));
    assert!(
        (loss16[0] - loss32[0]).abs() < 1e-2,
        "{} vs {}",
        loss16[0],
        loss32[0]
    );
    // Each skipped step leaves fp16 one update behind; otherwise the curves agree.
    let gap = tail(&loss16) - tail(&loss32);
    assert!(
        tail(&loss16) < loss16[0] - 2.0,
        "fp16 did not learn: {loss16:.3?}"
    );
    assert!(
        gap.abs() < 0.1 * (1 + skipped) as f64,
        "fp16 ends {gap:.3} above f32"
    );
}

/// The whole loop against the Hugging Face Trainer (fixtures/hf_trainer/make_golden.py): 20
/// full-batch steps on the same 16 windows, dropout off, lr 3e-3 with 10% warmup then linear
/// decay, weight decay 0.01 (not on biases and LayerNorm), clipping at 1.0.
/// How far a 20-step run in `precision` lands from the HF Trainer's (f32) run.
struct TrainerGap {
    loss: f64,
    grad_norm: f64,
    learning_rate: f64,
    /// Largest final-weight gap of a tensor, relative to how far HF moved it, and its name.
    weights: f32,
    worst_tensor: String,
}

#[test]
fn twenty_steps_equal_the_hugging_face_trainer() {
    let gap = twenty_steps_against_the_hugging_face_trainer(Precision::F32);
    assert!(gap.loss < 1e-5, "loss {}", gap.loss);
    assert!(gap.grad_norm < 1e-4, "grad norm {}", gap.grad_norm);
    assert!(
        gap.learning_rate < 1e-12,
        "learning rate {}",
        gap.learning_rate
    );
    // Burn's GELU backward is the tanh approximation (forward exact), so gradients reaching the
    // lower layers differ by ~1e-5 relative, and AdamW's normalisation keeps that relative.
    assert!(
        gap.weights < 1e-2,
        "{}: {} of its movement",
        gap.worst_tensor,
        gap.weights
    );
}

/// The same run with half-precision products where the backend has them (bf16 on CUDA: the
/// GPU's training-step parity), else the whole mixed-precision path with f64 products (the
/// CPU, which has no bf16), held to bf16's or f32's tolerance accordingly.
#[test]
fn mixed_precision_twenty_steps_track_the_hugging_face_trainer() {
    let device = default_device();
    let bf16 = <B as Backend>::supports_dtype(&device, burn::tensor::DType::BF16);
    let precision = if bf16 {
        Precision::Bf16
    } else {
        Precision::F64
    };
    let gap = twenty_steps_against_the_hugging_face_trainer(precision);
    // bf16 keeps 8 significant bits per operand: ~0.4% per product, f32-accumulated.
    let (loss, norm, weights) = if bf16 {
        (1e-2, 3e-2, 0.25)
    } else {
        (1e-5, 1e-4, 1e-2)
    };
    assert!(gap.loss < loss, "{precision:?} loss {}", gap.loss);
    assert!(
        gap.grad_norm < norm,
        "{precision:?} grad norm {}",
        gap.grad_norm
    );
    assert!(
        gap.learning_rate < 1e-12,
        "learning rate {}",
        gap.learning_rate
    );
    assert!(
        gap.weights < weights,
        "{precision:?} {}: {} of its movement",
        gap.worst_tensor,
        gap.weights
    );
}

fn twenty_steps_against_the_hugging_face_trainer(precision: Precision) -> TrainerGap {
    let _serial = serial();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf_trainer");
    let golden: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture.join("golden.json")).unwrap())
            .unwrap();
    let golden_weights = WeightFile::read(&fixture.join("golden_weights.safetensors")).unwrap();
    let ints = |v: &serde_json::Value| -> Vec<u32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect()
    };
    // Same windows as the Trainer saw (it had them padded to 64).
    let tiny = Tiny::load(Dropout::Off);
    let feats = &tiny.windows;
    let hf_windows = golden["windows"].as_array().unwrap();
    assert_eq!(feats.len(), hf_windows.len());
    for (ours, hf) in feats.iter().zip(hf_windows) {
        let n = ours.len();
        assert_eq!(ours.input_ids, ints(&hf["input_ids"])[..n]);
        assert_eq!(ours.token_type_ids, ints(&hf["token_type_ids"])[..n]);
        assert!(ints(&hf["attention_mask"])[n..].iter().all(|&m| m == 0));
        assert_eq!(
            ours.start_position,
            hf["start_position"].as_u64().unwrap() as usize
        );
        assert_eq!(
            ours.end_position,
            hf["end_position"].as_u64().unwrap() as usize
        );
    }

    let settings = &golden["settings"];
    let dir = tempfile::tempdir().unwrap();
    let cfg = TrainConfig {
        learning_rate: settings["learning_rate"].as_f64().unwrap(),
        weight_decay: settings["weight_decay"].as_f64().unwrap(),
        warmup_ratio: settings["warmup_ratio"].as_f64().unwrap(),
        max_grad_norm: settings["max_grad_norm"].as_f64().unwrap(),
        max_steps: Some(settings["max_steps"].as_u64().unwrap() as usize),
        per_device_train_batch_size: 16,
        precision,
        ..quiet(dir.path())
    };
    let out = tiny.train(&cfg, None).unwrap();
    let log = read_log(dir.path());
    let series = |key: &str| -> Vec<f64> {
        golden[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect()
    };
    let worst_rel = |ours: &[f64], hf: &[f64]| -> f64 {
        assert_eq!(ours.len(), hf.len());
        ours.iter()
            .zip(hf)
            .map(|(a, b)| (a - b).abs() / b.abs().max(1e-12))
            .fold(0.0, f64::max)
    };
    let loss_err = worst_rel(&logged(&log, "loss"), &series("loss"));
    let norm_err = worst_rel(&logged(&log, "grad_norm"), &series("grad_norm"));
    let lr_err = logged(&log, "learning_rate")
        .iter()
        .zip(series("learning_rate"))
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);

    // Weights, per tensor: max |ours − HF| against how far HF moved them. Left out: tensors
    // whose true gradient is exactly zero, where AdamW turns rounding noise into lr-sized
    // steps in any two implementations — attention key biases (softmax ignores a per-query
    // constant), the QA head bias and the last LayerNorm bias (start and end softmax gradients
    // each sum to zero over positions).
    let zero_gradient = |name: &str| {
        name.ends_with("attention.self.key.bias")
            || name == "qa_outputs.bias"
            || name == "bert.encoder.layer.1.output.LayerNorm.bias"
    };
    let ours = export_tensors(&out.model, &tiny.config);
    let start = tiny.start_weights();
    let word_rows = |t: &BTreeMap<String, HostTensor>| -> Vec<f32> {
        let table = &t["bert.embeddings.word_embeddings.weight"];
        let width = table.shape[1];
        ints(&golden["word_embedding_rows"])
            .iter()
            .flat_map(|&r| table.data[r as usize * width..][..width].iter().copied())
            .collect()
    };
    let max_gap = |a: &[f32], b: &[f32]| {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max)
    };
    let (mut weight_err, mut worst_tensor) = (0f32, "");
    for (name, hf) in &golden_weights.tensors {
        let (ours, start) = if name == "word_embedding_rows" {
            (word_rows(&ours), word_rows(&start))
        } else {
            (ours[name].data.clone(), start[name].data.clone())
        };
        let rel = max_gap(&ours, &hf.data) / max_gap(&start, &hf.data);
        if !zero_gradient(name) && rel > weight_err {
            (weight_err, worst_tensor) = (rel, name);
        }
    }
    eprintln!(
        "{precision:?} vs HF Trainer over 20 steps: loss rel {loss_err:.1e}, grad norm rel \
         {norm_err:.1e}, lr abs {lr_err:.1e}, final weights {weight_err:.1e} of their movement \
         ({worst_tensor})"
    );
    TrainerGap {
        loss: loss_err,
        grad_norm: norm_err,
        learning_rate: lr_err,
        weights: weight_err,
        worst_tensor: worst_tensor.to_string(),
    }
}

/// The two halves of a step, alone: gradients of a loss scaled past f32's range overflow; with
/// a loss scaler the update is skipped (weights untouched, scale halved), without one it is
/// refused as non-finite.
#[test]
fn an_overflowing_step_is_skipped_with_a_scaler_and_refused_without() {
    use qa_train::optim::{AdamW, AdamWConfig};
    use qa_train::step::{train_step, MicroBatch, Update, UpdateOutcome};
    let device = default_device();
    let tiny = Tiny::load(Dropout::Off);
    let refs: Vec<&Feature> = tiny.windows.iter().take(4).collect();
    let batch = [MicroBatch::whole(pad_batch(&refs, 0))];
    let model = tiny.model::<B>(&device);
    let grads = train_step(&model, &batch, 1, None, 1e39, 0, &device);
    assert!(grads.loss.is_finite(), "the reported loss is unscaled");
    let cfg = TrainConfig::new("unused");
    let fresh = |scaler| Update {
        optimizer: AdamW::new(AdamWConfig::from(&cfg)),
        scaler,
        max_grad_norm: 1.0,
    };
    let scaling = LossScaling {
        init_scale: 1e39,
        ..Default::default()
    };
    let mut scaled = fresh(Some(qa_train::LossScaler::new(scaling)));
    let (after, report) = scaled.apply(model.clone(), &grads.grads, 0.1);
    assert_eq!(report.outcome, UpdateOutcome::Skipped);
    assert_eq!(scaled.loss_scale(), 0.5e39);
    assert_eq!(
        max_diff(&export_tensors(&after, &tiny.config), &tiny.start_weights()),
        0.0
    );
    let (_, report) = fresh(None).apply(model, &grads.grads, 0.1);
    assert_eq!(report.outcome, UpdateOutcome::NonFinite);
    assert!(!report.grad_norm.is_finite());
}
