//! Proof that the RoBERTa, XLM-RoBERTa, ELECTRA, ALBERT and DeBERTa-v2/v3 ports compute what
//! `transformers` computes: random tiny `*ForQuestionAnswering` checkpoints and their PyTorch
//! logits, made by `tests/fixtures/families/make_golden.py` (see its header), and save → reload
//! round trips.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use qa_data::features::PaddedBatch;
use qa_model::backend::{default_device, Compute};
use qa_model::checkpoint::{build_model, export_tensors, load_pretrained, save_pretrained};
use qa_model::config::Architecture;
use qa_model::model::{QaBatch, MASKED};
use qa_model::weights::WeightFile;
use qa_model::{InferencePrecision, ModelConfig};
use serde_json::Value;

type B = Compute;

const FAMILIES: [(&str, Architecture); 5] = [
    ("roberta", Architecture::Roberta),
    ("xlm-roberta", Architecture::XlmRoberta),
    ("electra", Architecture::Electra),
    ("albert", Architecture::Albert),
    ("deberta-v2", Architecture::DebertaV2),
];

/// Checkpoints of the same families with other settings, run on their family's windows:
/// DeBERTa with v2's options (separate position projections, `pos_att_type` as a string, no
/// buckets, absolute positions, token types, `embed_proj`) and with `c2p` alone.
const VARIANTS: [(&str, Architecture); 2] = [
    ("deberta-v2-options", Architecture::DebertaV2),
    ("deberta-v2-c2p", Architecture::DebertaV2),
];

/// Every fixture checkpoint made by `make_golden.py`.
fn checkpoints() -> impl Iterator<Item = (&'static str, Architecture)> {
    FAMILIES.into_iter().chain(VARIANTS)
}

fn fixture(family: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/families")
        .join(family)
}

struct Golden {
    batch: PaddedBatch,
    floats: HashMap<String, Vec<f32>>,
}

fn read_golden(path: &Path) -> Golden {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let ints = |name: &str| -> (Vec<usize>, Vec<i64>) {
        let v = st.tensor(name).unwrap();
        assert_eq!(v.dtype(), safetensors::Dtype::I64, "{name}");
        let data = v
            .data()
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
            .collect();
        (v.shape().to_vec(), data)
    };
    let (shape, input_ids) = ints("input_ids");
    let attention_mask = ints("attention_mask").1;
    // RoBERTa's tokenizers return no token types; HF then runs on zeros.
    let token_type_ids = if st.names().contains(&"token_type_ids") {
        ints("token_type_ids").1
    } else {
        vec![0; input_ids.len()]
    };
    let floats = ["start_logits", "end_logits"]
        .into_iter()
        .map(|name| {
            let v = st.tensor(name).unwrap();
            assert_eq!(v.shape(), shape, "{name}");
            let data = v
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect();
            (name.to_string(), data)
        })
        .collect();
    Golden {
        batch: PaddedBatch {
            batch: shape[0],
            seq_len: shape[1],
            input_ids,
            token_type_ids,
            attention_mask,
            start_positions: vec![],
            end_positions: vec![],
        },
        floats,
    }
}

fn host<Bk: Backend, const D: usize>(t: Tensor<Bk, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().into_vec().unwrap()
}

/// Max |ours − golden| over unpadded positions.
fn max_error(ours: &[f32], golden: &[f32], mask: &[i64]) -> f32 {
    assert_eq!(ours.len(), golden.len());
    mask.iter()
        .zip(ours.iter().zip(golden))
        .filter(|(&m, _)| m == 1)
        .map(|(_, (a, b))| (a - b).abs())
        .fold(0.0, f32::max)
}

#[test]
fn logits_match_pytorch_within_1e5_for_every_family() {
    let device = default_device();
    for (family, architecture) in checkpoints() {
        let dir = fixture(family);
        let golden = read_golden(&dir.join("golden_logits.safetensors"));
        let (model, config, report) = load_pretrained::<B>(&dir, None, 0, &device).unwrap();
        assert_eq!(config.architecture, architecture, "{family}");
        assert!(
            report.initialized.is_empty(),
            "{family}: {:?}",
            report.initialized
        );
        assert!(report.unused.is_empty(), "{family}: {:?}", report.unused);
        let out = model.forward(&QaBatch::from_padded(&golden.batch, &device));
        let mask = &golden.batch.attention_mask;
        let (start, end) = (host(out.start_logits), host(out.end_logits));
        let err = max_error(&start, &golden.floats["start_logits"], mask).max(max_error(
            &end,
            &golden.floats["end_logits"],
            mask,
        ));
        let scale = golden.floats["start_logits"]
            .iter()
            .fold(0f32, |m, v| m.max(v.abs()));
        eprintln!(
            "{family}: max abs logit error {err:e} over {} windows (max |logit| {scale})",
            golden.batch.batch
        );
        assert!(err <= 1e-5, "{family}: max error {err}");
        // The random weights make the logits vary: the comparison is not of near-constants.
        assert!(scale > 1.0, "{family}: logits too flat ({scale})");
        for (i, &m) in mask.iter().enumerate() {
            if m == 0 {
                assert_eq!((start[i], end[i]), (MASKED, MASKED), "{family}");
            }
        }
    }
}

/// Every family's fixture, BERT's and DistilBERT's included (from `../shared/golden`).
fn every_family_fixture() -> Vec<(String, PathBuf)> {
    let mut dirs: Vec<(String, PathBuf)> = FAMILIES
        .iter()
        .map(|(family, _)| (family.to_string(), fixture(family)))
        .collect();
    for tiny in ["tiny-bert-qa", "tiny-distilbert-qa"] {
        dirs.push((
            tiny.into(),
            qa_testkit::shared_dir().join("golden").join(tiny),
        ));
    }
    dirs
}

#[test]
fn int8_and_bf16_logits_stay_near_pytorch_for_every_family() {
    let device = default_device();
    for (family, dir) in every_family_fixture() {
        let golden = read_golden(&dir.join("golden_logits.safetensors"));
        let (model, _, _) = load_pretrained::<B>(&dir, None, 0, &device).unwrap();
        let batch = QaBatch::from_padded(&golden.batch, &device);
        let mask = &golden.batch.attention_mask;
        let scale = golden.floats["start_logits"]
            .iter()
            .chain(&golden.floats["end_logits"])
            .fold(0f32, |m, v| m.max(v.abs()));
        let f32_out = model.forward(&batch);
        let f32_logits = [host(f32_out.start_logits), host(f32_out.end_logits)].concat();
        // Bounds relative to the largest logit: int8's rounding (1/255 of each row's range,
        // 1/254 of each column's) and bf16's (2⁻⁹ relative) compound over the layers; a
        // transposed, stale or skipped weight is off by the logits' own size.
        for (precision, bound) in [
            (InferencePrecision::Bf16, 0.02),
            (InferencePrecision::Int8, 0.06),
        ] {
            let low = model.clone().with_precision(precision, &device).unwrap();
            assert_eq!(low.precision(), precision);
            let out = low.forward(&batch);
            let (start, end) = (host(out.start_logits), host(out.end_logits));
            let err = max_error(&start, &golden.floats["start_logits"], mask).max(max_error(
                &end,
                &golden.floats["end_logits"],
                mask,
            ));
            eprintln!("{family} {precision}: max logit error {err:.5} (max |logit| {scale:.3})");
            assert!(
                err <= bound * scale,
                "{family} {precision}: error {err} of {scale}"
            );
            // The low-precision products did run.
            let ours = [start.clone(), end.clone()].concat();
            assert_ne!(ours, f32_logits, "{family} {precision}: logits equal f32's");
            for (i, &m) in mask.iter().enumerate() {
                if m == 0 {
                    assert_eq!((start[i], end[i]), (MASKED, MASKED), "{family}");
                }
            }
        }
    }
}

#[test]
fn save_then_reload_is_exact_and_keeps_hf_names_and_classes() {
    let device = default_device();
    for (family, architecture) in checkpoints() {
        let src = fixture(family);
        let golden = read_golden(&src.join("golden_logits.safetensors"));
        let batch = QaBatch::from_padded(&golden.batch, &device);
        let (model, config, _) = load_pretrained::<B>(&src, None, 0, &device).unwrap();
        let out = tempfile::tempdir().unwrap();
        save_pretrained(&model, &config, out.path(), Some(&src)).unwrap();
        for f in ["config.json", "model.safetensors", "tokenizer.json"] {
            assert!(out.path().join(f).is_file(), "{family}: {f} not written");
        }
        // A slow tokenizer's SentencePiece model travels with the folder (DeBERTa's spm.model).
        for f in qa_data::tokenizer::SENTENCEPIECE_FILES {
            assert_eq!(
                out.path().join(f).is_file(),
                src.join(f).is_file(),
                "{family}: {f}"
            );
        }
        // Same tensors, names and shapes as the file transformers wrote.
        let ours = WeightFile::read(&out.path().join("model.safetensors")).unwrap();
        let theirs = WeightFile::read(&src.join("model.safetensors")).unwrap();
        assert_eq!(ours.tensors, theirs.tensors, "{family}");
        let saved: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.path().join("config.json")).unwrap())
                .unwrap();
        assert_eq!(
            saved["architectures"][0],
            architecture.qa_class(),
            "{family}"
        );
        assert_eq!(saved["model_type"], architecture.model_type(), "{family}");
        // The config reads back as the same settings (DeBERTa's included).
        let reread = ModelConfig::from_hf(saved.clone()).unwrap();
        assert_eq!(
            ModelConfig {
                hf: Value::Null,
                ..reread
            },
            ModelConfig {
                hf: Value::Null,
                ..config.clone()
            },
            "{family}"
        );
        let (reloaded, reconfig, _) = load_pretrained::<B>(out.path(), None, 0, &device).unwrap();
        assert_eq!(reconfig.architecture, architecture);
        let (a, b) = (model.forward(&batch), reloaded.forward(&batch));
        assert_eq!(host(a.start_logits), host(b.start_logits), "{family}");
        assert_eq!(host(a.end_logits), host(b.end_logits), "{family}");
    }
}

#[test]
fn fresh_models_of_every_family_save_a_config_that_reads_back() {
    let device = default_device();
    for architecture in Architecture::ALL {
        let config = ModelConfig::small(architecture, 40, 16, 2, 2, 24);
        let (model, report) = build_model::<B>(&config, None, 3, &device).unwrap();
        let tensors = export_tensors(&model, &config);
        assert_eq!(report.initialized.len(), tensors.len(), "{architecture:?}");
        let out = tempfile::tempdir().unwrap();
        save_pretrained(&model, &config, out.path(), None).unwrap();
        let (reloaded, reconfig, report) =
            load_pretrained::<B>(out.path(), None, 0, &device).unwrap();
        assert!(report.initialized.is_empty(), "{architecture:?}");
        assert_eq!(reconfig.architecture, architecture);
        assert_eq!(
            (
                reconfig.embedding_size,
                reconfig.hidden_act,
                reconfig.pad_token_id
            ),
            (
                config.embedding_size,
                config.hidden_act,
                config.pad_token_id
            ),
            "{architecture:?}"
        );
        assert_eq!(
            export_tensors(&reloaded, &reconfig),
            tensors,
            "{architecture:?}"
        );
    }
}

#[test]
fn roberta_positions_skip_padding_and_start_after_the_padding_index() {
    let device = default_device();
    let (model, _, _) = load_pretrained::<B>(&fixture("roberta"), None, 0, &device).unwrap();
    let qa_model::model::Encoder::Roberta(roberta) = &model.encoder else {
        panic!("not RoBERTa");
    };
    // `<s> a b </s> <pad> <pad>` with padding id 1.
    let ids = Tensor::<B, 2, burn::tensor::Int>::from_data([[0, 50, 60, 2, 1, 1]], &device);
    let positions: Vec<i64> = roberta
        .embeddings
        .position_ids(ids)
        .into_data()
        .convert::<i64>()
        .into_vec()
        .unwrap();
    assert_eq!(positions, [2, 3, 4, 5, 1, 1]);
    // Windows are capped so that positions stay inside the 514-row table.
    let config = ModelConfig::from_file(&fixture("roberta").join("config.json")).unwrap();
    assert_eq!(config.max_window_length(), 512);
}

#[test]
fn albert_shares_layers_across_passes_as_hf_groups_them() {
    let device = default_device();
    let (model, config, _) = load_pretrained::<B>(&fixture("albert"), None, 0, &device).unwrap();
    assert_eq!(
        (
            config.num_layers,
            config.num_hidden_groups,
            config.inner_group_num
        ),
        (4, 2, 2)
    );
    let qa_model::model::Encoder::Albert(albert) = &model.encoder else {
        panic!("not ALBERT");
    };
    let groups: Vec<usize> = (0..4).map(|i| albert.encoder.group_of(i)).collect();
    assert_eq!(groups, [0, 0, 1, 1]);
    // Each shared layer is stored once, under its group and index.
    let names = qa_model::hf_param_names(&model);
    let layers: std::collections::BTreeSet<&str> = names
        .iter()
        .filter_map(|p| p.name.strip_suffix(".attention.query.weight"))
        .collect();
    assert_eq!(
        layers.into_iter().collect::<Vec<_>>(),
        [
            "albert.encoder.albert_layer_groups.0.albert_layers.0",
            "albert.encoder.albert_layer_groups.0.albert_layers.1",
            "albert.encoder.albert_layer_groups.1.albert_layers.0",
            "albert.encoder.albert_layer_groups.1.albert_layers.1",
        ]
    );
    // HF's float grouping when the groups do not divide the passes: 3 passes over 2 groups.
    let mut odd = ModelConfig::small(Architecture::Albert, 10, 8, 3, 2, 16);
    odd.num_hidden_groups = 2;
    let model = qa_model::QaModel::<B>::skeleton(&odd, &device);
    let qa_model::model::Encoder::Albert(albert) = &model.encoder else {
        panic!("not ALBERT");
    };
    let groups: Vec<usize> = (0..3).map(|i| albert.encoder.group_of(i)).collect();
    assert_eq!(groups, [0, 0, 1]);
}

/// HF's `make_log_bucket_position` over distances −1023..1023, for DeBERTa-v3-base's setting
/// (256 buckets, 512 positions) and others, as `make_golden.py` recorded it.
#[test]
fn deberta_log_buckets_equal_transformers() {
    let text = std::fs::read_to_string(fixture("deberta-v2").join("log_buckets.json")).unwrap();
    let golden: Value = serde_json::from_str(&text).unwrap();
    let cases = golden["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 4);
    for case in cases {
        let positions = qa_model::deberta_v2::RelativePositions {
            max_relative_positions: case["max_position"].as_u64().unwrap() as usize,
            position_buckets: Some(case["bucket_size"].as_u64().unwrap() as usize),
        };
        let first = case["first_relative"].as_i64().unwrap();
        let buckets = case["buckets"].as_array().unwrap();
        assert_eq!(buckets.len(), 2047);
        for (i, bucket) in buckets.iter().enumerate() {
            let relative = first + i as i64;
            assert_eq!(
                positions.bucket(relative),
                bucket.as_i64().unwrap(),
                "{positions:?}: distance {relative}"
            );
        }
    }
}

/// DeBERTa's parameters as counted from the config (what the memory check refuses by) are the
/// checkpoint's own, whatever the settings.
#[test]
fn deberta_parameter_counts_are_the_checkpoints() {
    for (family, _) in checkpoints().filter(|(_, a)| *a == Architecture::DebertaV2) {
        let dir = fixture(family);
        let config = ModelConfig::from_file(&dir.join("config.json")).unwrap();
        let weights = WeightFile::read(&dir.join("model.safetensors")).unwrap();
        let stored: usize = weights
            .tensors
            .values()
            .map(|t| t.shape.iter().product::<usize>())
            .sum();
        assert_eq!(config.parameter_count(), stored as u128, "{family}");
    }
}
