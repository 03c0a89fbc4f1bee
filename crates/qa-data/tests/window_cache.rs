//! Windows on disk and the windows cache: every tokenizer kind's windows (with word ids and
//! padding too) come back from a window file exactly as cut; a second `prepare` of the same
//! data reads them from the cache, equal to cutting them again; any change of data, tokenizer
//! or setting cuts them anew; `--overwrite-cache` and a damaged file do too.

use std::path::{Path, PathBuf};

use qa_data::features::Padding;
use qa_data::window_file::{feature_bytes, WindowFile, WindowMeta, WindowWriter};
use qa_data::{
    build_features, load, load_tokenizer, prepare, DataSource, FeatureConfig, LoadOptions,
    Progress, Sample, TrainWindows, WindowCache, Windows,
};

fn families() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../qa-model/tests/fixtures/families")
}

fn config(max_length: usize, stride: usize) -> FeatureConfig {
    FeatureConfig {
        max_length,
        stride,
        progress: Progress::Hidden,
        ..Default::default()
    }
}

fn round_trip(dir: &Path, features: &[qa_data::Feature], vocab: usize) -> WindowFile {
    let path = dir.join("windows");
    let mut writer = WindowWriter::create(&path, vocab).unwrap();
    writer.write(features).unwrap();
    writer.finish(&WindowMeta::default()).unwrap();
    let file = WindowFile::open(&path).unwrap();
    assert_eq!(file.read_all().unwrap(), features);
    for i in [0, features.len() / 2, features.len() - 1] {
        assert_eq!(file.get(i).unwrap(), features[i]);
    }
    file
}

#[test]
fn every_tokenizer_kinds_windows_come_back_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let data = load(families().join("examples.json"), &LoadOptions::default()).unwrap();
    for family in ["roberta", "xlm-roberta", "electra", "albert", "deberta-v2"] {
        let tokenizer = load_tokenizer(&families().join(family)).unwrap();
        for settings in [
            config(96, 24),
            FeatureConfig {
                word_ids: true,
                padding: Padding::MaxLength,
                max_question_tokens: Some(5),
                ..config(64, 16)
            },
        ] {
            let set = build_features(&tokenizer, &data.examples, &settings).unwrap();
            round_trip(dir.path(), &set.features, tokenizer.get_vocab_size(true));
        }
    }
}

/// COVID-QA's long articles in MiniLM's 384-token windows: the compact form is several times
/// smaller than the windows in memory.
#[test]
fn covid_windows_round_trip_and_shrink() {
    let shared = qa_testkit::shared_dir();
    let data = load(
        shared.join("data/covid-qa/dev.json"),
        &LoadOptions::default(),
    )
    .unwrap();
    let tokenizer = load_tokenizer(&shared.join("models/all-MiniLM-L6-v2")).unwrap();
    let examples = &data.examples[..40];
    let set = build_features(&tokenizer, examples, &config(384, 128)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = round_trip(dir.path(), &set.features, tokenizer.get_vocab_size(true));
    let in_memory: usize = set.features.iter().map(feature_bytes).sum();
    let per_window = |bytes: usize| bytes as f64 / set.features.len() as f64;
    eprintln!(
        "{} windows: {:.0} bytes each in memory, {:.0} on disk",
        set.features.len(),
        per_window(in_memory),
        per_window(file.size as usize)
    );
    assert!(
        file.size as usize * 5 < in_memory,
        "{} vs {in_memory}",
        file.size
    );
}

/// The number of cached window files in `dir`.
fn cached_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| entries.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    files.sort();
    files
}

#[test]
fn the_cache_gives_the_windows_it_was_given_and_is_rebuilt_when_an_input_changes() {
    let dir = tempfile::tempdir().unwrap();
    let cache_dir = dir.path().join("cache");
    let data = dir.path().join("examples.json");
    std::fs::copy(families().join("examples.json"), &data).unwrap();
    let source = DataSource::Path(data.clone());
    let tokenizer = load_tokenizer(&families().join("electra")).unwrap();
    let options = LoadOptions::default();
    let cache = WindowCache {
        dir: cache_dir.clone(),
        overwrite: false,
    };
    let run = |settings: &FeatureConfig, cache: Option<&WindowCache>, tokenizer| {
        prepare(
            &source,
            &options,
            settings,
            Sample::default(),
            tokenizer,
            cache,
        )
        .unwrap()
    };
    let settings = config(96, 24);
    let uncached = run(&settings, None, &tokenizer);
    assert!(matches!(uncached.windows, Windows::Memory(_)));
    assert!(cached_files(&cache_dir).is_empty());
    let first = run(&settings, Some(&cache), &tokenizer);
    // Cut straight into the cache, and read from there.
    assert!(matches!(first.windows, Windows::File { .. }));
    let files = cached_files(&cache_dir);
    assert_eq!(files.len(), 1, "{files:?}");
    let written = std::fs::metadata(&files[0]).unwrap().modified().unwrap();
    let second = run(&settings, Some(&cache), &tokenizer);
    for prepared in [&first, &second] {
        assert_eq!(
            prepared.windows.features().unwrap(),
            uncached.windows.features().unwrap()
        );
        assert_eq!(
            serde_json::to_value(&prepared.window_report).unwrap(),
            serde_json::to_value(&uncached.window_report).unwrap()
        );
        assert_eq!(prepared.examples, uncached.examples);
    }
    // The training windows that hold their answer, picked from the file's table, are the
    // ones picked in memory.
    assert_eq!(
        second
            .windows
            .select(TrainWindows::WithAnswer)
            .features()
            .unwrap(),
        uncached
            .windows
            .features()
            .unwrap()
            .iter()
            .filter(|f| f.start_position > 0)
            .cloned()
            .collect::<Vec<_>>()
    );
    // Read, not rewritten.
    assert_eq!(cached_files(&cache_dir), files);
    assert_eq!(
        std::fs::metadata(&files[0]).unwrap().modified().unwrap(),
        written
    );

    // A file holding other windows under this name (a damaged or foreign one) is never used.
    let mut writer = WindowWriter::create(&files[0], 1_000).unwrap();
    writer
        .write(&first.windows.features().unwrap()[..1])
        .unwrap();
    writer.finish(&WindowMeta::default()).unwrap();
    let cut_again = || {
        let prepared = run(&settings, Some(&cache), &tokenizer);
        assert_eq!(
            prepared.windows.features().unwrap(),
            uncached.windows.features().unwrap()
        );
    };
    cut_again();
    std::fs::write(&files[0], b"not windows").unwrap();
    cut_again();

    // Every input is in the key: a setting, the sample, the tokenizer, the data's bytes.
    run(&config(96, 32), Some(&cache), &tokenizer);
    let word_ids = FeatureConfig {
        word_ids: true,
        ..settings.clone()
    };
    run(&word_ids, Some(&cache), &tokenizer);
    prepare(
        &source,
        &options,
        &settings,
        Sample::first(Some(3)),
        &tokenizer,
        Some(&cache),
    )
    .unwrap();
    let albert = load_tokenizer(&families().join("albert")).unwrap();
    run(&settings, Some(&cache), &albert);
    let text = std::fs::read_to_string(&data).unwrap();
    std::fs::write(&data, text.replace("Warsaw", "Krakow")).unwrap();
    let changed = run(&settings, Some(&cache), &tokenizer);
    assert_ne!(
        changed.windows.features().unwrap(),
        uncached.windows.features().unwrap()
    );
    assert_eq!(cached_files(&cache_dir).len(), 6);

    // A cache that cannot be written (here its folder is a file) costs a warning, not the run.
    let blocked = WindowCache {
        dir: data.clone(),
        overwrite: false,
    };
    let in_memory = run(&settings, Some(&blocked), &tokenizer);
    assert!(matches!(in_memory.windows, Windows::Memory(_)));
    assert_eq!(
        in_memory.windows.features().unwrap(),
        changed.windows.features().unwrap()
    );

    // --overwrite-cache cuts again and replaces the file.
    let overwrite = WindowCache {
        overwrite: true,
        ..cache.clone()
    };
    let before = cached_files(&cache_dir);
    run(&settings, Some(&overwrite), &tokenizer);
    assert_eq!(cached_files(&cache_dir), before);
}
