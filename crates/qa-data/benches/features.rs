//! Windows per second building run_qa features for COVID-QA (long articles, many windows).
//! `cargo bench -p qa-data`; the cross-language comparison is `cargo xtask bench`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use qa_data::{build_features, load, load_tokenizer, FeatureConfig, LoadOptions, Progress};
use qa_testkit::shared_dir;

fn features(c: &mut Criterion) {
    let data = load(
        shared_dir().join("data/covid-qa/dev.json"),
        &LoadOptions::default(),
    )
    .expect("shared/data/covid-qa/dev.json");
    let tokenizer =
        load_tokenizer(&shared_dir().join("models/all-MiniLM-L6-v2")).expect("tokenizer");
    let config = FeatureConfig {
        progress: Progress::Hidden,
        ..Default::default()
    };
    let windows = build_features(&tokenizer, &data.examples, &config)
        .unwrap()
        .features
        .len();
    let mut group = c.benchmark_group("features");
    group.throughput(Throughput::Elements(windows as u64));
    group.sample_size(10);
    group.bench_function("covid_dev_384_128", |b| {
        b.iter(|| build_features(&tokenizer, &data.examples, &config).unwrap())
    });
    group.finish();
}

criterion_group!(benches, features);
criterion_main!(benches);
