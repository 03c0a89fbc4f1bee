//! Window building beyond the golden file: labels, padding, tokenizer fallback, bad settings.

use qa_data::features::{pad_batch, pad_batch_in_buckets, Padding};
use qa_data::{
    build_features, load, load_tokenizer, Example, ExampleId, FeatureConfig, LoadOptions, Progress,
};
use qa_testkit::shared_dir;

fn tokenizer() -> tokenizers::Tokenizer {
    load_tokenizer(&shared_dir().join("models/all-MiniLM-L6-v2")).unwrap()
}

fn quiet(max_length: usize, stride: usize) -> FeatureConfig {
    FeatureConfig {
        max_length,
        stride,
        progress: Progress::Hidden,
        ..Default::default()
    }
}

fn example(question: &str, context: &str, answer: Option<(&str, usize)>) -> Example {
    Example {
        id: ExampleId::Text("e".into()),
        title: String::new(),
        question: question.into(),
        context: context.into(),
        answers: answer
            .map(|(t, s)| qa_data::Answer {
                text: t.into(),
                char_start: Some(s),
            })
            .into_iter()
            .collect(),
        is_impossible: answer.is_none(),
    }
}

#[test]
fn labels_point_at_answer_tokens_or_cls() {
    let context =
        "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi";
    let ex = example("which?", context, Some(("kappa lambda", 51)));
    let set = build_features(&tokenizer(), std::slice::from_ref(&ex), &quiet(16, 4)).unwrap();
    assert!(set.features.len() > 2);
    let mut labelled = 0;
    for f in &set.features {
        if f.start_position == 0 {
            assert_eq!(f.end_position, 0);
            continue;
        }
        labelled += 1;
        let (s, _) = f.offsets[f.start_position].unwrap();
        let (_, e) = f.offsets[f.end_position].unwrap();
        assert_eq!(&context[s..e], "kappa lambda");
    }
    assert!(labelled >= 1);
    assert_eq!(set.report.windows_with_answer, labelled);

    let impossible = example("which?", context, None);
    let set = build_features(&tokenizer(), &[impossible], &quiet(16, 4)).unwrap();
    assert!(set
        .features
        .iter()
        .all(|f| f.start_position == 0 && f.end_position == 0));
}

#[test]
fn label_any_answer_labels_every_window_holding_some_answer() {
    let data = load(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/defnlp"),
        &LoadOptions::default(),
    )
    .unwrap();
    let ex = &data.examples[..1];
    let first_only = build_features(&tokenizer(), ex, &quiet(24, 8)).unwrap();
    let any = build_features(
        &tokenizer(),
        ex,
        &FeatureConfig {
            label_any_answer: true,
            ..quiet(24, 8)
        },
    )
    .unwrap();
    assert_eq!(first_only.features.len(), any.features.len());
    assert!(any.report.windows_with_answer > first_only.report.windows_with_answer);
}

#[test]
fn padding_to_max_length_and_batches() {
    let ex = example("q?", "short context here", Some(("context", 6)));
    let padded = build_features(
        &tokenizer(),
        std::slice::from_ref(&ex),
        &FeatureConfig {
            padding: Padding::MaxLength,
            ..quiet(32, 8)
        },
    )
    .unwrap();
    let f = &padded.features[0];
    assert_eq!(f.len(), 32);
    assert_eq!(f.attention_mask.iter().filter(|&&m| m == 1).count(), 8);
    assert!(f.offsets[8..].iter().all(Option::is_none));

    let long = example("q?", "one two three four five six seven", None);
    let set = build_features(&tokenizer(), &[ex, long], &quiet(32, 8)).unwrap();
    let refs: Vec<_> = set.features.iter().collect();
    let batch = pad_batch(&refs, 0);
    assert_eq!(batch.batch, 2);
    assert_eq!(batch.seq_len, refs[1].len());
    assert_eq!(batch.input_ids.len(), 2 * batch.seq_len);
    assert_eq!(batch.attention_mask[..batch.seq_len].iter().sum::<i64>(), 8);
    assert_eq!(
        batch.start_positions,
        vec![set.features[0].start_position as i64, 0]
    );
    // In buckets (the GPU's few shapes): up to a multiple, never past the cap nor below the
    // longest window, the windows themselves unchanged and the rest masked.
    let longest = refs[1].len();
    let bucketed = |bucket, cap| pad_batch_in_buckets(&refs, 0, bucket, cap).seq_len;
    assert_eq!(bucketed(16, 1000), longest.next_multiple_of(16));
    assert_eq!(
        bucketed(16, longest + 1),
        (longest + 1).min(longest.next_multiple_of(16))
    );
    assert_eq!(bucketed(16, 1), longest);
    assert_eq!(bucketed(1, 1000), longest);
    let wide = pad_batch_in_buckets(&refs, 0, 64, 1000);
    assert_eq!(wide.seq_len, 64);
    for row in 0..2 {
        let at = |v: &[i64]| v[row * 64..row * 64 + refs[row].len()].to_vec();
        let narrow =
            |v: &[i64]| v[row * batch.seq_len..row * batch.seq_len + refs[row].len()].to_vec();
        assert_eq!(at(&wide.input_ids), narrow(&batch.input_ids));
        assert!(
            wide.attention_mask[row * 64 + refs[row].len()..(row + 1) * 64]
                .iter()
                .all(|&m| m == 0)
        );
    }
}

#[test]
fn question_longer_than_the_window_is_skipped_and_reported() {
    let long_q = "why ".repeat(40);
    let ex = example(&long_q, "some context", None);
    let set = build_features(&tokenizer(), &[ex], &quiet(32, 8)).unwrap();
    assert!(set.features.is_empty());
    assert_eq!(set.report.skipped.len(), 1);
    assert_eq!(set.report.skipped[0].0, "e");
}

/// `max_question_tokens` keeps the question's first tokens: the windows equal those of the
/// question written as just those tokens (cut at a word end, so both tokenize alike), and a
/// question too long for the window becomes answerable.
#[test]
fn max_question_tokens_keeps_the_questions_first_tokens() {
    let context = "The committee met in Geneva on Tuesday and approved the budget. ".repeat(12);
    let long = example(
        "Where did the committee meet when it approved the budget after a long debate",
        &context,
        None,
    );
    let short = example("Where did the committee meet", &context, None);
    let truncated = FeatureConfig {
        max_question_tokens: Some(5),
        ..quiet(64, 16)
    };
    let cut = build_features(&tokenizer(), std::slice::from_ref(&long), &truncated).unwrap();
    let whole = build_features(&tokenizer(), &[short], &quiet(64, 16)).unwrap();
    assert!(cut.features.len() > 1, "several windows");
    assert_eq!(cut.features, whole.features);
    assert_ne!(
        build_features(&tokenizer(), std::slice::from_ref(&long), &quiet(64, 16))
            .unwrap()
            .features,
        cut.features
    );
    let cramped = build_features(&tokenizer(), std::slice::from_ref(&long), &quiet(24, 8)).unwrap();
    assert_eq!(cramped.report.skipped.len(), 1);
    let roomy = FeatureConfig {
        max_question_tokens: Some(5),
        ..quiet(24, 8)
    };
    assert!(!build_features(&tokenizer(), &[long], &roomy)
        .unwrap()
        .features
        .is_empty());
    let zero = FeatureConfig {
        max_question_tokens: Some(0),
        ..quiet(64, 16)
    };
    let err = build_features(&tokenizer(), &[example("q", "c", None)], &zero).unwrap_err();
    assert!(err.to_string().contains("max_question_len"), "{err}");
}

#[test]
fn bad_settings_are_errors() {
    let ex = example("q", "c", None);
    let err = build_features(&tokenizer(), &[ex], &quiet(64, 64)).unwrap_err();
    assert!(err.to_string().contains("doc_stride"));
}

#[test]
fn vocab_txt_fallback_matches_tokenizer_json() {
    let dir = tempfile::tempdir().unwrap();
    let model = shared_dir().join("models/all-MiniLM-L6-v2");
    for f in ["vocab.txt", "tokenizer_config.json"] {
        std::fs::copy(model.join(f), dir.path().join(f)).unwrap();
    }
    let fallback = load_tokenizer(dir.path()).unwrap();
    let data = load(
        shared_dir().join("data/covid-qa/dev.json"),
        &LoadOptions::default(),
    )
    .unwrap();
    let ex = &data.examples[..5];
    let a = build_features(&tokenizer(), ex, &quiet(384, 128)).unwrap();
    let b = build_features(&fallback, ex, &quiet(384, 128)).unwrap();
    assert_eq!(a.features, b.features);
}

/// An answer the tokenizer drops entirely (zero-width and control characters) labels nothing:
/// its example is skipped and reported, not labelled with the neighbouring tokens.
#[test]
fn an_answer_of_dropped_characters_is_skipped_not_labelled_with_its_neighbours() {
    let context = "The virus binds ACE2\u{200B}\u{200B} receptors in the lung.";
    let start = context.find('\u{200B}').unwrap();
    let start = context[..start].chars().count();
    let dropped = example(
        "What does it bind?",
        context,
        Some(("\u{200B}\u{200B}", start)),
    );
    let kept = example("What does it bind?", context, Some(("ACE2", 16)));
    let set = build_features(&tokenizer(), &[dropped, kept], &quiet(64, 16)).unwrap();
    assert_eq!(set.report.skipped.len(), 1, "{:?}", set.report.skipped);
    assert!(set.report.skipped[0]
        .1
        .contains("only characters the tokenizer drops"));
    assert_eq!(set.features.len(), 1);
    assert_eq!(set.features[0].example_index, 1);
    assert!(set.features[0].start_position > 0);
}
