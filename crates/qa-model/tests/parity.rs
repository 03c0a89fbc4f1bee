//! Proof that the Burn models compute what Hugging Face `transformers` computes: outputs of the
//! real checkpoints in `shared/` against the golden tensors PyTorch produced.

use std::path::Path;

use burn::tensor::backend::Backend;
use burn::tensor::{FloatDType, Tensor};
use qa_data::features::PaddedBatch;
use qa_model::backend::{default_device, Compute};
use qa_model::checkpoint::{build_model, load_pretrained, save_pretrained};
use qa_model::model::{QaBatch, MASKED};
use qa_model::weights::WeightFile;

type B = Compute;

struct Golden {
    batch: PaddedBatch,
    floats: std::collections::HashMap<String, (Vec<usize>, Vec<f32>)>,
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
    let token_type_ids = if st.names().contains(&"token_type_ids") {
        ints("token_type_ids").1
    } else {
        vec![0; input_ids.len()]
    };
    let mut floats = std::collections::HashMap::new();
    for (name, v) in st.tensors() {
        if v.dtype() == safetensors::Dtype::F32 {
            let data = v
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect();
            floats.insert(name, (v.shape().to_vec(), data));
        }
    }
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

/// Max |ours − golden| over unmasked positions; `width` values per position.
fn max_error(ours: &[f32], golden: &[f32], mask: &[i64], width: usize) -> f32 {
    assert_eq!(ours.len(), golden.len());
    let mut worst = 0f32;
    for (pos, &m) in mask.iter().enumerate() {
        if m == 0 {
            continue;
        }
        for j in 0..width {
            let i = pos * width + j;
            worst = worst.max((ours[i] - golden[i]).abs());
        }
    }
    worst
}

fn shared(rel: &str) -> std::path::PathBuf {
    qa_testkit::shared_dir().join(rel)
}

#[test]
fn minilm_last_hidden_state_matches_pytorch_within_1e4() {
    let device = default_device();
    let golden = read_golden(&shared("golden/minilm_encoder.safetensors"));
    let (model, config, report) =
        load_pretrained::<B>(&shared("models/all-MiniLM-L6-v2"), None, 0, &device).unwrap();
    assert_eq!(config.hidden_size, 384);
    // The base checkpoint has no QA head; nothing else may be missing.
    assert_eq!(
        report.initialized,
        vec!["qa_outputs.weight", "qa_outputs.bias"]
    );
    let hidden = model.encode(&QaBatch::from_padded(&golden.batch, &device));
    let (shape, expected) = &golden.floats["last_hidden_state"];
    assert_eq!(hidden.dims().to_vec(), *shape);
    let err = max_error(&host(hidden), expected, &golden.batch.attention_mask, 384);
    eprintln!("MiniLM last_hidden_state max abs error: {err:e}");
    assert!(err <= 1e-4, "max error {err}");
}

/// The mixed-precision forward (products cast, the rest f32) that `--bf16` training uses: bf16
/// products on CUDA; on the CPU, which has no half types, f64 products run the same casts.
#[test]
fn minilm_mixed_precision_forward_stays_close_to_pytorch_f32() {
    let (dtype, bound) = if cfg!(feature = "cuda") {
        // bf16 keeps 8 mantissa bits: ~0.4% per product, compounded over 6 layers.
        (FloatDType::BF16, 0.03)
    } else {
        (FloatDType::F64, 1e-5)
    };
    let device = default_device();
    let golden = read_golden(&shared("golden/minilm_encoder.safetensors"));
    let (model, _, _) =
        load_pretrained::<B>(&shared("models/all-MiniLM-L6-v2"), None, 0, &device).unwrap();
    let hidden = model.encode_with(&QaBatch::from_padded(&golden.batch, &device), Some(dtype));
    let (_, expected) = &golden.floats["last_hidden_state"];
    let err = max_error(&host(hidden), expected, &golden.batch.attention_mask, 384);
    let scale = expected.iter().fold(0f32, |m, v| m.max(v.abs()));
    eprintln!(
        "MiniLM last_hidden_state with {dtype:?} products: max abs error {err:e} ({:e} of max |value| {scale})",
        err / scale
    );
    assert!(err / scale <= bound, "relative error {}", err / scale);
}

/// Real half-precision products on the CPU: the Candle backend multiplies in f16 (the
/// autocast-style casts are the ones `--fp16` runs on CUDA). Its CPU matmul has no bf16.
#[test]
fn minilm_fp16_products_stay_close_to_f32_products() {
    type Half = burn_candle::Candle<f32, i64>;
    let device = burn_candle::CandleDevice::Cpu;
    let golden = read_golden(&shared("golden/minilm_encoder.safetensors"));
    let (model, _, _) =
        load_pretrained::<Half>(&shared("models/all-MiniLM-L6-v2"), None, 0, &device).unwrap();
    let batch = QaBatch::from_padded(&golden.batch, &device);
    let (_, expected) = &golden.floats["last_hidden_state"];
    let mask = &golden.batch.attention_mask;
    let f32_hidden = host(model.encode(&batch));
    let f16_hidden = host(model.encode_with(&batch, Some(FloatDType::F16)));
    let scale = f32_hidden.iter().fold(0f32, |m, v| m.max(v.abs()));
    let vs_pytorch = max_error(&f32_hidden, expected, mask, 384) / scale;
    let f16_err = max_error(&f16_hidden, &f32_hidden, mask, 384) / scale;
    eprintln!(
        "MiniLM last_hidden_state on candle-cpu: f16 products vs f32 products {f16_err:e}, \
         f32 vs PyTorch {vs_pytorch:e} (relative to max |value| {scale})"
    );
    // Candle's GELU is the tanh approximation, hence a looser match to PyTorch than NdArray's;
    // the comparison that matters is f16 against f32 products on the same backend.
    assert!(vs_pytorch <= 2e-3, "candle f32 vs PyTorch {vs_pytorch}");
    // f16 keeps 11 significant bits: ~0.05% per rounding, compounded over 6 layers.
    assert!(f16_err <= 5e-3, "f16 relative error {f16_err}");
    assert!(
        f16_err > 1e-5,
        "the products did not run in f16 ({f16_err})"
    );
}

fn check_qa_logits(dir: &str, weights: Option<&str>) -> f32 {
    let device = default_device();
    let dir = shared(dir);
    let golden = read_golden(&dir.join("golden_logits.safetensors"));
    let weights = weights.map(|w| dir.join(w));
    let (model, _, report) = load_pretrained::<B>(&dir, weights.as_deref(), 0, &device).unwrap();
    assert!(report.initialized.is_empty(), "{:?}", report.initialized);
    let out = model.forward(&QaBatch::from_padded(&golden.batch, &device));
    let mask = &golden.batch.attention_mask;
    let start = host(out.start_logits);
    let end = host(out.end_logits);
    let err = max_error(&start, &golden.floats["start_logits"].1, mask, 1).max(max_error(
        &end,
        &golden.floats["end_logits"].1,
        mask,
        1,
    ));
    // Padded positions are masked so they can never be chosen.
    for (i, &m) in mask.iter().enumerate() {
        if m == 0 {
            assert_eq!((start[i], end[i]), (MASKED, MASKED));
        }
    }
    err
}

#[test]
fn tiny_bert_qa_from_safetensors_matches_within_1e5() {
    let err = check_qa_logits("golden/tiny-bert-qa", Some("model.safetensors"));
    eprintln!("tiny-bert-qa (safetensors) max abs logit error: {err:e}");
    assert!(err <= 1e-5, "max error {err}");
}

#[test]
fn tiny_bert_qa_from_pytorch_bin_matches_within_1e5() {
    let err = check_qa_logits("golden/tiny-bert-qa", Some("pytorch_model.bin"));
    eprintln!("tiny-bert-qa (pytorch_model.bin) max abs logit error: {err:e}");
    assert!(err <= 1e-5, "max error {err}");
}

#[test]
fn tiny_distilbert_qa_matches_within_1e5() {
    let err = check_qa_logits("golden/tiny-distilbert-qa", None);
    eprintln!("tiny-distilbert-qa max abs logit error: {err:e}");
    assert!(err <= 1e-5, "max error {err}");
}

#[test]
fn save_then_load_gives_identical_logits_and_hf_names() {
    let device = default_device();
    for name in ["golden/tiny-bert-qa", "golden/tiny-distilbert-qa"] {
        let src = shared(name);
        let golden = read_golden(&src.join("golden_logits.safetensors"));
        let batch = QaBatch::from_padded(&golden.batch, &device);
        let (model, config, _) = load_pretrained::<B>(&src, None, 0, &device).unwrap();
        let out = tempfile::tempdir().unwrap();
        save_pretrained(&model, &config, out.path(), Some(&src)).unwrap();
        for f in [
            "config.json",
            "model.safetensors",
            "tokenizer.json",
            "vocab.txt",
        ] {
            assert!(out.path().join(f).is_file(), "{name}: {f} not written");
        }
        // Same tensor names and shapes as the HF original (which transformers wrote).
        let ours = WeightFile::read(&out.path().join("model.safetensors")).unwrap();
        let theirs = WeightFile::read(&src.join("model.safetensors")).unwrap();
        let shapes = |w: &WeightFile| {
            w.tensors
                .iter()
                .map(|(k, t)| (k.clone(), t.shape.clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(shapes(&ours), shapes(&theirs), "{name}");
        assert_eq!(
            ours.tensors, theirs.tensors,
            "{name}: weights changed on the way"
        );
        let saved_config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.path().join("config.json")).unwrap())
                .unwrap();
        assert!(saved_config["architectures"][0]
            .as_str()
            .unwrap()
            .ends_with("ForQuestionAnswering"));
        let (reloaded, _, _) = load_pretrained::<B>(out.path(), None, 0, &device).unwrap();
        let a = model.forward(&batch);
        let b = reloaded.forward(&batch);
        assert_eq!(host(a.start_logits), host(b.start_logits), "{name}");
        assert_eq!(host(a.end_logits), host(b.end_logits), "{name}");
    }
}

#[test]
fn checkpoint_errors_name_the_tensor() {
    let device = default_device();
    let src = shared("golden/tiny-bert-qa");
    let file = WeightFile::read(&src.join("model.safetensors")).unwrap();
    // A config whose vocabulary disagrees with the checkpoint.
    let mut config = qa_model::ModelConfig::from_file(&src.join("config.json")).unwrap();
    config.vocab_size = 100;
    let err = build_model::<B>(&config, Some(&file), 0, &device)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("bert.embeddings.word_embeddings.weight") && err.contains("[100, 32]"),
        "{err}"
    );
    // A checkpoint missing an encoder tensor.
    let mut broken = file.clone();
    broken
        .tensors
        .remove("bert.encoder.layer.1.output.dense.weight");
    let config = qa_model::ModelConfig::from_file(&src.join("config.json")).unwrap();
    let err = build_model::<B>(&config, Some(&broken), 0, &device)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("bert.encoder.layer.1.output.dense.weight") && err.contains("missing"),
        "{err}"
    );
    // Unknown model types are refused.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.json"), r#"{"model_type": "gpt2"}"#).unwrap();
    let err = load_pretrained::<B>(dir.path(), None, 0, &device)
        .unwrap_err()
        .to_string();
    assert!(err.contains("gpt2"), "{err}");
}

#[test]
fn fresh_qa_head_is_seeded_normal_with_initializer_range() {
    let device = default_device();
    let load = |seed| {
        load_pretrained::<B>(&shared("models/all-MiniLM-L6-v2"), None, seed, &device)
            .unwrap()
            .0
    };
    let w = |m: &qa_model::QaModel<B>| host(m.qa_outputs.weight.val());
    let a = w(&load(42));
    assert_eq!(a, w(&load(42)));
    assert_ne!(a, w(&load(7)));
    let std = (a.iter().map(|x| x * x).sum::<f32>() / a.len() as f32).sqrt();
    assert!((std - 0.02).abs() < 0.003, "std {std}");
    assert!(host(load(42).qa_outputs.bias.unwrap().val())
        .iter()
        .all(|&b| b == 0.0));
}
