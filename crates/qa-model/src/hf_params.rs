//! Hugging Face parameter names, declared by each module next to its fields. A module lists its
//! parameters through [`HfParams::visit_params`] under the names its PyTorch twin gives them;
//! loading, saving and the optimizer's weight-decay groups all read that one walk, so they
//! cannot drift apart.

use burn::module::{Param, ParamId};
use burn::nn::{Embedding, Linear};

use crate::layers::LayerNorm;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use crate::error::Result;
use crate::weights::HostTensor;

/// How a parameter starts when a checkpoint does not have it (HF's `_init_weights`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Init {
    /// N(0, initializer_range); `zero_row` is the padding row of an embedding.
    Normal {
        zero_row: Option<usize>,
    },
    Zeros,
    Ones,
    /// DistilBERT's fixed sinusoidal position table.
    Sinusoidal,
}

/// How Burn lays a parameter out relative to PyTorch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Same shape, same order.
    AsTorch,
    /// The 2-D transpose: Burn's `Linear` stores `[in, out]`, PyTorch's `[out, in]`.
    Transposed,
}

impl Layout {
    /// The PyTorch shape of a parameter whose Burn shape is `burn`.
    pub fn torch_shape(self, burn: &[usize]) -> Vec<usize> {
        match self {
            Layout::AsTorch => burn.to_vec(),
            Layout::Transposed => burn.iter().rev().copied().collect(),
        }
    }

    /// Converts between the two layouts (each direction is the same operation).
    pub fn convert(self, tensor: HostTensor) -> HostTensor {
        match self {
            Layout::AsTorch => tensor,
            Layout::Transposed => tensor.transposed(),
        }
    }
}

/// The kind of PyTorch module a parameter belongs to: HF Trainer's weight decay skips every
/// parameter inside a LayerNorm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    Linear,
    LayerNorm,
    Embedding,
}

/// One parameter as its PyTorch module declares it.
#[derive(Debug, Clone, Copy)]
pub struct Leaf {
    /// The attribute name inside its module (`weight`, `bias`).
    pub name: &'static str,
    /// What older checkpoints call it (`LayerNorm.gamma`/`beta` from TensorFlow ports).
    pub legacy_name: Option<&'static str>,
    pub owner: Owner,
    pub layout: Layout,
    pub init: Init,
}

/// The dotted module path being visited (`bert`, `encoder`, `layer`, `0`, ...).
#[derive(Debug, Clone, Default)]
pub struct NameScope(Vec<String>);

impl NameScope {
    /// The full name of `leaf` in the current scope.
    pub fn full_name(&self, leaf: &str) -> String {
        self.0
            .iter()
            .map(String::as_str)
            .chain([leaf])
            .collect::<Vec<_>>()
            .join(".")
    }

    /// The outermost scope (the encoder prefix, or the head's own name).
    pub fn root(&self) -> Option<&str> {
        self.0.first().map(String::as_str)
    }
}

/// What happens at each parameter of a walk: fill it (loading), read it (saving, naming).
pub trait ParamVisitor<B: Backend>: Sized {
    fn name_scope(&mut self) -> &mut NameScope;

    fn param<const D: usize>(&mut self, leaf: Leaf, param: &mut Param<Tensor<B, D>>) -> Result<()>;

    /// Runs `visit` one module level deeper, under `name`.
    fn scope(&mut self, name: &str, visit: impl FnOnce(&mut Self) -> Result<()>) -> Result<()> {
        self.name_scope().0.push(name.to_string());
        let result = visit(self);
        self.name_scope().0.pop();
        result
    }

    /// Visits `module`, the submodule HF calls `name`.
    fn child<M: HfParams<B>>(&mut self, name: &str, module: &mut M) -> Result<()> {
        self.scope(name, |v| module.visit_params(v))
    }
}

/// A module whose parameters carry HF names.
pub trait HfParams<B: Backend> {
    fn visit_params<V: ParamVisitor<B>>(&mut self, visitor: &mut V) -> Result<()>;
}

/// `nn.Linear`: `weight` (transposed in Burn) and `bias`.
impl<B: Backend> HfParams<B> for Linear<B> {
    fn visit_params<V: ParamVisitor<B>>(&mut self, v: &mut V) -> Result<()> {
        let weight = Leaf {
            name: "weight",
            legacy_name: None,
            owner: Owner::Linear,
            layout: Layout::Transposed,
            init: Init::Normal { zero_row: None },
        };
        v.param(weight, &mut self.weight)?;
        if let Some(bias) = &mut self.bias {
            let leaf = Leaf {
                name: "bias",
                init: Init::Zeros,
                layout: Layout::AsTorch,
                ..weight
            };
            v.param(leaf, bias)?;
        }
        Ok(())
    }
}

/// `nn.LayerNorm`: `weight` and `bias`, once spelled `gamma` and `beta`.
impl<B: Backend> HfParams<B> for LayerNorm<B> {
    fn visit_params<V: ParamVisitor<B>>(&mut self, v: &mut V) -> Result<()> {
        let weight = Leaf {
            name: "weight",
            legacy_name: Some("gamma"),
            owner: Owner::LayerNorm,
            layout: Layout::AsTorch,
            init: Init::Ones,
        };
        v.param(weight, &mut self.gamma)?;
        let bias = Leaf {
            name: "bias",
            legacy_name: Some("beta"),
            init: Init::Zeros,
            ..weight
        };
        v.param(bias, &mut self.beta)
    }
}

/// `nn.Embedding` without a padding row; see [`visit_embedding`] for the others.
impl<B: Backend> HfParams<B> for Embedding<B> {
    fn visit_params<V: ParamVisitor<B>>(&mut self, v: &mut V) -> Result<()> {
        visit_embedding(v, self, Init::Normal { zero_row: None })
    }
}

/// An `nn.Embedding`'s `weight`, started as `init` (a padding row, a fixed table).
pub fn visit_embedding<B: Backend, V: ParamVisitor<B>>(
    v: &mut V,
    embedding: &mut Embedding<B>,
    init: Init,
) -> Result<()> {
    let leaf = Leaf {
        name: "weight",
        legacy_name: None,
        owner: Owner::Embedding,
        layout: Layout::AsTorch,
        init,
    };
    v.param(leaf, &mut embedding.weight)
}

/// `nn.ModuleList`: items named by their index.
impl<B: Backend, M: HfParams<B>> HfParams<B> for Vec<M> {
    fn visit_params<V: ParamVisitor<B>>(&mut self, v: &mut V) -> Result<()> {
        for (i, item) in self.iter_mut().enumerate() {
            v.child(&i.to_string(), item)?;
        }
        Ok(())
    }
}

/// A submodule that a configuration may leave out.
impl<B: Backend, M: HfParams<B>> HfParams<B> for Option<M> {
    fn visit_params<V: ParamVisitor<B>>(&mut self, v: &mut V) -> Result<()> {
        match self {
            Some(module) => module.visit_params(v),
            None => Ok(()),
        }
    }
}

/// One parameter of a model under its full HF name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HfParam {
    pub id: ParamId,
    /// E.g. `bert.encoder.layer.0.attention.self.query.weight`.
    pub name: String,
    /// Whether it belongs to a LayerNorm module.
    pub in_layer_norm: bool,
}

/// Every parameter of `module` with its HF name, in walk order.
pub fn hf_param_names<B: Backend, M: HfParams<B> + Clone>(module: &M) -> Vec<HfParam> {
    struct Lister {
        scope: NameScope,
        params: Vec<HfParam>,
    }
    impl<B: Backend> ParamVisitor<B> for Lister {
        fn name_scope(&mut self) -> &mut NameScope {
            &mut self.scope
        }
        fn param<const D: usize>(
            &mut self,
            leaf: Leaf,
            param: &mut Param<Tensor<B, D>>,
        ) -> Result<()> {
            self.params.push(HfParam {
                id: param.id,
                name: self.scope.full_name(leaf.name),
                in_layer_norm: leaf.owner == Owner::LayerNorm,
            });
            Ok(())
        }
    }
    let mut lister = Lister {
        scope: NameScope::default(),
        params: Vec::new(),
    };
    // The walk takes `&mut` (loading replaces parameters); a clone shares the tensors.
    module
        .clone()
        .visit_params(&mut lister)
        .expect("listing names never fails");
    lister.params
}
