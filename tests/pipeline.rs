//! The whole pipeline through the library crates: load → windows → fine-tune → save as an HF
//! folder → reload → predict → decode → official score.

use qa_data::{build_features, load, load_tokenizer, FeatureConfig, LoadOptions, Progress};
use qa_eval::squad::{evaluate_v1, Gold};
use qa_eval::Metric::F1;
use qa_eval::{decode, DecodeConfig};
use qa_model::backend::{default_device, Compute, Train};
use qa_model::infer::predict_logits;
use qa_testkit::shared_dir;
use qa_train::{train, EvalSet, TrainConfig, TrainJob};

#[test]
fn fine_tune_save_reload_predict_and_score() {
    let device = default_device();
    let model_dir = shared_dir().join("golden/tiny-bert-qa");
    let data = load(
        shared_dir().join("data/covid-qa/dev.json"),
        &LoadOptions::default(),
    )
    .unwrap();
    let examples = &data.examples[..3];
    let tokenizer = load_tokenizer(&model_dir).unwrap();
    let windows = build_features(
        &tokenizer,
        examples,
        &FeatureConfig {
            max_length: 96,
            stride: 32,
            progress: Progress::Hidden,
            ..Default::default()
        },
    )
    .unwrap();
    // Train on the answer windows only: a small, learnable slice.
    let train_windows: Vec<_> = windows
        .features
        .iter()
        .filter(|f| f.start_position > 0)
        .cloned()
        .collect();
    assert!(!train_windows.is_empty());
    let eval = EvalSet {
        examples,
        features: &windows.features,
        decode: DecodeConfig::default(),
    };
    let (model, config, _) =
        qa_model::load_pretrained::<Train>(&model_dir, None, 0, &device).unwrap();
    let before = qa_train::trainer::evaluate(&model, &eval, &TrainConfig::new("unused")).unwrap();

    let out = tempfile::tempdir().unwrap();
    let cfg = TrainConfig {
        learning_rate: 3e-3,
        max_steps: Some(80),
        per_device_train_batch_size: train_windows.len().min(8),
        progress: Progress::Hidden,
        ..TrainConfig::new(out.path())
    };
    let job = TrainJob {
        model_config: &config,
        tokenizer_dir: Some(&model_dir),
        train_features: &train_windows,
        eval: Some(&eval),
        card: None,
    };
    let outcome = train(model, &job, &cfg, &device).unwrap();
    let during = outcome.eval_metrics.expect("evaluated at the end");

    // Reload what was saved, on the inference backend, and score it independently.
    let (reloaded, _, report) =
        qa_model::load_pretrained::<Compute>(out.path(), None, 0, &device).unwrap();
    assert!(
        report.initialized.is_empty(),
        "the saved model has its QA head"
    );
    let logits = predict_logits(
        &reloaded,
        &windows.features,
        4,
        0,
        &device,
        Progress::Hidden,
    );
    let decoded = decode(
        examples,
        &windows.features,
        &logits,
        &DecodeConfig::default(),
    )
    .unwrap();
    decoded.write(out.path(), "eval_").unwrap();
    let preds: std::collections::HashMap<String, String> = serde_json::from_str(
        &std::fs::read_to_string(out.path().join("eval_predictions.json")).unwrap(),
    )
    .unwrap();
    let after = evaluate_v1(&Gold::from_examples(examples), &preds);
    eprintln!(
        "F1 before {:.1}, after training {:.1} (trainer) / {:.1} (reloaded); EM {:.1}",
        before[F1], during[F1], after.f1, after.exact_match
    );
    // Saved and reloaded, the model answers exactly as it did in the trainer.
    assert!((after.f1 - during[F1]).abs() < 1e-9);
    // It learned its three questions: from (near) nothing to most of the answer tokens.
    assert!(before[F1] < 20.0, "{before:?}");
    assert!(after.f1 > 50.0, "F1 after training {}", after.f1);
}
