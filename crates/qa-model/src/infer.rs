//! Batched inference over windows: logits for every feature, in feature order.

use burn::tensor::backend::Backend;
use qa_data::features::pad_batch_in_buckets;
use qa_data::progress::Progress;
use qa_data::Feature;

use crate::model::{QaBatch, QaModel};

/// Start/end logits of each window (trimmed to the window's own length).
pub type WindowLogits = (Vec<f32>, Vec<f32>);

/// Runs the model over `features` in batches of `batch_size` (windows sorted by length first,
/// so batches pad little), returning logits in the original order.
pub fn predict_logits<B: Backend>(
    model: &QaModel<B>,
    features: &[Feature],
    batch_size: usize,
    pad_id: u32,
    device: &B::Device,
    progress: Progress,
) -> Vec<WindowLogits> {
    let mut order: Vec<usize> = (0..features.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(features[i].len()));
    let windows_bar =
        qa_data::progress::bar(features.len() as u64, "inference", "windows", progress);
    let mut out: Vec<Option<WindowLogits>> = vec![None; features.len()];
    // Every window fits the model, so padding up to the longest of them is safe.
    let longest = features.iter().map(|f| f.len()).max().unwrap_or(0);
    for chunk in order.chunks(batch_size.max(1)) {
        let refs: Vec<&Feature> = chunk.iter().map(|&i| &features[i]).collect();
        let padded = pad_batch_in_buckets(&refs, pad_id, crate::backend::SEQ_BUCKET, longest);
        let result = model.forward(&QaBatch::from_padded(&padded, device));
        let seq = padded.seq_len;
        let start = to_vec(result.start_logits);
        let end = to_vec(result.end_logits);
        for (row, &i) in chunk.iter().enumerate() {
            let n = features[i].len();
            out[i] = Some((
                start[row * seq..row * seq + n].to_vec(),
                end[row * seq..row * seq + n].to_vec(),
            ));
        }
        windows_bar.inc(chunk.len() as u64);
    }
    windows_bar.finish_and_clear();
    out.into_iter()
        .map(|o| o.expect("every window predicted"))
        .collect()
}

fn to_vec<B: Backend>(t: burn::tensor::Tensor<B, 2>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .expect("float logits")
}
