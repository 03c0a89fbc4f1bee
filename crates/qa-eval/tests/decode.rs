//! Span decoding on hand-built windows whose best spans can be worked out by hand.

use qa_data::{Example, ExampleId, Feature};
use qa_eval::{decode, DecodeConfig};

const CONTEXT: &str = "alpha beta gamma"; // alpha 0–5, beta 6–10, gamma 11–16

fn example() -> Example {
    Example {
        id: ExampleId::Number(1),
        title: String::new(),
        question: "q".into(),
        context: CONTEXT.into(),
        answers: vec![],
        is_impossible: false,
    }
}

/// [CLS] q [SEP] alpha beta gamma [SEP]
fn window(window: usize) -> Feature {
    let offsets = vec![
        None,
        None,
        None,
        Some((0, 5)),
        Some((6, 10)),
        Some((11, 16)),
        None,
    ];
    Feature {
        example_index: 0,
        window,
        input_ids: vec![101, 1, 102, 2, 3, 4, 102],
        token_type_ids: vec![0, 0, 0, 1, 1, 1, 1],
        attention_mask: vec![1; 7],
        max_context: offsets.iter().map(Option::is_some).collect(),
        offsets,
        word_ids: Vec::new(),
        start_position: 0,
        end_position: 0,
    }
}

fn logits(start: [f32; 7], end: [f32; 7]) -> (Vec<f32>, Vec<f32>) {
    (start.to_vec(), end.to_vec())
}

#[test]
fn best_span_and_nbest_probabilities() {
    // Spans: (α,α)=5 (α,β)=9 (α,γ)=8 (β,β)=6 (β,γ)=5 (γ,γ)=3; question tokens never count.
    let l = logits([1., 7., 0., 5., 2., 0., 0.], [1., 9., 0., 0., 4., 3., 0.]);
    let d = decode(&[example()], &[window(0)], &[l], &DecodeConfig::default()).unwrap();
    let e = &d.examples[0];
    assert_eq!(e.text, "alpha beta");
    let texts: Vec<&str> = e.nbest.iter().map(|n| n.text.as_str()).collect();
    assert_eq!(
        texts,
        [
            "alpha beta",
            "alpha beta gamma",
            "beta",
            "alpha",
            "beta gamma",
            "gamma"
        ]
    );
    let scores = [9f32, 8., 6., 5., 5., 3.];
    let z: f32 = scores.iter().map(|s| (s - 9.0).exp()).sum();
    assert!((e.nbest[0].probability - 1.0 / z).abs() < 1e-6);
    assert_eq!((e.nbest[0].start_logit, e.nbest[0].end_logit), (5.0, 4.0));
    assert_eq!(e.nbest[0].offsets, [0, 10]);
    assert_eq!(d.predictions()["1"], "alpha beta");
    assert!(d.null_odds().is_empty());
}

#[test]
fn max_answer_length_and_n_best_size() {
    let l = logits([1., 7., 0., 5., 2., 0., 0.], [1., 9., 0., 0., 4., 3., 0.]);
    let cfg = DecodeConfig {
        max_answer_length: 1,
        n_best_size: 3,
        ..Default::default()
    };
    let d = decode(&[example()], &[window(0)], std::slice::from_ref(&l), &cfg).unwrap();
    // Top-3 starts (question tokens included, as utils_qa): q(7), α(5), β(2); top-3 ends:
    // q(9), β(4), γ(3). Length 1 and inside the context → only (β,β)=6.
    let texts: Vec<&str> = d.examples[0]
        .nbest
        .iter()
        .map(|n| n.text.as_str())
        .collect();
    assert_eq!(texts, ["beta"]);
    // With n_best 2 no valid span is left: utils_qa's "empty" placeholder.
    let cfg = DecodeConfig {
        n_best_size: 2,
        ..cfg
    };
    let d = decode(&[example()], &[window(0)], &[l], &cfg).unwrap();
    assert_eq!(d.examples[0].text, "empty");
}

#[test]
fn v2_null_score_is_the_minimum_over_windows_and_threshold_applies() {
    // Window 0: null 1+1=2, best span 9. Window 1: null 4+4=8, best span (γ,γ)=2+2=4.
    let w0 = logits([1., 0., 0., 5., 2., 0., 0.], [1., 0., 0., 0., 4., 3., 0.]);
    let w1 = logits([4., 0., 0., 0., 0., 2., 0.], [4., 0., 0., 0., 0., 2., 0.]);
    let feats = [window(0), window(1)];
    let cfg = DecodeConfig {
        version_2_with_negative: true,
        ..Default::default()
    };
    let d = decode(&[example()], &feats, &[w0.clone(), w1.clone()], &cfg).unwrap();
    let e = &d.examples[0];
    // score_diff = min null (2) − best non-null (9) = −7 → answer kept.
    assert_eq!(e.score_diff, Some(-7.0));
    assert_eq!(e.text, "alpha beta");
    assert!(
        e.nbest.iter().any(|n| n.text.is_empty()),
        "null answer in n-best"
    );
    // With a threshold below −7 the answer becomes "".
    let strict = DecodeConfig {
        null_score_diff_threshold: -8.0,
        ..cfg.clone()
    };
    let d = decode(&[example()], &feats, &[w0, w1], &strict).unwrap();
    assert_eq!(d.examples[0].text, "");
    assert_eq!(d.best_non_null()["1"], "alpha beta");
}

#[test]
fn max_context_filter_and_shape_errors() {
    let mut f = window(0);
    f.max_context[3] = false; // "alpha" starts are not allowed
    let l = logits([1., 0., 0., 5., 2., 0., 0.], [1., 0., 0., 0., 4., 3., 0.]);
    let cfg = DecodeConfig {
        use_max_context: true,
        ..Default::default()
    };
    let d = decode(&[example()], &[f.clone()], std::slice::from_ref(&l), &cfg).unwrap();
    assert_eq!(d.examples[0].text, "beta");
    let short = (vec![0.0; 3], vec![0.0; 3]);
    assert!(decode(&[example()], &[f.clone()], &[short], &cfg).is_err());
    assert!(decode(&[example()], &[f], &[], &cfg).is_err());
}

#[test]
fn writes_run_qa_files() {
    let dir = tempfile::tempdir().unwrap();
    let l = logits([1., 0., 0., 5., 2., 0., 0.], [1., 0., 0., 0., 4., 3., 0.]);
    let cfg = DecodeConfig {
        version_2_with_negative: true,
        ..Default::default()
    };
    let d = decode(&[example()], &[window(0)], &[l], &cfg).unwrap();
    d.write(dir.path(), "eval_").unwrap();
    let read = |name: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(dir.path().join(name)).unwrap()).unwrap()
    };
    assert_eq!(read("eval_predictions.json")["1"], "alpha beta");
    assert_eq!(read("eval_null_odds.json")["1"], -7.0);
    let nbest = read("eval_nbest_predictions.json");
    assert_eq!(nbest["1"][0]["text"], "alpha beta");
    assert!(nbest["1"][0]["probability"].as_f64().unwrap() > 0.5);
}
