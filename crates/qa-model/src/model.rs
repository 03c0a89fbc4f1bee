//! The QA model: HF's `*ForQuestionAnswering` head (a linear layer giving start and end logits)
//! over one family's encoder. The encoders live in their families' files ([`crate::bert`],
//! [`crate::distilbert`], [`crate::roberta`], [`crate::electra`], [`crate::albert`],
//! [`crate::deberta_v2`]); this file
//! only picks one and applies the head.

use std::sync::Arc;

use burn::module::{Ignored, Module, ModuleMapper, Param};
use burn::nn::{Dropout, Linear};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};

use crate::albert::AlbertModel;
use crate::bert::BertModel;
use crate::config::{Architecture, ModelConfig};
use crate::deberta_v2::DebertaV2Model;
use crate::distilbert::DistilBertModel;
use crate::dropout::dropout;
use crate::electra::ElectraModel;
use crate::error::Result;
use crate::hf_params::{HfParams, ParamVisitor};
use crate::layers::{dropout_layer, linear, zero_linear, Products};
use crate::precision::{InferencePrecision, PreparedWeights};
use crate::roberta::RobertaModel;

pub use crate::layers::MatmulDtype;

/// Added to attention scores at padded keys, and written into the start/end logits of padded
/// positions so they never win. Finite and representable in f16/bf16.
pub const MASKED: f32 = -10_000.0;

/// The encoder of one model family: what `*ForQuestionAnswering` holds as `bert`,
/// `distilbert`, ...
// One encoder per model, never moved in a loop: the variants' size difference costs nothing
// (and Burn's `Module` is not implemented for `Box`).
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum Encoder<B: Backend> {
    Bert(BertModel<B>),
    DistilBert(DistilBertModel<B>),
    Roberta(RobertaModel<B>),
    /// The same network as [`Encoder::Roberta`], saved under XLM-RoBERTa's names.
    XlmRoberta(RobertaModel<B>),
    Electra(ElectraModel<B>),
    Albert(AlbertModel<B>),
    DebertaV2(DebertaV2Model<B>),
}

impl<B: Backend> Encoder<B> {
    /// The word-embedding table and the position-embedding one, if the family has one.
    fn embedding_tables(&self) -> [Option<&burn::nn::Embedding<B>>; 2] {
        let pair = |word, position| [Some(word), Some(position)];
        match self {
            Encoder::Bert(m) => pair(
                &m.embeddings.word_embeddings,
                &m.embeddings.position_embeddings,
            ),
            Encoder::DistilBert(m) => pair(
                &m.embeddings.word_embeddings,
                &m.embeddings.position_embeddings,
            ),
            Encoder::Roberta(m) | Encoder::XlmRoberta(m) => pair(
                &m.embeddings.word_embeddings,
                &m.embeddings.position_embeddings,
            ),
            Encoder::Electra(m) => pair(
                &m.embeddings.word_embeddings,
                &m.embeddings.position_embeddings,
            ),
            Encoder::Albert(m) => pair(
                &m.embeddings.word_embeddings,
                &m.embeddings.position_embeddings,
            ),
            Encoder::DebertaV2(m) => [
                Some(&m.embeddings.word_embeddings),
                m.embeddings.position_embeddings.as_ref(),
            ],
        }
    }

    /// Entries of the word-embedding table (token ids below this are valid inputs).
    pub fn vocab_size(&self) -> usize {
        self.embedding_tables()[0].map_or(0, |table| table.weight.dims()[0])
    }

    /// Entries of the position-embedding table (RoBERTa's first two are never used); DeBERTa-v3,
    /// which has none, still declares `max_position_embeddings`.
    pub fn position_table_size(&self) -> usize {
        match (self, self.embedding_tables()[1]) {
            (_, Some(table)) => table.weight.dims()[0],
            (Encoder::DebertaV2(m), None) => m.embeddings.max_position_embeddings,
            (_, None) => 0,
        }
    }

    /// The family's encoder with zero parameters, for the checkpoint loader to fill.
    pub fn skeleton(config: &ModelConfig, device: &B::Device) -> Self {
        match config.architecture {
            Architecture::Bert => Encoder::Bert(BertModel::skeleton(config, device)),
            Architecture::DistilBert => {
                Encoder::DistilBert(DistilBertModel::skeleton(config, device))
            }
            Architecture::Roberta => Encoder::Roberta(RobertaModel::skeleton(config, device)),
            Architecture::XlmRoberta => Encoder::XlmRoberta(RobertaModel::skeleton(config, device)),
            Architecture::Electra => Encoder::Electra(ElectraModel::skeleton(config, device)),
            Architecture::Albert => Encoder::Albert(AlbertModel::skeleton(config, device)),
            Architecture::DebertaV2 => Encoder::DebertaV2(DebertaV2Model::skeleton(config, device)),
        }
    }

    pub fn architecture(&self) -> Architecture {
        match self {
            Encoder::Bert(_) => Architecture::Bert,
            Encoder::DistilBert(_) => Architecture::DistilBert,
            Encoder::Roberta(_) => Architecture::Roberta,
            Encoder::XlmRoberta(_) => Architecture::XlmRoberta,
            Encoder::Electra(_) => Architecture::Electra,
            Encoder::Albert(_) => Architecture::Albert,
            Encoder::DebertaV2(_) => Architecture::DebertaV2,
        }
    }

    /// The last hidden states.
    ///
    /// # Shapes
    ///
    /// - batch: `[batch, seq]` each
    /// - output: `[batch, seq, hidden]`
    pub fn forward(&self, batch: &QaBatch<B>, products: Products<'_>) -> Tensor<B, 3> {
        let input_ids = batch.input_ids.clone();
        let attention_mask = batch.attention_mask.clone();
        match self {
            Encoder::Bert(bert) => bert.forward(
                input_ids,
                batch.token_type_ids.clone(),
                attention_mask,
                products,
            ),
            // DistilBERT has no token types; RoBERTa's tokenizers return none (type 0 is used).
            Encoder::DistilBert(distilbert) => {
                distilbert.forward(input_ids, attention_mask, products)
            }
            Encoder::Roberta(roberta) | Encoder::XlmRoberta(roberta) => {
                roberta.forward(input_ids, attention_mask, products)
            }
            Encoder::Electra(electra) => electra.forward(
                input_ids,
                batch.token_type_ids.clone(),
                attention_mask,
                products,
            ),
            Encoder::Albert(albert) => albert.forward(
                input_ids,
                batch.token_type_ids.clone(),
                attention_mask,
                products,
            ),
            Encoder::DebertaV2(deberta) => deberta.forward(
                input_ids,
                batch.token_type_ids.clone(),
                attention_mask,
                products,
            ),
        }
    }
}

/// Named by the encoder's attribute in the QA class, e.g. `bert.embeddings…`.
impl<B: Backend> HfParams<B> for Encoder<B> {
    fn visit_params<V: ParamVisitor<B>>(&mut self, v: &mut V) -> Result<()> {
        let prefix = self.architecture().prefix();
        match self {
            Encoder::Bert(bert) => v.child(prefix, bert),
            Encoder::DistilBert(distilbert) => v.child(prefix, distilbert),
            Encoder::Roberta(roberta) | Encoder::XlmRoberta(roberta) => v.child(prefix, roberta),
            Encoder::Electra(electra) => v.child(prefix, electra),
            Encoder::Albert(albert) => v.child(prefix, albert),
            Encoder::DebertaV2(deberta) => v.child(prefix, deberta),
        }
    }
}

/// Ports transformers' models/bert/modeling_bert.py `BertForQuestionAnswering` (<https://github.com/huggingface/transformers/blob/v4.57.6/src/transformers/models/bert/modeling_bert.py>),
/// models/distilbert/modeling_distilbert.py `DistilBertForQuestionAnswering` (<https://github.com/huggingface/transformers/blob/v4.57.6/src/transformers/models/distilbert/modeling_distilbert.py>),
/// models/roberta/modeling_roberta.py `RobertaForQuestionAnswering` (<https://github.com/huggingface/transformers/blob/v4.57.6/src/transformers/models/roberta/modeling_roberta.py>),
/// models/xlm_roberta/modeling_xlm_roberta.py `XLMRobertaForQuestionAnswering` (<https://github.com/huggingface/transformers/blob/v4.57.6/src/transformers/models/xlm_roberta/modeling_xlm_roberta.py>),
/// models/electra/modeling_electra.py `ElectraForQuestionAnswering` (<https://github.com/huggingface/transformers/blob/v4.57.6/src/transformers/models/electra/modeling_electra.py>)
/// models/albert/modeling_albert.py `AlbertForQuestionAnswering` (<https://github.com/huggingface/transformers/blob/v4.57.6/src/transformers/models/albert/modeling_albert.py>)
/// and models/deberta_v2/modeling_deberta_v2.py `DebertaV2ForQuestionAnswering` (<https://github.com/huggingface/transformers/blob/v4.57.6/src/transformers/models/deberta_v2/modeling_deberta_v2.py>):
/// start and end logits from a linear layer over the encoder's last hidden states.
#[derive(Module, Debug)]
pub struct QaModel<B: Backend> {
    pub encoder: Encoder<B>,
    /// DistilBERT's `dropout` (`qa_dropout`) before the head; probability 0 for the others.
    pub qa_dropout: Dropout,
    pub qa_outputs: Linear<B>,
    /// How [`QaModel::forward`] computes: f32, or the precision [`QaModel::with_precision`] set.
    pub inference: Ignored<Inference>,
}

/// The products of inference forward passes ([`QaModel::forward`]).
#[derive(Debug, Clone, Default)]
pub struct Inference {
    pub precision: InferencePrecision,
    /// The cast Burn's products run in (bf16 on a GPU backend).
    dtype: MatmulDtype,
    /// Weights prepared for the host's int8/bf16 kernels.
    prepared: Option<Arc<PreparedWeights>>,
}

impl Inference {
    fn products(&self) -> Products<'_> {
        Products {
            dtype: self.dtype,
            prepared: self.prepared.as_deref(),
        }
    }
}

/// Replaces every float parameter the table has prepared with a 0-element tensor.
/// Tokens of the load-time discovery pass ([`QaModel::discovery_window`]).
#[cfg(feature = "cpu")]
const DISCOVERY_TOKENS: usize = 64;

/// Prepares each linear weight the discovery pass met and releases its f32 values (as a
/// 0-element tensor) before the next: the model never holds both forms of every weight.
#[cfg(feature = "cpu")]
struct PrepareAndRelease<'a> {
    prepared: &'a PreparedWeights,
    /// Each linear weight's largest |input| per input channel, as the discovery pass saw them.
    linear: &'a std::collections::HashMap<burn::module::ParamId, Vec<f32>>,
}

#[cfg(feature = "cpu")]
impl<B: Backend> ModuleMapper<B> for PrepareAndRelease<'_> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, tensor, mapper) = param.consume();
        let dims = tensor.dims();
        let tensor = if let (2, Some(input_max)) = (D, self.linear.get(&id)) {
            let device = tensor.device();
            let values = tensor
                .into_data()
                .convert::<f32>()
                .into_vec::<f32>()
                .unwrap_or_else(|e| unreachable!("f32 data reads as f32: {e:?}"));
            self.prepared
                .prepare(id, values, dims[0], dims[1], input_max);
            Tensor::empty([0; D], &device)
        } else {
            tensor
        };
        Param::from_mapped_value(id, tensor, mapper)
    }
}

/// Why a model cannot answer in a `--precision`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrecisionError {
    #[error("--precision {precision} needs {needs}")]
    Unavailable {
        precision: InferencePrecision,
        needs: &'static str,
    },
    #[error(
        "this model already answers in {from} (its f32 linear weights are released): \
         convert the f32 model to {to} instead"
    )]
    AlreadyConverted {
        from: InferencePrecision,
        to: InferencePrecision,
    },
}

/// Start and end logits, `[batch, seq]`; padded positions hold [`MASKED`].
#[derive(Debug, Clone)]
pub struct QaOutput<B: Backend> {
    pub start_logits: Tensor<B, 2>,
    pub end_logits: Tensor<B, 2>,
}

/// One padded batch of windows on a device.
#[derive(Debug, Clone)]
pub struct QaBatch<B: Backend> {
    pub input_ids: Tensor<B, 2, Int>,
    pub token_type_ids: Tensor<B, 2, Int>,
    pub attention_mask: Tensor<B, 2, Int>,
}

impl<B: Backend> QaBatch<B> {
    pub fn from_padded(batch: &qa_data::features::PaddedBatch, device: &B::Device) -> Self {
        let shape = [batch.batch, batch.seq_len];
        let int =
            |v: &[i64]| Tensor::<B, 2, Int>::from_data(TensorData::new(v.to_vec(), shape), device);
        Self {
            input_ids: int(&batch.input_ids),
            token_type_ids: int(&batch.token_type_ids),
            attention_mask: int(&batch.attention_mask),
        }
    }
}

impl<B: Backend> QaModel<B> {
    /// The model's shape with placeholder parameters; [`crate::checkpoint`] fills them from a
    /// checkpoint or a seeded initialisation.
    pub fn skeleton(config: &ModelConfig, device: &B::Device) -> Self {
        Self {
            encoder: Encoder::skeleton(config, device),
            qa_dropout: dropout_layer(config.qa_dropout),
            qa_outputs: zero_linear(config.hidden_size, 2, device),
            inference: Ignored(Inference::default()),
        }
    }

    /// The model answering in `precision` from now on ([`Self::forward`]; training's
    /// [`Self::forward_with`] is unchanged). On the host backend int8 and bf16 prepare every
    /// linear layer's weight here, by one forward pass over a two-token window; on a GPU
    /// backend bf16 casts Burn's products, and int8 is refused.
    pub fn with_precision(
        mut self,
        precision: InferencePrecision,
        device: &B::Device,
    ) -> std::result::Result<Self, PrecisionError> {
        if precision == self.precision() {
            return Ok(self);
        }
        if self.precision() != InferencePrecision::F32 {
            return Err(PrecisionError::AlreadyConverted {
                from: self.precision(),
                to: precision,
            });
        }
        let mut inference = Inference {
            precision,
            ..Inference::default()
        };
        if precision != InferencePrecision::F32 {
            if crate::fused::runs_on_host::<B>() {
                #[cfg(feature = "cpu")]
                {
                    inference.prepared = PreparedWeights::new(precision).map(Arc::new);
                }
            } else if precision == InferencePrecision::Bf16
                && B::supports_dtype(device, burn::tensor::DType::BF16)
            {
                inference.dtype = Some(burn::tensor::FloatDType::BF16);
            } else {
                return Err(PrecisionError::Unavailable {
                    precision,
                    needs: "the CPU backend (int8 and bf16 kernels) or, for bf16, a GPU with bf16",
                });
            }
        }
        let prepared = inference.prepared.clone();
        self.inference = Ignored(inference);
        // Prepare every weight now rather than in the first request: a discovery pass over one
        // synthetic window finds the linear layers' weights and their inputs' channel ranges
        // (every family's, through `layers::linear`), then each weight is prepared and its f32
        // values released in turn, so int8 and bf16 models never hold more than the f32 one.
        #[cfg(feature = "cpu")]
        if let Some(prepared) = prepared {
            prepared.begin_discovery();
            let _ = self.forward(&QaBatch::from_padded(&self.discovery_window(), device));
            let linear = prepared.end_discovery();
            self = self.map(&mut PrepareAndRelease {
                prepared: &prepared,
                linear: &linear,
            });
        }
        // Only the host backend prepares weights.
        #[cfg(not(feature = "cpu"))]
        let _ = prepared;
        Ok(self)
    }

    #[cfg(feature = "cpu")]
    /// The discovery pass's input: one window of [`DISCOVERY_TOKENS`] token ids spread over
    /// the vocabulary (no data needed), long enough that every hidden channel shows its usual
    /// range to the int8 smoothing ([`crate::precision::PreparedWeights::begin_discovery`]).
    fn discovery_window(&self) -> qa_data::features::PaddedBatch {
        let vocab = self.encoder.vocab_size().max(1) as i64;
        // Never longer than the model's positions (less RoBERTa's unused two).
        let tokens = DISCOVERY_TOKENS.min(self.encoder.position_table_size().saturating_sub(2));
        let tokens = tokens.max(1);
        let input_ids = (0..tokens as i64)
            .map(|i| (i * 7_919 + 1_000) % vocab)
            .collect();
        qa_data::features::PaddedBatch {
            batch: 1,
            seq_len: tokens,
            input_ids,
            token_type_ids: vec![0; tokens],
            attention_mask: vec![1; tokens],
            start_positions: Vec::new(),
            end_positions: Vec::new(),
        }
    }

    /// The precision [`Self::forward`] answers in.
    pub fn precision(&self) -> InferencePrecision {
        self.inference.precision
    }

    /// Last hidden states `[batch, seq, hidden]` (what HF `BertModel` returns first).
    pub fn encode(&self, batch: &QaBatch<B>) -> Tensor<B, 3> {
        self.encode_with(batch, None)
    }

    /// [`Self::encode`] with matrix products in `dtype` (mixed precision).
    pub fn encode_with(&self, batch: &QaBatch<B>, dtype: MatmulDtype) -> Tensor<B, 3> {
        self.encoder.forward(batch, dtype.into())
    }

    /// Inference: start and end logits with the products of [`Self::with_precision`].
    pub fn forward(&self, batch: &QaBatch<B>) -> QaOutput<B> {
        self.forward_products(batch, self.inference.products())
    }

    /// [`Self::forward`] with matrix products in `dtype` (mixed precision).
    ///
    /// # Shapes
    ///
    /// - batch: `[batch, seq]` each
    /// - output: start and end logits, `[batch, seq]` each
    pub fn forward_with(&self, batch: &QaBatch<B>, dtype: MatmulDtype) -> QaOutput<B> {
        self.forward_products(batch, dtype.into())
    }

    /// The QA head stays in f32 weights whatever the encoder's products.
    fn forward_products(&self, batch: &QaBatch<B>, products: Products<'_>) -> QaOutput<B> {
        let hidden = self.encoder.forward(batch, products);
        let [b, s, _] = hidden.dims();
        let logits = linear(
            &self.qa_outputs,
            dropout(&self.qa_dropout, hidden),
            products.in_f32_weights(),
        );
        let padded = batch.attention_mask.clone().equal_elem(0);
        let pick = |i: usize| {
            logits
                .clone()
                .narrow(2, i, 1)
                .reshape([b, s])
                .mask_fill(padded.clone(), MASKED)
        };
        QaOutput {
            start_logits: pick(0),
            end_logits: pick(1),
        }
    }
}

impl<B: Backend> HfParams<B> for QaModel<B> {
    fn visit_params<V: ParamVisitor<B>>(&mut self, v: &mut V) -> Result<()> {
        self.encoder.visit_params(v)?;
        v.child("qa_outputs", &mut self.qa_outputs)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use burn::module::{ModuleVisitor, Param, ParamId};

    use super::*;
    use crate::backend::{default_device, Compute};
    use crate::hf_params::{hf_param_names, HfParam};

    /// Every Burn parameter of the model, by id.
    fn burn_param_ids(model: &QaModel<Compute>) -> BTreeSet<ParamId> {
        struct Ids(BTreeSet<ParamId>);
        impl ModuleVisitor<Compute> for Ids {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<Compute, D>>) {
                self.0.insert(param.id);
            }
        }
        let mut ids = Ids(BTreeSet::new());
        model.visit(&mut ids);
        ids.0
    }

    fn named(config: &ModelConfig) -> (QaModel<Compute>, Vec<HfParam>) {
        let model = QaModel::<Compute>::skeleton(config, &default_device());
        let names = hf_param_names(&model);
        (model, names)
    }

    #[test]
    fn every_parameter_has_exactly_one_hf_name() {
        for config in Architecture::ALL.map(|a| ModelConfig::small(a, 10, 8, 2, 2, 16)) {
            let (model, names) = named(&config);
            let ids: BTreeSet<ParamId> = names.iter().map(|p| p.id).collect();
            assert_eq!(ids.len(), names.len(), "a parameter is named twice");
            assert_eq!(ids, burn_param_ids(&model), "a parameter has no HF name");
            let unique: BTreeSet<&str> = names.iter().map(|p| p.name.as_str()).collect();
            assert_eq!(unique.len(), names.len(), "two parameters share a name");
        }
    }

    #[test]
    fn names_follow_transformers() {
        let layer_norm = |names: &[HfParam], name: &str| {
            names
                .iter()
                .find(|p| p.name == name)
                .unwrap_or_else(|| panic!("no {name}"))
                .in_layer_norm
        };
        let (_, bert) = named(&ModelConfig::bert(10, 8, 2, 2, 16));
        assert_eq!(bert.len(), 5 + 2 * 16 + 2);
        assert_eq!(bert[0].name, "bert.embeddings.word_embeddings.weight");
        assert!(!layer_norm(
            &bert,
            "bert.encoder.layer.1.attention.self.query.weight"
        ));
        assert!(!layer_norm(
            &bert,
            "bert.encoder.layer.0.attention.output.dense.bias"
        ));
        assert!(layer_norm(
            &bert,
            "bert.encoder.layer.0.attention.output.LayerNorm.weight"
        ));
        assert!(!layer_norm(
            &bert,
            "bert.encoder.layer.0.intermediate.dense.weight"
        ));
        assert!(layer_norm(
            &bert,
            "bert.encoder.layer.1.output.LayerNorm.bias"
        ));
        assert!(layer_norm(&bert, "bert.embeddings.LayerNorm.weight"));
        assert!(!layer_norm(
            &bert,
            "bert.embeddings.token_type_embeddings.weight"
        ));
        assert_eq!(bert.last().unwrap().name, "qa_outputs.bias");

        let (_, distil) = named(&ModelConfig::distilbert(10, 8, 2, 2, 16));
        assert_eq!(distil.len(), 4 + 2 * 16 + 2);
        assert!(!layer_norm(
            &distil,
            "distilbert.embeddings.position_embeddings.weight"
        ));
        assert!(layer_norm(&distil, "distilbert.embeddings.LayerNorm.bias"));
        assert!(!layer_norm(
            &distil,
            "distilbert.transformer.layer.0.attention.q_lin.weight"
        ));
        assert!(!layer_norm(
            &distil,
            "distilbert.transformer.layer.0.attention.out_lin.bias"
        ));
        assert!(layer_norm(
            &distil,
            "distilbert.transformer.layer.1.sa_layer_norm.weight"
        ));
        assert!(!layer_norm(
            &distil,
            "distilbert.transformer.layer.1.ffn.lin2.weight"
        ));
        assert!(layer_norm(
            &distil,
            "distilbert.transformer.layer.1.output_layer_norm.bias"
        ));
        assert!(!layer_norm(&distil, "qa_outputs.weight"));

        // RoBERTa and ELECTRA: BERT's layers under their own prefix.
        for (architecture, prefix) in [
            (Architecture::Roberta, "roberta"),
            (Architecture::XlmRoberta, "roberta"),
            (Architecture::Electra, "electra"),
        ] {
            let (_, names) = named(&ModelConfig::small(architecture, 10, 8, 2, 2, 16));
            let project = usize::from(architecture == Architecture::Electra) * 2;
            assert_eq!(names.len(), 5 + project + 2 * 16 + 2, "{architecture:?}");
            let list: Vec<&str> = names.iter().map(|p| p.name.as_str()).collect();
            for suffix in [
                "embeddings.position_embeddings.weight",
                "embeddings.token_type_embeddings.weight",
                "encoder.layer.1.attention.self.key.bias",
                "encoder.layer.0.output.LayerNorm.weight",
            ] {
                let name = format!("{prefix}.{suffix}");
                assert!(list.contains(&name.as_str()), "{architecture:?}: no {name}");
            }
            assert!(layer_norm(
                &names,
                &format!("{prefix}.embeddings.LayerNorm.bias")
            ));
        }
        let (_, electra) = named(&ModelConfig::small(Architecture::Electra, 10, 8, 2, 2, 16));
        assert!(!layer_norm(&electra, "electra.embeddings_project.weight"));

        // ALBERT: one shared layer group, factorised embeddings.
        let (_, albert) = named(&ModelConfig::small(Architecture::Albert, 10, 8, 2, 2, 16));
        assert_eq!(albert.len(), 5 + 2 + 16 + 2);
        let layer = "albert.encoder.albert_layer_groups.0.albert_layers.0";
        assert!(!layer_norm(
            &albert,
            "albert.encoder.embedding_hidden_mapping_in.weight"
        ));
        assert!(!layer_norm(
            &albert,
            &format!("{layer}.attention.query.weight")
        ));
        assert!(!layer_norm(
            &albert,
            &format!("{layer}.attention.dense.bias")
        ));
        assert!(layer_norm(
            &albert,
            &format!("{layer}.attention.LayerNorm.weight")
        ));
        assert!(!layer_norm(&albert, &format!("{layer}.ffn.weight")));
        assert!(!layer_norm(&albert, &format!("{layer}.ffn_output.bias")));
        assert!(layer_norm(
            &albert,
            &format!("{layer}.full_layer_layer_norm.bias")
        ));
    }
}
