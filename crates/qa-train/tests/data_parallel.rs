//! Data-parallel training in one process (two CPU peers over burn-collective) against one
//! device: the same weights, the same evaluation, exact resume, and refusals.

use std::collections::BTreeMap;
use std::path::Path;

use qa_data::window_file::{WindowFile, WindowMeta, WindowWriter};
use qa_data::{Example, Feature, Progress, Windows};
use qa_eval::evaluate::WINDOWS_PER_CHUNK;
use qa_eval::Metric;
use qa_model::backend::{default_device, Train};
use qa_model::checkpoint::{build_model, export_tensors};
use qa_model::weights::{HostTensor, WeightFile};
use qa_model::{ModelConfig, QaModel};
use qa_train::{
    train, train_data_parallel, CheckpointProblem, EvalSet, TrainConfig, TrainError, TrainJob,
    TrainOutcome, World,
};

mod common;
use common::{max_diff, read_log, serial};

type B = Train;

/// The tiny golden BERT without dropout, and 15 short windows of COVID-QA dev (an odd count, so
/// the last global batch splits unevenly between two peers).
struct Tiny {
    config: ModelConfig,
    weights: WeightFile,
    windows: Vec<Feature>,
    examples: Vec<Example>,
}

impl Tiny {
    fn load() -> Self {
        let (config, weights) = common::tiny_model(common::Dropout::Off);
        let (examples, with, without) = common::covid_windows(4);
        let windows: Vec<Feature> = with.into_iter().take(8).chain(without).take(15).collect();
        assert_eq!(windows.len(), 15);
        Self {
            weights,
            config,
            windows,
            examples,
        }
    }

    fn model(&self, device: &<B as burn::tensor::backend::Backend>::Device) -> QaModel<B> {
        build_model::<B>(&self.config, Some(&self.weights), 0, device)
            .unwrap()
            .0
    }

    fn eval_set(&self) -> EvalSet<'_> {
        EvalSet {
            examples: &self.examples,
            features: &self.windows,
            decode: Default::default(),
        }
    }

    fn job<'a>(&'a self, eval: Option<&'a EvalSet<'a>>) -> TrainJob<'a> {
        TrainJob {
            model_config: &self.config,
            tokenizer_dir: None,
            train_features: &self.windows,
            eval,
            card: None,
        }
    }

    /// One device, `per_device` windows a micro-batch.
    fn one_device(&self, cfg: &TrainConfig, eval: Option<&EvalSet>) -> TrainOutcome<B> {
        train(
            self.model(&default_device()),
            &self.job(eval),
            cfg,
            &default_device(),
        )
        .unwrap()
    }

    /// `peers` CPU peers in this process.
    fn peers(
        &self,
        peers: usize,
        cfg: &TrainConfig,
        eval: Option<&EvalSet>,
    ) -> qa_train::Result<TrainOutcome<B>> {
        let devices = vec![default_device(); peers];
        train_data_parallel::<B>(
            |device| Ok(self.model(device)),
            &self.job(eval),
            cfg,
            &devices,
            &World::single_node(peers),
        )
    }

    fn weights(&self, outcome: &TrainOutcome<B>) -> BTreeMap<String, HostTensor> {
        export_tensors(&outcome.model, &self.config)
    }
}

/// AdamW made linear in the gradient (ε = 1, as the accumulation test explains), so equal
/// weights mean equal gradients.
fn linear(dir: &Path, per_device: usize, accumulation: usize, steps: usize) -> TrainConfig {
    TrainConfig {
        learning_rate: 0.5,
        adam_epsilon: 1.0,
        max_steps: Some(steps),
        per_device_train_batch_size: per_device,
        gradient_accumulation_steps: accumulation,
        max_grad_norm: 0.5,
        weight_decay: 0.01,
        progress: Progress::Hidden,
        logging_steps: 1,
        ..TrainConfig::new(dir)
    }
}

/// 15 windows, global batch 4: 4 steps an epoch, the last of 3 windows (2 + 1 on two peers).
#[test]
fn two_peers_of_batch_2_equal_one_device_of_batch_4() {
    let _serial = serial();
    let tiny = Tiny::load();
    for accumulation in [1, 2] {
        let steps = 8 / accumulation; // two epochs
        let one_dir = tempfile::tempdir().unwrap();
        let one = tiny.one_device(&linear(one_dir.path(), 4, accumulation, steps), None);
        let two_dir = tempfile::tempdir().unwrap();
        let two = tiny
            .peers(2, &linear(two_dir.path(), 2, accumulation, steps), None)
            .unwrap();
        let start = export_tensors(&tiny.model(&default_device()), &tiny.config);
        let moved = max_diff(&tiny.weights(&one), &start);
        let diff = max_diff(&tiny.weights(&one), &tiny.weights(&two));
        eprintln!(
            "accumulation {accumulation}: moved {moved:e}, 1×4 vs 2×2 differ by {diff:e}, \
             collective {:.3}s",
            two.results.collective_seconds
        );
        assert!(moved > 1e-2, "training moved the weights");
        assert!(diff < 1e-5, "2 peers differ from one device by {diff}");
        assert_eq!(two.results.global_step, steps);
        assert_eq!(two.results.world_size, 2);
        assert_eq!(one.results.world_size, 1);
        assert!(two.results.collective_seconds > 0.0);
        // The logged losses are the global batch's, as on one device.
        let losses = |dir: &Path| -> Vec<f64> {
            read_log(dir)
                .iter()
                .map(|e| e["loss"].as_f64().unwrap())
                .collect()
        };
        let (one_losses, two_losses) = (losses(one_dir.path()), losses(two_dir.path()));
        assert_eq!(one_losses.len(), steps);
        assert_eq!(two_losses.len(), steps);
        for (a, b) in one_losses.iter().zip(&two_losses) {
            assert!((a - b).abs() < 1e-5, "loss {a} vs {b}");
        }
        // Rank 0 wrote the final model, and it is the trained one.
        let saved = WeightFile::read(&two_dir.path().join("model.safetensors")).unwrap();
        let trained = tiny.weights(&two);
        let name = "qa_outputs.weight";
        assert_eq!(saved.tensors[name].data, trained[name].data);
        assert!(one.results.train_samples_per_second > 0.0);
        assert!(two.results.train_samples_per_second > 0.0);
    }
}

#[test]
fn sharded_evaluation_gives_the_metrics_of_one_device() {
    let _serial = serial();
    let tiny = Tiny::load();
    let eval = tiny.eval_set();
    let cfg = |dir: &Path, per_device| TrainConfig {
        eval_steps: Some(2),
        per_device_eval_batch_size: 3,
        ..linear(dir, per_device, 1, 4)
    };
    let [one_dir, two_dir] = peers_evaluate_as_one_device(&tiny, cfg, [&eval, &eval], "");
    let evaluated = |dir: &Path| -> Vec<f64> {
        read_log(dir)
            .iter()
            .filter_map(|e| e["eval_f1"].as_f64())
            .collect()
    };
    assert_eq!(evaluated(one_dir.path()), evaluated(two_dir.path()));
    assert_eq!(evaluated(two_dir.path()).len(), 2);
}

/// Trains on one device (batch 4, evaluating `eval[0]`) and on two peers (2 each, evaluating
/// `eval[1]`) with `cfg`, and asserts equal, non-trivial final metrics; gives the run folders.
fn peers_evaluate_as_one_device(
    tiny: &Tiny,
    cfg: impl Fn(&Path, usize) -> TrainConfig,
    eval: [&EvalSet; 2],
    what: &str,
) -> [tempfile::TempDir; 2] {
    let one_dir = tempfile::tempdir().unwrap();
    let one = tiny.one_device(&cfg(one_dir.path(), 4), Some(eval[0]));
    let two_dir = tempfile::tempdir().unwrap();
    let two = tiny
        .peers(2, &cfg(two_dir.path(), 2), Some(eval[1]))
        .unwrap();
    let (a, b) = (one.eval_metrics.unwrap(), two.eval_metrics.unwrap());
    eprintln!("{what}one device {a:?}; two peers {b:?}");
    // Not a trivial agreement of two zeros: the model answers some questions right.
    assert!(a[Metric::F1] > 0.0, "{a:?}");
    for metric in [Metric::ExactMatch, Metric::F1] {
        assert!((a[metric] - b[metric]).abs() < 1e-9, "{metric:?}");
    }
    [one_dir, two_dir]
}

/// Evaluation inside training decodes a chunk of whole examples at a time, never every
/// window's logits: over more windows than two chunks hold, read from a window file, two peers
/// give the metrics of one device over the same windows in memory.
#[test]
fn sharded_evaluation_over_several_chunks_from_a_window_file_gives_the_metrics_of_one_device() {
    let _serial = serial();
    let tiny = Tiny::load();
    let (examples, with, without) = common::covid_windows(30);
    let mut windows: Vec<Feature> = with.into_iter().chain(without).collect();
    windows.sort_by_key(|w| (w.example_index, w.window));
    assert!(
        windows.len() > 2 * WINDOWS_PER_CHUNK,
        "{} windows",
        windows.len()
    );
    let files = tempfile::tempdir().unwrap();
    let path = files.path().join("eval.windows");
    let mut writer = WindowWriter::create(&path, 30_522).unwrap();
    writer.write(&windows).unwrap();
    writer.finish(&WindowMeta::default()).unwrap();
    let on_disk = Windows::File {
        file: WindowFile::open(&path).unwrap(),
        keep: None,
    };
    let eval_set = |features| EvalSet {
        examples: &examples,
        features,
        decode: Default::default(),
    };
    let (in_memory, from_file) = (eval_set(&windows), eval_set(&on_disk));
    let cfg = |dir: &Path, per_device| TrainConfig {
        eval_steps: Some(1),
        per_device_eval_batch_size: 64,
        ..linear(dir, per_device, 1, 1)
    };
    let what = format!("{} windows: ", windows.len());
    peers_evaluate_as_one_device(&tiny, cfg, [&in_memory, &from_file], &what);
}

#[test]
fn a_two_peer_run_resumes_exactly_and_refuses_another_world_size() {
    let _serial = serial();
    // With dropout: each peer draws its own masks, from its own seeds only.
    let mut tiny = Tiny::load();
    tiny.config.hidden_dropout = 0.1;
    tiny.config.attention_dropout = 0.1;
    let cfg = |dir: &Path| TrainConfig {
        save_steps: Some(2),
        ..linear(dir, 2, 1, 8)
    };
    let straight_dir = tempfile::tempdir().unwrap();
    let straight = tiny.peers(2, &cfg(straight_dir.path()), None).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let killed = TrainConfig {
        interrupt_after_steps: Some(5),
        ..cfg(dir.path())
    };
    assert!(tiny.peers(2, &killed, None).unwrap().results.interrupted);
    // One device cannot continue what two peers began: its batches would be other ones.
    let refused = train(
        tiny.model(&default_device()),
        &tiny.job(None),
        &cfg(dir.path()),
        &default_device(),
    );
    match refused {
        Err(TrainError::Checkpoint {
            what:
                CheckpointProblem::OtherWorldSize {
                    written: 2,
                    this_run: 1,
                },
            ..
        }) => {}
        Err(other) => panic!("refused for another reason: {other}"),
        Ok(_) => panic!("a one-device resume of a two-peer run was accepted"),
    }
    let resumed = tiny.peers(2, &cfg(dir.path()), None).unwrap();
    assert_eq!(
        resumed.results.resumed_from.as_deref(),
        Some(dir.path().join("checkpoint-4").as_path())
    );
    let diff = max_diff(&tiny.weights(&straight), &tiny.weights(&resumed));
    eprintln!("straight vs resumed two-peer run: {diff:e}");
    assert_eq!(diff, 0.0);
}

#[test]
fn a_failing_peer_stops_the_others_at_once() {
    let _serial = serial();
    let tiny = Tiny::load();
    let dir = tempfile::tempdir().unwrap();
    let devices = vec![default_device(); 2];
    let started = std::time::Instant::now();
    // Peer 1's model cannot be loaded; peer 0 waits for it in the weight broadcast.
    let calls = std::sync::atomic::AtomicUsize::new(0);
    let result = train_data_parallel::<B>(
        |device| {
            if calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 1 {
                Err(TrainError::World("no weights for this peer".into()))
            } else {
                Ok(tiny.model(device))
            }
        },
        &tiny.job(None),
        &linear(dir.path(), 2, 1, 4),
        &devices,
        &World::single_node(2),
    );
    let message = result.err().expect("the run fails").to_string();
    eprintln!("{message} after {:?}", started.elapsed());
    assert!(message.contains("no weights for this peer"), "{message}");
    assert!(started.elapsed().as_secs() < 30);
}
