//! The QA loss of HF `BertForQuestionAnswering`: mean of start and end cross-entropy.

use burn::tensor::activation::log_softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};
use qa_model::QaOutput;

/// Mean cross-entropy of the batch's start and end labels, averaged. Labels are always inside
/// the window here (qa-data points unanswerable windows at [CLS]), so HF's clamping to an
/// ignored index never triggers.
pub fn qa_loss<B: Backend>(
    out: &QaOutput<B>,
    start_positions: Tensor<B, 1, Int>,
    end_positions: Tensor<B, 1, Int>,
) -> Tensor<B, 1> {
    let ce = |logits: Tensor<B, 2>, labels: Tensor<B, 1, Int>| {
        let [b, _] = logits.dims();
        log_softmax(logits, 1)
            .gather(1, labels.reshape([b, 1]))
            .mean()
            .neg()
    };
    (ce(out.start_logits.clone(), start_positions) + ce(out.end_logits.clone(), end_positions))
        .div_scalar(2.0)
}
