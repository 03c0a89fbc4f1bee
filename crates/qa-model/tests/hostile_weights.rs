//! Hostile checkpoint files: `WeightFile::read` on arbitrary, truncated and corrupted
//! `model.safetensors` / `pytorch_model.bin` bytes, and `ModelConfig::from_file` on arbitrary
//! and mangled `config.json`s. The rule: never a panic, and every error is one line naming the
//! file.

use std::collections::BTreeMap;
use std::path::Path;

use proptest::prelude::*;
use qa_model::config::MODEL_TYPES;
use qa_model::weights::{write_safetensors, HostTensor, WeightFile};
use qa_model::{ModelConfig, ModelError};
use serde_json::{json, Value};

fn shared(rel: &str) -> std::path::PathBuf {
    qa_testkit::shared_dir().join(rel)
}

/// 64 cases per property (fewer for the 4 MB PyTorch file), from a fixed seed so that CI is
/// repeatable (`PROPTEST_RNG_SEED=n` explores other inputs; `PROPTEST_CASES=n` more of them).
fn config(cases: u32) -> ProptestConfig {
    let default = ProptestConfig::default();
    ProptestConfig {
        cases: if std::env::var_os("PROPTEST_CASES").is_some() {
            default.cases
        } else {
            cases
        },
        rng_seed: match default.rng_seed {
            proptest::test_runner::RngSeed::Random => proptest::test_runner::RngSeed::Fixed(2024),
            chosen => chosen,
        },
        failure_persistence: None,
        ..default
    }
}

fn check_error(err: &ModelError, path: &Path) {
    let msg = err.to_string();
    assert!(!msg.contains('\n'), "not one line: {msg:?}");
    assert!(
        msg.contains(&path.display().to_string()),
        "error does not name {}: {msg}",
        path.display()
    );
}

/// Reads `bytes` as a weight file named `name`: never a panic; an error names the file; what
/// loads is consistent.
fn check_weights(dir: &Path, name: &str, bytes: &[u8]) {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    match WeightFile::read(&path) {
        Ok(file) => {
            for (tensor, t) in &file.tensors {
                let elements = t.shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
                assert_eq!(elements, Some(t.data.len()), "{tensor}");
            }
        }
        Err(err) => check_error(&err, &path),
    }
}

/// A small valid safetensors file: a few f32 tensors, one of them 2-D.
fn small_safetensors(dir: &Path) -> Vec<u8> {
    let mut tensors = BTreeMap::new();
    tensors.insert(
        "bert.embeddings.word_embeddings.weight".to_string(),
        HostTensor::new(vec![4, 3], (0..12).map(|i| i as f32).collect()),
    );
    tensors.insert(
        "qa_outputs.bias".to_string(),
        HostTensor::new(vec![2], vec![0.5, -0.5]),
    );
    let path = dir.join("valid.safetensors");
    write_safetensors(&path, &tensors).unwrap();
    std::fs::read(&path).unwrap()
}

/// A safetensors file whose header is the given JSON and whose data is `data_len` bytes.
fn with_header(header: &Value, data_len: usize) -> Vec<u8> {
    let header = header.to_string();
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend(std::iter::repeat_n(0u8, data_len));
    bytes
}

fn pytorch_bin() -> &'static [u8] {
    static BYTES: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    BYTES.get_or_init(|| std::fs::read(shared("golden/tiny-bert-qa/pytorch_model.bin")).unwrap())
}

// ---------------------------------------------------------------------------------------------
// Named cases

#[test]
fn empty_truncated_and_foreign_weight_files_are_named_errors() {
    let dir = tempfile::tempdir().unwrap();
    let valid = small_safetensors(dir.path());
    let mut cases = 0;
    for (name, bytes) in [
        ("model.safetensors", Vec::new()),
        ("model.safetensors", valid[..7].to_vec()),
        ("model.safetensors", valid[..valid.len() - 1].to_vec()),
        ("model.safetensors", b"{\"not\": \"weights\"}".to_vec()),
        ("model.safetensors", pytorch_bin()[..4096].to_vec()),
        ("pytorch_model.bin", Vec::new()),
        ("pytorch_model.bin", pytorch_bin()[..4096].to_vec()),
        (
            "pytorch_model.bin",
            pytorch_bin()[..pytorch_bin().len() - 100].to_vec(),
        ),
        ("pytorch_model.bin", valid.clone()),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, &bytes).unwrap();
        let err = WeightFile::read(&path).unwrap_err();
        check_error(&err, &path);
        cases += 1;
    }
    // A header claiming more data than the file holds, or offsets past its end.
    for header in [
        json!({"w": {"dtype": "F32", "shape": [1000000, 1000000], "data_offsets": [0, 8]}}),
        json!({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 800]}}),
        json!({"w": {"dtype": "F32", "shape": [u64::MAX, 2], "data_offsets": [0, 8]}}),
        json!({"w": {"dtype": "F16", "shape": [3], "data_offsets": [8, 2]}}),
    ] {
        let path = dir.path().join("model.safetensors");
        std::fs::write(&path, with_header(&header, 8)).unwrap();
        let err = WeightFile::read(&path).unwrap_err();
        check_error(&err, &path);
        cases += 1;
    }
    assert_eq!(cases, 13);
    // The valid ones read.
    let path = dir.path().join("ok.safetensors");
    std::fs::write(&path, &valid).unwrap();
    assert_eq!(WeightFile::read(&path).unwrap().tensors.len(), 2);
}

#[test]
fn configs_that_are_no_model_configs_are_named_errors() {
    let dir = tempfile::tempdir().unwrap();
    for (i, text) in [
        "",
        "   ",
        "{}",
        "[]",
        "null",
        r#"{"model_type": 7}"#,
        r#"{"model_type": "bert", "hidden_size": -1}"#,
        r#"{"model_type": "bert", "num_attention_heads": 0}"#,
        r#"{"model_type": "bert", "hidden_size": 1e30}"#,
    ]
    .into_iter()
    .enumerate()
    {
        let path = dir.path().join(format!("config{i}.json"));
        std::fs::write(&path, text).unwrap();
        let err = ModelConfig::from_file(&path).unwrap_err();
        check_error(&err, &path);
    }
}

// ---------------------------------------------------------------------------------------------
// Fuzz

/// How bytes are damaged: cut short, a byte changed, or a run of bytes overwritten, with the
/// place chosen within `region` bytes of the start (the header, the pickle) or anywhere.
#[derive(Debug, Clone)]
enum Damage {
    Truncate(prop::sample::Index),
    Flip(prop::sample::Index, u8),
    Overwrite(prop::sample::Index, Vec<u8>),
}

fn damage() -> impl Strategy<Value = (bool, Damage)> {
    let what = prop_oneof![
        any::<prop::sample::Index>().prop_map(Damage::Truncate),
        (any::<prop::sample::Index>(), any::<u8>()).prop_map(|(i, b)| Damage::Flip(i, b)),
        (
            any::<prop::sample::Index>(),
            prop::collection::vec(any::<u8>(), 1..16)
        )
            .prop_map(|(i, b)| Damage::Overwrite(i, b)),
    ];
    (prop::bool::weighted(0.8), what)
}

fn damaged(bytes: &[u8], near_start: bool, region: usize, damage: &Damage) -> Vec<u8> {
    let span = if near_start {
        bytes.len().min(region)
    } else {
        bytes.len()
    };
    let mut out = bytes.to_vec();
    if span == 0 {
        return out;
    }
    match damage {
        Damage::Truncate(at) => out.truncate(at.index(span)),
        Damage::Flip(at, b) => out[at.index(span)] = *b,
        Damage::Overwrite(at, run) => {
            let from = at.index(span);
            for (o, b) in out[from..].iter_mut().zip(run) {
                *o = *b;
            }
        }
    }
    out
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-2i64..5).prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        Just(json!(u64::MAX)),
        Just(json!(1e300)),
        Just(json!(0.5)),
        Just(json!(-0.0)),
        prop::sample::select(vec![
            "",
            "F32",
            "F16",
            "BF16",
            "F64",
            "I64",
            "U8",
            "gelu",
            "relu",
            "absolute",
            "bert",
            "distilbert",
        ])
        .prop_map(|s| Value::String(s.to_string())),
        any::<String>().prop_map(Value::String),
    ]
}

fn anything() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec(("[a-z_]{1,8}", inner), 0..4)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// JSON pointers to every value of a document, the root included.
fn pointers(value: &Value, here: String, out: &mut Vec<String>) {
    match value {
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                pointers(item, format!("{here}/{i}"), out);
            }
        }
        Value::Object(map) => {
            for (k, item) in map {
                let k = k.replace('~', "~0").replace('/', "~1");
                pointers(item, format!("{here}/{k}"), out);
            }
        }
        _ => {}
    }
    out.push(here);
}

/// One change at one place of a document: a value replaced, or removed.
#[derive(Debug, Clone)]
enum Mutation {
    Replace(prop::sample::Index, Value),
    Remove(prop::sample::Index),
}

fn mutations() -> impl Strategy<Value = Vec<Mutation>> {
    let one = prop_oneof![
        3 => (any::<prop::sample::Index>(), anything()).prop_map(|(i, v)| Mutation::Replace(i, v)),
        1 => any::<prop::sample::Index>().prop_map(Mutation::Remove),
    ];
    prop::collection::vec(one, 1..4)
}

fn mutated(mut doc: Value, mutations: &[Mutation]) -> Value {
    for m in mutations {
        let mut all = Vec::new();
        pointers(&doc, String::new(), &mut all);
        let (at, replacement) = match m {
            Mutation::Replace(at, v) => (at, Some(v)),
            Mutation::Remove(at) => (at, None),
        };
        let pointer = &all[at.index(all.len())];
        match (replacement, pointer.rsplit_once('/')) {
            (Some(v), _) => *doc.pointer_mut(pointer).unwrap() = v.clone(),
            (None, None) => doc = Value::Null,
            (None, Some((parent, last))) => match doc.pointer_mut(parent).unwrap() {
                Value::Object(map) => {
                    map.remove(&last.replace("~1", "/").replace("~0", "~"));
                }
                Value::Array(items) => {
                    items.remove(last.parse::<usize>().unwrap());
                }
                _ => unreachable!("a parent is a container"),
            },
        }
    }
    doc
}

/// The header of the small valid safetensors file, as JSON.
fn valid_header(bytes: &[u8]) -> (Value, usize) {
    let len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = serde_json::from_slice(&bytes[8..8 + len]).unwrap();
    (header, bytes.len() - 8 - len)
}

/// Real configs of every family this crate builds: the shared ones, and the BERT one under
/// each other `model_type` (the families share most keys).
fn real_configs() -> Vec<Value> {
    let read = |rel: &str| -> Value {
        serde_json::from_str(&std::fs::read_to_string(shared(rel)).unwrap()).unwrap()
    };
    let mut configs = vec![
        read("models/all-MiniLM-L6-v2/config.json"),
        read("golden/tiny-bert-qa/config.json"),
        read("golden/tiny-distilbert-qa/config.json"),
    ];
    for model_type in MODEL_TYPES {
        let mut config = configs[1].clone();
        config["model_type"] = json!(model_type);
        configs.push(config);
    }
    configs
}

proptest! {
    #![proptest_config(config(64))]

    /// Arbitrary bytes as either weight format.
    #[test]
    fn weight_files_of_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..1024)) {
        let dir = tempfile::tempdir().unwrap();
        check_weights(dir.path(), "model.safetensors", &bytes);
        check_weights(dir.path(), "pytorch_model.bin", &bytes);
    }

    /// A valid safetensors file cut short or corrupted (mostly in its header).
    #[test]
    fn damaged_safetensors(damage in damage()) {
        let dir = tempfile::tempdir().unwrap();
        let valid = small_safetensors(dir.path());
        let (near_start, damage) = damage;
        let (_, data_len) = valid_header(&valid);
        let bytes = damaged(&valid, near_start, valid.len() - data_len, &damage);
        check_weights(dir.path(), "model.safetensors", &bytes);
    }

    /// Valid safetensors headers with values replaced or removed: dtypes, shapes (huge ones
    /// included), offsets, metadata.
    #[test]
    fn mangled_safetensors_headers(mutations in mutations(), extra in 0usize..64) {
        let dir = tempfile::tempdir().unwrap();
        let (header, data_len) = valid_header(&small_safetensors(dir.path()));
        let header = mutated(header, &mutations);
        check_weights(dir.path(), "model.safetensors", &with_header(&header, data_len + extra));
    }

    /// ModelConfig::from_file on real configs with values replaced or removed, and on bytes.
    #[test]
    fn mangled_configs(which in any::<prop::sample::Index>(), mutations in mutations(),
                       bytes in prop::option::weighted(0.2, prop::collection::vec(any::<u8>(), 0..256))) {
        let dir = tempfile::tempdir().unwrap();
        let configs = real_configs();
        let doc = mutated(configs[which.index(configs.len())].clone(), &mutations);
        let path = dir.path().join("config.json");
        std::fs::write(&path, bytes.unwrap_or_else(|| doc.to_string().into_bytes())).unwrap();
        match ModelConfig::from_file(&path) {
            Ok(config) => {
                prop_assert!(config.num_heads > 0);
                let _ = config.head_dim();
                let _ = config.to_hf_json();
            }
            Err(err) => check_error(&err, &path),
        }
    }
}

proptest! {
    // Each case writes and parses the 4 MB tiny-bert-qa checkpoint.
    #![proptest_config(config(32))]

    /// The real `pytorch_model.bin` cut short or corrupted, mostly in its pickle (the first
    /// 8 KiB of the zip) or its central directory (the end).
    #[test]
    fn damaged_pytorch_checkpoints(damage in damage(), at_end in any::<bool>()) {
        let dir = tempfile::tempdir().unwrap();
        let (near_start, damage) = damage;
        let bytes = if near_start && at_end {
            // Damage the last 8 KiB: reverse, damage the start, reverse back.
            let mut reversed = pytorch_bin().to_vec();
            reversed.reverse();
            let mut out = damaged(&reversed, true, 8192, &match damage {
                // A cut at the end is a cut of the file's tail.
                Damage::Truncate(at) => Damage::Flip(at, 0),
                other => other,
            });
            out.reverse();
            out
        } else {
            damaged(pytorch_bin(), near_start, 8192, &damage)
        };
        check_weights(dir.path(), "pytorch_model.bin", &bytes);
    }
}

/// The parameter count read from a config is the checkpoint's own, and a config describing a
/// model larger than the machine's memory is refused before anything is allocated.
#[test]
fn absurd_model_sizes_are_refused_before_building() {
    let model = shared("golden/tiny-bert-qa");
    let config = ModelConfig::from_file(&model.join("config.json")).unwrap();
    let weights = WeightFile::read(&model.join("model.safetensors")).unwrap();
    let stored: usize = weights
        .tensors
        .iter()
        .filter(|(name, _)| !name.ends_with("position_ids"))
        .map(|(_, t)| t.shape.iter().product::<usize>())
        .sum();
    assert_eq!(config.parameter_count(), stored as u128);

    let dir = tempfile::tempdir().unwrap();
    for file in ["model.safetensors", "tokenizer.json", "vocab.txt"] {
        std::fs::copy(model.join(file), dir.path().join(file)).unwrap();
    }
    let mut hf: Value =
        serde_json::from_str(&std::fs::read_to_string(model.join("config.json")).unwrap()).unwrap();
    hf["hidden_size"] = json!(1_000_000_000u64);
    std::fs::write(dir.path().join("config.json"), hf.to_string()).unwrap();
    let err = qa_model::load_pretrained::<qa_model::backend::Compute>(
        dir.path(),
        None,
        0,
        &Default::default(),
    )
    .map(|_| ())
    .expect_err("refused");
    assert!(matches!(err, ModelError::TooLarge { .. }), "{err}");
    assert!(
        err.to_string().contains("more than this machine's"),
        "{err}"
    );
}
