//! Decoding throughput: 100,000 windows of 384 tokens (SQuAD-dev scale is ~11k) with random
//! logits. `cargo bench -p qa-eval`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use qa_data::{Example, ExampleId, Feature};
use qa_eval::decode::WindowLogits;
use qa_eval::{decode, DecodeConfig};

const WINDOWS: usize = 100_000;
const SEQ: usize = 384;
const PER_EXAMPLE: usize = 4;

fn inputs() -> (Vec<Example>, Vec<Feature>, Vec<WindowLogits>) {
    let context: String = (0..SEQ).map(|i| format!("w{i:03} ")).collect();
    let examples: Vec<Example> = (0..WINDOWS / PER_EXAMPLE)
        .map(|i| Example {
            id: ExampleId::Number(i as i64),
            title: String::new(),
            question: "q".into(),
            context: context.as_str().into(),
            answers: vec![],
            is_impossible: false,
        })
        .collect();
    // Question of 16 tokens, then context tokens of 5 chars each.
    let offsets: Vec<Option<(usize, usize)>> = (0..SEQ)
        .map(|t| {
            (16..SEQ - 1)
                .contains(&t)
                .then(|| ((t - 16) * 5, (t - 16) * 5 + 4))
        })
        .collect();
    let features: Vec<Feature> = (0..WINDOWS)
        .map(|w| Feature {
            example_index: w / PER_EXAMPLE,
            window: w % PER_EXAMPLE,
            input_ids: vec![0; SEQ],
            token_type_ids: vec![0; SEQ],
            attention_mask: vec![1; SEQ],
            max_context: offsets.iter().map(Option::is_some).collect(),
            offsets: offsets.clone(),
            word_ids: Vec::new(),
            start_position: 0,
            end_position: 0,
        })
        .collect();
    // A cheap deterministic pseudo-random generator (no dependency needed for noise).
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1u64 << 24) as f32 * 10.0 - 5.0
    };
    let logits = (0..WINDOWS)
        .map(|_| {
            (
                (0..SEQ).map(|_| next()).collect(),
                (0..SEQ).map(|_| next()).collect(),
            )
        })
        .collect();
    (examples, features, logits)
}

fn decoding(c: &mut Criterion) {
    let (examples, features, logits) = inputs();
    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Elements(WINDOWS as u64));
    group.sample_size(10);
    for v2 in [false, true] {
        let config = DecodeConfig {
            version_2_with_negative: v2,
            ..Default::default()
        };
        group.bench_function(
            if v2 {
                "100k_windows_v2"
            } else {
                "100k_windows_v1"
            },
            |b| b.iter(|| decode(&examples, &features, &logits, &config).unwrap()),
        );
    }
    group.finish();
}

criterion_group!(benches, decoding);
criterion_main!(benches);
