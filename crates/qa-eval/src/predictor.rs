//! A fine-tuned model folder made ready to answer: model, tokenizer and window settings loaded
//! once, then examples in, logits or answers out. `qa predict` and `qa eval` use it (and a
//! server would): the one place where a model folder meets the decoders.

use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use qa_data::progress::Progress;
use qa_data::tokenizer::pad_token_id;
use qa_data::{build_features, load_tokenizer, Example, Feature, FeatureConfig};
use qa_model::infer::{predict_logits, WindowLogits};
use qa_model::{InferencePrecision, ModelConfig, QaModel};
use tokenizers::Tokenizer;

use crate::decode::{decode, DecodeConfig, ExampleDecoding};
use crate::error::{EvalError, Result};
use crate::pipeline::{pipeline_answers, PipelineAnswer, PipelineConfig};
use crate::reader::{document_answers, document_examples, Document, DocumentAnswer};

/// A model folder, loaded for inference. Clones share the model's tensors.
#[derive(Clone)]
pub struct Predictor<B: Backend> {
    pub model: QaModel<B>,
    pub config: ModelConfig,
    pub tokenizer: Tokenizer,
    pub model_dir: PathBuf,
    /// How examples are cut into windows.
    pub windows: FeatureConfig,
    /// Windows per forward pass.
    pub batch_size: usize,
    /// Whether the folder had a trained QA head (without one, answers are random).
    pub has_qa_head: bool,
    device: B::Device,
}

/// Windows and their logits, in window order.
pub struct WindowScores {
    pub features: Vec<Feature>,
    pub logits: Vec<WindowLogits>,
}

impl<B: Backend> Predictor<B> {
    /// Loads the model and tokenizer of `model_dir`. Refuses a tokenizer whose ids overflow
    /// the model's embeddings; a folder without a trained QA head loads with a loud warning.
    pub fn load(
        model_dir: &Path,
        windows: FeatureConfig,
        batch_size: usize,
        device: &B::Device,
    ) -> Result<Self> {
        let tokenizer = load_tokenizer(model_dir)?;
        let (model, config, report) = qa_model::load_pretrained::<B>(model_dir, None, 0, device)?;
        let max_length = config.cap_window_length(windows.max_length);
        // As the HF pipeline: a stride that no longer fits the (capped) window becomes half
        // of it.
        let stride = if windows.stride >= max_length {
            let half = max_length / 2;
            tracing::warn!(
                "--doc-stride {} does not fit {max_length}-token windows: using {half}",
                windows.stride
            );
            half
        } else {
            windows.stride
        };
        let windows = FeatureConfig {
            max_length,
            stride,
            ..windows
        };
        windows.validate()?;
        qa_model::check_vocabulary(&config, tokenizer.get_vocab_size(true), model_dir)?;
        let has_qa_head = report.initialized.is_empty();
        if !has_qa_head {
            tracing::warn!(
                "{} has no trained QA head ({} freshly initialised): answers will be random; \
                 fine-tune it first (qa train)",
                model_dir.display(),
                report.initialized.join(", ")
            );
        }
        Ok(Self {
            model,
            config,
            tokenizer,
            model_dir: model_dir.to_path_buf(),
            windows,
            batch_size,
            has_qa_head,
            device: device.clone(),
        })
    }

    /// The predictor answering with its linear layers in `precision` (`--precision`): int8 and
    /// bf16 weights are prepared here, once, and the f32 ones they replace released (so convert
    /// an f32 predictor, or a clone of one, not an int8 one).
    pub fn with_precision(self, precision: InferencePrecision) -> Result<Self> {
        if precision == self.model.precision() {
            return Ok(self);
        }
        let started = std::time::Instant::now();
        let model = self.model.with_precision(precision, &self.device)?;
        tracing::info!(
            "{}: answering in {precision} (weights prepared in {:.2} s)",
            self.model_dir.display(),
            started.elapsed().as_secs_f64()
        );
        Ok(Self { model, ..self })
    }

    /// The windows of `examples` and their logits.
    pub fn logits(&self, examples: &[Example], progress: Progress) -> Result<WindowScores> {
        let set = build_features(&self.tokenizer, examples, &self.windows)?;
        for (id, why) in &set.report.skipped {
            tracing::warn!("question {id}: skipped: {why}");
        }
        let logits = self.window_logits(&set.features, progress);
        Ok(WindowScores {
            features: set.features,
            logits,
        })
    }

    /// The logits of windows already cut (with this predictor's tokenizer).
    pub fn window_logits(&self, features: &[Feature], progress: Progress) -> Vec<WindowLogits> {
        predict_logits(
            &self.model,
            features,
            self.batch_size,
            pad_token_id(&self.tokenizer),
            &self.device,
            progress,
        )
    }

    /// The HF question-answering pipeline's answers for each example.
    pub fn pipeline(
        &self,
        examples: &[Example],
        config: &PipelineConfig,
        progress: Progress,
    ) -> Result<Vec<Vec<PipelineAnswer>>> {
        check_not_blank(examples)?;
        let scores = self.logits(examples, progress)?;
        pipeline_answers(examples, &scores.features, &scores.logits, config)
    }

    /// The best answers to `question` over many `documents`, ranked across them
    /// ([`crate::reader`]).
    pub fn documents(
        &self,
        question: &str,
        documents: &[Document],
        config: &PipelineConfig,
        progress: Progress,
    ) -> Result<Vec<DocumentAnswer>> {
        let examples = document_examples(question, documents);
        check_not_blank(&examples)?;
        let scores = self.logits(&examples, progress)?;
        document_answers(
            documents,
            &examples,
            &scores.features,
            &scores.logits,
            config,
        )
    }

    /// run_qa's decoding of every window as an example of its own (DEFNLP collects answers
    /// from every window of a publication).
    pub fn per_window(
        &self,
        examples: &[Example],
        decode_config: &DecodeConfig,
    ) -> Result<Vec<ExampleDecoding>> {
        let WindowScores {
            mut features,
            logits,
        } = self.logits(examples, Progress::Hidden)?;
        let window_examples: Vec<Example> = features
            .iter()
            .map(|f| examples[f.example_index].clone())
            .collect();
        for (i, f) in features.iter_mut().enumerate() {
            f.example_index = i;
        }
        Ok(decode(&window_examples, &features, &logits, decode_config)?.examples)
    }
}

/// The pipeline would answer a blank question with some span of the context.
fn check_not_blank(examples: &[Example]) -> Result<()> {
    for example in examples {
        for (field, text) in [
            ("question", example.question.as_str()),
            ("context", &*example.context),
        ] {
            if qa_data::requests::is_blank(text) {
                return Err(EvalError::BlankInput {
                    id: example.id.to_string(),
                    field,
                });
            }
        }
    }
    Ok(())
}
