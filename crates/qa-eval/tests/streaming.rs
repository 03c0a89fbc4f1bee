//! Evaluation a chunk of examples at a time (`qa eval` never holds every window's logits):
//! the same answers as decoding every window at once, and, chunk for chunk, byte-identical
//! whether the windows are in memory or in a window file; windows out of example order decoded
//! inside a chunk and refused across chunks.

use qa_data::window_file::{WindowFile, WindowMeta, WindowWriter};
use qa_data::{build_features, load, Example, FeatureConfig, LoadOptions, Progress, Windows};
use std::collections::HashMap;

use qa_eval::evaluate::{decode_in_chunks, decode_streamed};
use qa_eval::{decode, DecodeConfig, EvalError, Predictor};
use qa_model::backend::{default_device, Compute};
use qa_testkit::shared_dir;

/// The tiny golden BERT cutting windows of `max_length` (stride 32), and the first `questions`
/// COVID-QA dev questions.
fn tiny_model_and_questions(
    max_length: usize,
    questions: usize,
) -> (Predictor<Compute>, Vec<Example>) {
    let windows = FeatureConfig {
        max_length,
        stride: 32,
        progress: Progress::Hidden,
        ..Default::default()
    };
    let model = shared_dir().join("golden/tiny-bert-qa");
    let predictor = Predictor::<Compute>::load(&model, windows, 8, &default_device()).unwrap();
    let mut data = load(
        shared_dir().join("data/covid-qa/dev.json"),
        &LoadOptions::default(),
    )
    .unwrap();
    data.examples.truncate(questions);
    (predictor, data.examples)
}

#[test]
fn chunked_decoding_gives_the_answers_of_decoding_every_window_at_once() {
    let (predictor, examples) = tiny_model_and_questions(128, 12);
    let examples = &examples[..];
    let set = build_features(&predictor.tokenizer, examples, &predictor.windows).unwrap();
    assert!(set.features.len() > 60, "{} windows", set.features.len());
    let config = DecodeConfig {
        version_2_with_negative: true,
        ..Default::default()
    };
    let logits = predictor.window_logits(&set.features, Progress::Hidden);
    let at_once = decode(examples, &set.features, &logits, &config).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dev.windows");
    let mut writer = WindowWriter::create(&path, predictor.tokenizer.get_vocab_size(true)).unwrap();
    writer.write(&set.features).unwrap();
    writer.finish(&WindowMeta::default()).unwrap();
    let on_disk = Windows::File {
        file: WindowFile::open(&path).unwrap(),
        keep: None,
    };
    let in_memory = Windows::Memory(set.features.clone());
    for chunk in [7, 40, 10_000] {
        let from_memory = decode_in_chunks(&predictor, examples, &in_memory, &config, chunk)
            .unwrap()
            .decoded;
        let from_file = decode_in_chunks(&predictor, examples, &on_disk, &config, chunk)
            .unwrap()
            .decoded;
        assert_eq!(from_memory.examples, from_file.examples, "chunk {chunk}");
        assert_eq!(
            from_memory.predictions(),
            at_once.predictions(),
            "chunk {chunk}"
        );
        for (ours, theirs) in from_memory.examples.iter().zip(&at_once.examples) {
            assert_eq!(ours.id, theirs.id);
            let (a, b) = (ours.score_diff.unwrap(), theirs.score_diff.unwrap());
            assert!(
                (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                "{}: {a} vs {b}",
                ours.id
            );
        }
    }
}

/// Windows need example order only across chunks: with one of an example's windows moved to the
/// end, they decode as before when one chunk holds them all, and with small chunks that window
/// is refused (never dropped).
#[test]
fn windows_out_of_example_order_are_decoded_in_one_chunk_and_refused_across_chunks() {
    let (predictor, examples) = tiny_model_and_questions(96, 3);
    let examples = &examples[..];
    let set = build_features(&predictor.tokenizer, examples, &predictor.windows).unwrap();
    let config = DecodeConfig::default();
    let logits = predictor.window_logits(&set.features, Progress::Hidden);
    let at_once = decode(examples, &set.features, &logits, &config).unwrap();
    // Chunks come renumbered from their first example: a window is known by its tokens.
    let by_window: HashMap<_, _> = set
        .features
        .iter()
        .map(|f| (f.input_ids.clone(), f.offsets.clone()))
        .zip(logits)
        .collect();
    let mut moved = set.features.clone();
    moved.rotate_left(1);
    let decode_moved = |chunk| {
        decode_streamed::<EvalError>(
            examples,
            &moved,
            &config,
            chunk,
            Progress::Hidden,
            |windows| {
                Ok(windows
                    .iter()
                    .map(|w| by_window[&(w.input_ids.clone(), w.offsets.clone())].clone())
                    .collect())
            },
        )
    };
    let whole = decode_moved(10_000).unwrap().decoded;
    assert_eq!(whole.predictions(), at_once.predictions());
    let error = decode_moved(1).err().expect("refused").to_string();
    assert!(
        error.contains("window 0 of example 0 comes after that example was decoded"),
        "{error}"
    );
}
