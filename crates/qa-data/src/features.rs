//! run_qa's sliding windows ("features"): each (question, context) pair becomes one or more
//! windows of at most `max_length` tokens, consecutive windows sharing `stride` context tokens.
//!
//! Per window we keep what training needs (ids, type ids, mask, start/end labels) and what
//! decoding needs (the example it came from, char offsets of context tokens, and whether the
//! window is the token's "max context" one, as in the original BERT SQuAD code).

use std::io::Write;
use std::path::PathBuf;

use indicatif::ParallelProgressIterator;
use rayon::prelude::*;
use serde::Serialize;
use tokenizers::{Encoding, PostProcessor, Tokenizer};

use crate::error::{DataError, Result};
use crate::example::Example;
use crate::progress::{self, Progress};
use crate::tokenizer::pad_token_id;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Padding {
    /// Windows keep their own length; batches are padded to their longest (see [`pad_batch`]).
    None,
    /// Every window is padded to `max_length` (run_qa's `--pad_to_max_length`).
    MaxLength,
}

#[derive(Debug, Clone, Serialize)]
pub struct FeatureConfig {
    pub max_length: usize,
    pub stride: usize,
    /// Keep only a question's first this many tokens (the HF pipeline's `max_question_len`,
    /// run_squad's `max_query_length`); `None` keeps it whole, as run_qa and the pipeline with
    /// a fast tokenizer do.
    pub max_question_tokens: Option<usize>,
    pub padding: Padding,
    /// Label each window with the first answer wholly inside it, instead of run_qa's rule of
    /// "the first answer, or [CLS]". DEFNLP uses this: a dataset is usually named many times.
    pub label_any_answer: bool,
    /// Keep each context token's word index ([`Feature::word_ids`]): the QA pipeline widens
    /// answers to whole words with them. Off by default (it costs memory on large sets).
    pub word_ids: bool,
    /// Progress bars while tokenizing and cutting windows.
    pub progress: Progress,
    /// The data file the examples came from, named in the warnings about examples that get no
    /// window (`None`: the warnings name the example only). Not a window setting.
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

impl Default for FeatureConfig {
    fn default() -> Self {
        Self {
            max_length: 384,
            stride: 128,
            max_question_tokens: None,
            padding: Padding::None,
            label_any_answer: false,
            word_ids: false,
            progress: Progress::Show,
            source: None,
        }
    }
}

/// One window of one example.
#[derive(Debug, Clone, PartialEq)]
pub struct Feature {
    /// Index into the example slice the features were built from.
    pub example_index: usize,
    /// Window number within its example (0, 1, ...).
    pub window: usize,
    pub input_ids: Vec<u32>,
    pub token_type_ids: Vec<u32>,
    pub attention_mask: Vec<u32>,
    /// Char offsets into the context for context tokens, `None` for question/special/pad tokens.
    pub offsets: Vec<Option<(usize, usize)>>,
    /// Whether this window gives the token its most context (the BERT "max context" rule).
    pub max_context: Vec<bool>,
    /// The context word each context token belongs to (`None` elsewhere); empty unless
    /// [`FeatureConfig::word_ids`] asked for it.
    pub word_ids: Vec<Option<u32>>,
    pub start_position: usize,
    pub end_position: usize,
}

impl Feature {
    pub fn len(&self) -> usize {
        self.input_ids.len()
    }
    pub fn is_empty(&self) -> bool {
        self.input_ids.is_empty()
    }
}

/// Which training windows a run learns from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TrainWindows {
    /// Every window, those without their answer labelled [CLS] (run_qa).
    #[default]
    All,
    /// Only windows that hold their answer: a CPU demo setting for long documents (COVID-QA's
    /// articles give ~30 windows a question, one or two with the answer).
    WithAnswer,
}

impl std::str::FromStr for TrainWindows {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "all" => Ok(Self::All),
            "with-answer" => Ok(Self::WithAnswer),
            other => Err(format!(
                "unknown window selection {other:?} (all or with-answer)"
            )),
        }
    }
}

impl std::fmt::Display for TrainWindows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::All => "all",
            Self::WithAnswer => "with-answer",
        })
    }
}

impl TrainWindows {
    /// The windows of `features` this selection keeps, in order.
    pub fn select(self, features: Vec<Feature>) -> Vec<Feature> {
        match self {
            Self::All => features,
            // Label 0 is [CLS]: the answer is not in the window.
            Self::WithAnswer => features
                .into_iter()
                .filter(|f| f.start_position > 0)
                .collect(),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct FeatureReport {
    pub examples: usize,
    pub windows: usize,
    /// Windows labelled with an answer span (the rest point at [CLS]).
    pub windows_with_answer: usize,
    /// Examples that produced no windows, with the reason (e.g. a question longer than the window).
    pub skipped: Vec<(String, String)>,
}

#[derive(Debug, Clone)]
pub struct FeatureSet {
    pub features: Vec<Feature>,
    pub report: FeatureReport,
}

impl FeatureConfig {
    /// Refuses settings no window can be cut with (too short, a stride not below the window,
    /// a zero question length).
    pub fn validate(&self) -> Result<()> {
        if self.max_length < 8 {
            return Err(DataError::Config(format!(
                "max_length {} is too small",
                self.max_length
            )));
        }
        if self.max_question_tokens == Some(0) {
            return Err(DataError::Config(
                "max_question_len must be at least 1 token".into(),
            ));
        }
        if self.stride >= self.max_length {
            return Err(DataError::Config(format!(
                "doc_stride ({}) must be smaller than max_length ({})",
                self.stride, self.max_length
            )));
        }
        Ok(())
    }
}

/// Cuts every example into windows, in parallel, keeping example order.
///
/// Each distinct context is tokenized once and shared by all its questions (SQuAD has ~5
/// questions per paragraph, COVID-QA ~15 per article); the windows are then cut exactly as
/// `tokenizers`' pair truncation (`only_second` + stride) cuts them, and the model's own
/// post-processor adds the special tokens, so the result equals encoding each pair from scratch.
/// This holds for every tokenizer kind (WordPiece, byte-level BPE, Unigram/Metaspace): the
/// pieces are encoded without the post-processor, which runs once per window, as `tokenizers`
/// runs it once per pair (RoBERTa's trims offsets, so running it twice would trim twice), and
/// context tokens are told apart by sequence ids, not token types (RoBERTa has none).
/// Tokenizers that pad on the left (run_qa then puts the context first) are refused.
pub fn build_features(
    tokenizer: &Tokenizer,
    examples: &[Example],
    config: &FeatureConfig,
) -> Result<FeatureSet> {
    config.validate()?;
    // Read before the padding settings are cleared below: they may name the pad id.
    let pad_id = pad_token_id(tokenizer);
    let mut tokenizer = tokenizer.clone();
    // Windows are cut here; the tokenizer itself must neither truncate nor pad.
    tokenizer
        .with_truncation(None)
        .map_err(|e| DataError::Config(e.to_string()))?;
    if let Some(padding) = tokenizer.get_padding() {
        if matches!(padding.direction, tokenizers::PaddingDirection::Left) {
            return Err(DataError::Config(
                "this tokenizer pads on the left, for which run_qa puts the context before the \
                 question; only right-padding tokenizers (BERT, RoBERTa, XLM-R, ELECTRA, \
                 ALBERT, DistilBERT) are supported"
                    .into(),
            ));
        }
    }
    tokenizer.with_padding(None);
    let specials = tokenizer
        .get_post_processor()
        .map_or(0, |p| p.added_tokens(true));
    // Questions and contexts are encoded as the two halves of a pair are: without the
    // post-processor, which `example_windows` runs on each window.
    let mut encoder = tokenizer.clone();
    encoder.with_post_processor(None::<tokenizers::PostProcessorWrapper>);
    let layout = PairLayout::of(&tokenizer);
    let assembly = match &layout {
        Some(layout) => Assembly::Layout(layout),
        None => Assembly::PostProcessor(&tokenizer),
    };

    // Contexts are whole articles (tens of KB in COVID-QA): hashed with aHash, not SipHash.
    let mut context_index: ahash::AHashMap<&str, usize> = ahash::AHashMap::new();
    let mut contexts: Vec<&str> = Vec::new();
    let context_of: Vec<usize> = examples
        .iter()
        .map(|ex| {
            *context_index.entry(&*ex.context).or_insert_with(|| {
                contexts.push(&*ex.context);
                contexts.len() - 1
            })
        })
        .collect();
    let contexts_bar = progress::bar(
        contexts.len() as u64,
        "tokenize",
        "contexts",
        config.progress,
    );
    let context_tokens: Vec<std::result::Result<ContextTokens, String>> = contexts
        .par_iter()
        .progress_with(contexts_bar.clone())
        .map(|c| {
            let mut enc = encoder
                .encode_char_offsets(*c, false)
                .map_err(|e| format!("tokenizing the context failed: {e}"))?;
            // As the second sequence of a pair.
            enc.set_type_ids(vec![1; enc.len()]);
            Ok(ContextTokens::new(enc))
        })
        .collect();
    contexts_bar.finish_and_clear();

    let examples_bar = progress::bar(
        examples.len() as u64,
        "windows",
        "examples",
        config.progress,
    );
    let per_example: Vec<std::result::Result<Vec<Feature>, String>> = examples
        .par_iter()
        .enumerate()
        .progress_with(examples_bar.clone())
        .map(|(i, ex)| {
            let context = context_tokens[context_of[i]]
                .as_ref()
                .map_err(String::clone)?;
            example_windows(
                (&encoder, assembly),
                i,
                ex,
                context,
                specials,
                config,
                pad_id,
            )
        })
        .collect();
    examples_bar.finish_and_clear();

    let mut report = FeatureReport {
        examples: examples.len(),
        ..Default::default()
    };
    let mut features = Vec::new();
    for (ex, result) in examples.iter().zip(per_example) {
        match result {
            Ok(windows) => features.extend(windows),
            Err(why) => {
                let source = config
                    .source
                    .as_ref()
                    .map(|p| format!("{}: ", p.display()))
                    .unwrap_or_default();
                tracing::warn!("{source}example {}: no windows: {why}", ex.id);
                report.skipped.push((ex.id.to_string(), why));
            }
        }
    }
    report.windows = features.len();
    report.windows_with_answer = features.iter().filter(|f| f.start_position > 0).count();
    Ok(FeatureSet { features, report })
}

/// `[start, stop)` context-token ranges of the windows, as `Encoding::truncate` (direction
/// right) makes them: pieces of `piece` tokens, each starting `piece − stride` after the last.
fn window_ranges(len: usize, piece: usize, stride: usize) -> Vec<(usize, usize)> {
    let mut ranges = Vec::new();
    let mut start = 0;
    loop {
        let stop = (start + piece).min(len);
        ranges.push((start, stop));
        if stop == len {
            return ranges;
        }
        start += piece - stride;
    }
}

/// How a fixed post-processor (BERT's, or a `TemplateProcessing` such as BERT-style
/// `tokenizer.json` files carry) lays out a (question, context) pair: its special tokens and the
/// two sequences, in order. Windows are then assembled directly from the question's and the
/// context's tokens, as the processor would assemble them; building and merging `Encoding`s per
/// window (token strings, offsets, sequence ranges) was over half of `qa features`.
#[derive(Debug, Clone, PartialEq)]
struct PairLayout(Vec<PairPart>);

#[derive(Debug, Clone, PartialEq)]
enum PairPart {
    Special {
        ids: Vec<u32>,
        type_id: u32,
    },
    /// The question's tokens; `type_id` replaces theirs when the processor sets it.
    Question {
        type_id: Option<u32>,
    },
    /// The window's context tokens, likewise.
    Context {
        type_id: Option<u32>,
    },
}

/// How a window gets its special tokens.
#[derive(Clone, Copy)]
enum Assembly<'a> {
    /// Put together here from the processor's [`PairLayout`].
    Layout(&'a PairLayout),
    /// Any other processor (RoBERTa's and byte-level's trim offsets, reading token strings):
    /// `tokenizers` runs it on each window.
    PostProcessor(&'a Tokenizer),
}

impl PairLayout {
    /// The layout of `tokenizer`'s post-processor, when it is a fixed one.
    fn of(tokenizer: &Tokenizer) -> Option<Self> {
        use tokenizers::PostProcessorWrapper as Processor;
        match tokenizer.get_post_processor()? {
            Processor::Bert(bert) => Some(Self(vec![
                PairPart::Special {
                    ids: vec![bert.cls.1],
                    type_id: 0,
                },
                PairPart::Question { type_id: None },
                PairPart::Special {
                    ids: vec![bert.sep.1],
                    type_id: 0,
                },
                PairPart::Context { type_id: None },
                PairPart::Special {
                    ids: vec![bert.sep.1],
                    type_id: 1,
                },
            ])),
            // The template's pieces are private; its serialised form (tokenizer.json's) is not.
            Processor::Template(template) => {
                Self::from_template(&serde_json::to_value(template).ok()?)
            }
            _ => None,
        }
    }

    /// From a serialised `TemplateProcessing`: its `pair` pieces, each special token's ids
    /// looked up in `special_tokens`. `None` for anything unexpected (then `tokenizers` runs it).
    fn from_template(template: &serde_json::Value) -> Option<Self> {
        let type_id = |piece: &serde_json::Value| piece["type_id"].as_u64()?.try_into().ok();
        let mut parts = Vec::new();
        for piece in template["pair"].as_array()? {
            if let Some(special) = piece.get("SpecialToken") {
                let name = special["id"].as_str()?;
                let ids = template["special_tokens"][name]["ids"]
                    .as_array()?
                    .iter()
                    .map(|id| id.as_u64()?.try_into().ok())
                    .collect::<Option<Vec<u32>>>()?;
                parts.push(PairPart::Special {
                    ids,
                    type_id: type_id(special)?,
                });
            } else {
                let sequence = piece.get("Sequence")?;
                let type_id = Some(type_id(sequence)?);
                parts.push(match sequence["id"].as_str()? {
                    "A" => PairPart::Question { type_id },
                    "B" => PairPart::Context { type_id },
                    _ => return None,
                });
            }
        }
        // Each sequence exactly once, the question first (as `tokenizers` orders a pair).
        let question = |p: &PairPart| matches!(p, PairPart::Question { .. });
        let context = |p: &PairPart| matches!(p, PairPart::Context { .. });
        let places = |is: &dyn Fn(&PairPart) -> bool| {
            let places: Vec<usize> = (0..parts.len()).filter(|&i| is(&parts[i])).collect();
            places
        };
        match (places(&question).as_slice(), places(&context).as_slice()) {
            ([q], [c]) if q < c => Some(Self(parts)),
            _ => None,
        }
    }

    /// The window of `question` and `context[start..stop]`, as the processor would lay it out.
    fn window(
        &self,
        question: &Encoding,
        context: &Encoding,
        (start, stop): (usize, usize),
        keep_word_ids: bool,
    ) -> WindowTokens {
        let len = self
            .0
            .iter()
            .map(|part| match part {
                PairPart::Special { ids, .. } => ids.len(),
                PairPart::Question { .. } => question.len(),
                PairPart::Context { .. } => stop - start,
            })
            .sum();
        let mut w = WindowTokens {
            ids: Vec::with_capacity(len),
            type_ids: Vec::with_capacity(len),
            attention_mask: vec![1; len],
            offsets: Vec::with_capacity(len),
            word_ids: Vec::with_capacity(if keep_word_ids { len } else { 0 }),
        };
        for part in &self.0 {
            // (ids, their own type ids, the type id the processor sets, whether context)
            let (ids, own_types, type_id, context_part): (&[u32], &[u32], Option<u32>, bool) =
                match part {
                    PairPart::Special { ids, type_id } => (ids, &[], Some(*type_id), false),
                    PairPart::Question { type_id } => {
                        (question.get_ids(), question.get_type_ids(), *type_id, false)
                    }
                    PairPart::Context { type_id } => (
                        &context.get_ids()[start..stop],
                        &context.get_type_ids()[start..stop],
                        *type_id,
                        true,
                    ),
                };
            let n = ids.len();
            w.ids.extend_from_slice(ids);
            match type_id {
                Some(t) => w.type_ids.extend(std::iter::repeat_n(t, n)),
                None => w.type_ids.extend_from_slice(own_types),
            }
            if context_part {
                let offsets = &context.get_offsets()[start..stop];
                w.offsets.extend(offsets.iter().map(|&o| Some(o)));
                if keep_word_ids {
                    w.word_ids
                        .extend_from_slice(&context.get_word_ids()[start..stop]);
                }
            } else {
                w.offsets.extend(std::iter::repeat_n(None, n));
                if keep_word_ids {
                    w.word_ids.extend(std::iter::repeat_n(None, n));
                }
            }
        }
        w
    }
}

/// One window's tokens, however they were assembled: what [`window_feature`] labels.
struct WindowTokens {
    ids: Vec<u32>,
    type_ids: Vec<u32>,
    attention_mask: Vec<u32>,
    /// Char offsets of context tokens; `None` for question and special tokens.
    offsets: Vec<Option<(usize, usize)>>,
    /// Word index of context tokens, `None` elsewhere; empty unless asked for.
    word_ids: Vec<Option<u32>>,
}

impl WindowTokens {
    /// From an encoding `tokenizers` post-processed: context tokens are sequence 1's.
    fn from_encoding(enc: &Encoding, keep_word_ids: bool) -> Self {
        let sequence_ids = enc.get_sequence_ids();
        let context = |seq: &Option<usize>| *seq == Some(1);
        Self {
            ids: enc.get_ids().to_vec(),
            type_ids: enc.get_type_ids().to_vec(),
            attention_mask: enc.get_attention_mask().to_vec(),
            offsets: sequence_ids
                .iter()
                .zip(enc.get_offsets())
                .map(|(seq, &off)| context(seq).then_some(off))
                .collect(),
            word_ids: if keep_word_ids {
                sequence_ids
                    .iter()
                    .zip(enc.get_word_ids())
                    .map(|(seq, &w)| if context(seq) { w } else { None })
                    .collect()
            } else {
                Vec::new()
            },
        }
    }
}

fn slice_encoding(enc: &Encoding, (start, stop): (usize, usize)) -> Encoding {
    Encoding::new(
        enc.get_ids()[start..stop].to_vec(),
        enc.get_type_ids()[start..stop].to_vec(),
        enc.get_tokens()[start..stop].to_vec(),
        enc.get_word_ids()[start..stop].to_vec(),
        enc.get_offsets()[start..stop].to_vec(),
        enc.get_special_tokens_mask()[start..stop].to_vec(),
        enc.get_attention_mask()[start..stop].to_vec(),
        Vec::new(),
        ahash::AHashMap::default(),
    )
}

/// A context tokenized once for all its questions.
struct ContextTokens {
    encoding: Encoding,
    /// Per token, the first token with the same char offsets: the max-context rule keys tokens
    /// by their offsets, so tokens that share offsets share one best window.
    same_offsets_as: Vec<u32>,
}

impl ContextTokens {
    fn new(encoding: Encoding) -> Self {
        let mut first: ahash::AHashMap<(usize, usize), u32> =
            ahash::AHashMap::with_capacity(encoding.len());
        let same_offsets_as = (0u32..)
            .zip(encoding.get_offsets())
            .map(|(i, &off)| *first.entry(off).or_insert(i))
            .collect();
        Self {
            encoding,
            same_offsets_as,
        }
    }
}

/// `encoder` tokenizes the question (no post-processor); `assembly` adds the special tokens.
fn example_windows(
    (encoder, assembly): (&Tokenizer, Assembly),
    example_index: usize,
    example: &Example,
    context_tokens: &ContextTokens,
    specials: usize,
    config: &FeatureConfig,
    pad_id: u32,
) -> std::result::Result<Vec<Feature>, String> {
    let context = &context_tokens.encoding;
    let mut question = encoder
        .encode_char_offsets(example.question.as_str(), false)
        .map_err(|e| format!("tokenizing the question failed: {e}"))?;
    if let Some(keep) = config.max_question_tokens {
        question.truncate(keep, 0, tokenizers::TruncationDirection::Right);
        // The cut-off tokens would come back as extra windows.
        question.take_overflowing();
    }
    if context.is_empty() {
        return Err("the context holds no tokens (only characters the tokenizer drops)".into());
    }
    // An answer made only of characters the tokenizer drops (zero-width or control characters)
    // has no token: labelling would pick its neighbours.
    if let Some((start, end)) = example.training_answer().filter(|_| !example.is_impossible) {
        let covered = context
            .get_offsets()
            .iter()
            .any(|&(s, e)| s < end && e > start);
        if !covered {
            return Err(format!(
                "the answer (chars {start}..{end}) holds only characters the tokenizer drops: \
                 no token to label"
            ));
        }
    }
    // tokenizers' OnlySecond truncation: the question stays whole, the context is cut.
    let budget = config.max_length.saturating_sub(specials);
    let piece = budget.saturating_sub(question.len());
    let ranges = if question.len() + context.len() <= budget {
        vec![(0, context.len())]
    } else if piece == 0 || piece <= config.stride {
        return Err(format!(
            "the question takes {} of {} tokens, leaving {piece} context tokens per window (need more than doc_stride {})",
            question.len(),
            config.max_length,
            config.stride
        ));
    } else {
        window_ranges(context.len(), piece, config.stride)
    };
    let mut features = ranges
        .iter()
        .copied()
        .enumerate()
        .map(|(window, range)| {
            let tokens = match assembly {
                Assembly::Layout(layout) => {
                    layout.window(&question, context, range, config.word_ids)
                }
                Assembly::PostProcessor(tokenizer) => {
                    let enc = tokenizer
                        .post_process(question.clone(), Some(slice_encoding(context, range)), true)
                        .map_err(|e| format!("adding special tokens failed: {e}"))?;
                    WindowTokens::from_encoding(&enc, config.word_ids)
                }
            };
            window_feature(example_index, window, example, tokens, config)
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    match assembly {
        // Window offsets are the context's own: tokens are known by their index.
        Assembly::Layout(_) => {
            mark_max_context_by_index(&mut features, &ranges, &context_tokens.same_offsets_as)
        }
        // The processor may have changed offsets (RoBERTa trims them): key by the window's.
        Assembly::PostProcessor(_) => mark_max_context(&mut features),
    }
    if config.padding == Padding::MaxLength {
        for f in &mut features {
            pad_feature(f, config.max_length, pad_id);
        }
    }
    Ok(features)
}

fn window_feature(
    example_index: usize,
    window: usize,
    example: &Example,
    tokens: WindowTokens,
    config: &FeatureConfig,
) -> std::result::Result<Feature, String> {
    let offsets = tokens.offsets;
    let ctx_first = offsets.iter().position(Option::is_some);
    let ctx_last = offsets.iter().rposition(Option::is_some);
    let (Some(ctx_first), Some(ctx_last)) = (ctx_first, ctx_last) else {
        return Err(format!(
            "the question leaves no room for context in {} tokens",
            config.max_length
        ));
    };

    let spans: Vec<(usize, usize)> = if example.is_impossible {
        Vec::new()
    } else if config.label_any_answer {
        example
            .answers
            .iter()
            .filter_map(|a| Some((a.char_start?, a.char_end()?)))
            .collect()
    } else {
        example.training_answer().into_iter().collect()
    };
    let (start_position, end_position) = spans
        .iter()
        .find_map(|&(s, e)| label_span(&offsets, ctx_first, ctx_last, s, e))
        .unwrap_or((0, 0));

    Ok(Feature {
        example_index,
        window,
        input_ids: tokens.ids,
        token_type_ids: tokens.type_ids,
        attention_mask: tokens.attention_mask,
        max_context: vec![false; offsets.len()],
        word_ids: tokens.word_ids,
        offsets,
        start_position,
        end_position,
    })
}

/// run_qa's labelling: the tokens holding the answer's first and last chars, or `None` when the
/// answer is not wholly inside this window's context.
fn label_span(
    offsets: &[Option<(usize, usize)>],
    ctx_first: usize,
    ctx_last: usize,
    start_char: usize,
    end_char: usize,
) -> Option<(usize, usize)> {
    let (first_start, _) = offsets[ctx_first]?;
    let (_, last_end) = offsets[ctx_last]?;
    if !(first_start <= start_char && last_end >= end_char) {
        return None;
    }
    // The token before the first one starting after the answer's start (at least ctx_first,
    // whose start was checked above) ...
    let start = (ctx_first..=ctx_last)
        .find(|&i| offsets[i].is_none_or(|(s, _)| s > start_char))
        .unwrap_or(ctx_last + 1)
        - 1;
    // ... and the token after the last one ending before the answer's end.
    let end = (ctx_first..=ctx_last)
        .rev()
        .find(|&i| offsets[i].is_none_or(|(_, e)| e < end_char))
        .map_or(ctx_first, |i| i + 1);
    // An answer no token covers (blank, or only characters the tokenizer drops) has no span:
    // such a window is labelled [CLS], never with start after end.
    (start <= end).then_some((start, end))
}

/// For each context token, marks the window where it has the most context on both sides:
/// score = min(tokens left, tokens right) + 0.01 × window context length; ties go to the
/// earlier window (as in Google's `_check_is_max_context`).
fn mark_max_context(features: &mut [Feature]) {
    // One entry per context token of the example, sized up front: this runs for every example,
    // and growing a SipHash table here once cost a third of `qa features`.
    let tokens = features.iter().map(|f| f.offsets.len()).sum();
    let mut best: ahash::AHashMap<(usize, usize), (f64, usize)> =
        ahash::AHashMap::with_capacity(tokens);
    for (w, f) in features.iter().enumerate() {
        let n = f.offsets.iter().flatten().count();
        for (p, &off) in f.offsets.iter().flatten().enumerate() {
            let score = p.min(n - 1 - p) as f64 + 0.01 * n as f64;
            let entry = best.entry(off).or_insert((f64::NEG_INFINITY, w));
            if score > entry.0 {
                *entry = (score, w);
            }
        }
    }
    for (w, f) in features.iter_mut().enumerate() {
        for (flag, off) in f.max_context.iter_mut().zip(&f.offsets) {
            *flag = off.is_some_and(|o| best.get(&o).is_some_and(|&(_, bw)| bw == w));
        }
    }
}

/// [`mark_max_context`] for windows whose context tokens are `context[start..stop]` with the
/// context's own offsets: the same marks, with tokens known by [`ContextTokens::same_offsets_as`]
/// instead of hashed offsets (hashing every token of every window was a fifth of windowing).
fn mark_max_context_by_index(
    features: &mut [Feature],
    ranges: &[(usize, usize)],
    same_offsets_as: &[u32],
) {
    let mut best = vec![(f64::NEG_INFINITY, 0usize); same_offsets_as.len()];
    for (w, &(start, stop)) in ranges.iter().enumerate() {
        let n = stop - start;
        for (p, &token) in same_offsets_as[start..stop].iter().enumerate() {
            let score = p.min(n - 1 - p) as f64 + 0.01 * n as f64;
            let entry = &mut best[token as usize];
            if score > entry.0 {
                *entry = (score, w);
            }
        }
    }
    for ((w, f), &(start, stop)) in features.iter_mut().enumerate().zip(ranges) {
        // Context tokens are one run in the window, from its first context token on.
        let first = f.offsets.iter().position(Option::is_some).unwrap_or(0);
        let flags = &mut f.max_context[first..first + (stop - start)];
        for (flag, &token) in flags.iter_mut().zip(&same_offsets_as[start..stop]) {
            *flag = best[token as usize].1 == w;
        }
    }
}

fn pad_feature(f: &mut Feature, length: usize, pad_id: u32) {
    let extra = length.saturating_sub(f.len());
    f.input_ids.extend(std::iter::repeat_n(pad_id, extra));
    f.token_type_ids.extend(std::iter::repeat_n(0, extra));
    f.attention_mask.extend(std::iter::repeat_n(0, extra));
    f.offsets.extend(std::iter::repeat_n(None, extra));
    f.max_context.extend(std::iter::repeat_n(false, extra));
    if !f.word_ids.is_empty() {
        f.word_ids.extend(std::iter::repeat_n(None, extra));
    }
}

/// A batch as flat row-major `[batch, seq]` arrays, padded to the longest window in it.
#[derive(Debug, Clone, PartialEq)]
pub struct PaddedBatch {
    pub batch: usize,
    pub seq_len: usize,
    pub input_ids: Vec<i64>,
    pub token_type_ids: Vec<i64>,
    pub attention_mask: Vec<i64>,
    pub start_positions: Vec<i64>,
    pub end_positions: Vec<i64>,
}

/// Pads a batch of windows to its longest one with `pad_id` (mask 0, type 0).
pub fn pad_batch(features: &[&Feature], pad_id: u32) -> PaddedBatch {
    pad_batch_in_buckets(features, pad_id, 1, usize::MAX)
}

/// [`pad_batch`] to the longest window's length rounded up to a multiple of `bucket`, but never
/// past `cap` (nor below the longest window). A GPU wants few distinct shapes, so that kernels
/// and matrix-product plans made for one batch serve the next; padded positions are masked, so
/// the windows' logits do not change. `bucket` 1 pads to the longest, as the CPU wants.
pub fn pad_batch_in_buckets(
    features: &[&Feature],
    pad_id: u32,
    bucket: usize,
    cap: usize,
) -> PaddedBatch {
    let longest = features.iter().map(|f| f.len()).max().unwrap_or(0);
    let seq_len = longest
        .next_multiple_of(bucket.max(1))
        .min(cap)
        .max(longest);
    let mut b = PaddedBatch {
        batch: features.len(),
        seq_len,
        input_ids: Vec::with_capacity(features.len() * seq_len),
        token_type_ids: Vec::with_capacity(features.len() * seq_len),
        attention_mask: Vec::with_capacity(features.len() * seq_len),
        start_positions: Vec::with_capacity(features.len()),
        end_positions: Vec::with_capacity(features.len()),
    };
    for f in features {
        let extra = seq_len - f.len();
        let widen = |v: &[u32], fill: i64, out: &mut Vec<i64>| {
            out.extend(v.iter().map(|&x| x as i64));
            out.extend(std::iter::repeat_n(fill, extra));
        };
        widen(&f.input_ids, pad_id as i64, &mut b.input_ids);
        widen(&f.token_type_ids, 0, &mut b.token_type_ids);
        widen(&f.attention_mask, 0, &mut b.attention_mask);
        b.start_positions.push(f.start_position as i64);
        b.end_positions.push(f.end_position as i64);
    }
    b
}

/// One line of the features JSONL (the schema of `../shared/golden/covid_dev_features.jsonl`).
#[derive(Serialize)]
struct FeatureLine<'a> {
    id: serde_json::Value,
    window: usize,
    input_ids: &'a [u32],
    token_type_ids: &'a [u32],
    attention_mask: &'a [u32],
    offsets: Vec<Option<[usize; 2]>>,
    start_position: usize,
    end_position: usize,
}

/// Writes one JSON line per window, unpadded (padding, if any, is cut off by the mask).
pub fn write_features_jsonl<W: Write>(
    mut out: W,
    features: &[Feature],
    examples: &[Example],
) -> std::io::Result<()> {
    for f in features {
        let n = f.attention_mask.iter().take_while(|&&m| m == 1).count();
        let line = FeatureLine {
            id: examples[f.example_index].id.as_json(),
            window: f.window,
            input_ids: &f.input_ids[..n],
            token_type_ids: &f.token_type_ids[..n],
            attention_mask: &f.attention_mask[..n],
            offsets: f.offsets[..n]
                .iter()
                .map(|o| o.map(|(s, e)| [s, e]))
                .collect(),
            start_position: f.start_position,
            end_position: f.end_position,
        };
        serde_json::to_writer(&mut out, &line)?;
        out.write_all(b"\n")?;
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Windows assembled from the processor's layout equal the ones `tokenizers` post-processes,
    /// for BERT's processor (a `vocab.txt` tokenizer) and a template (`tokenizer.json`): ids,
    /// types, offsets, labels, word ids and max-context marks, on long COVID-QA contexts.
    #[test]
    fn layout_windows_equal_post_processed_ones() {
        let shared = qa_testkit::shared_dir();
        let model = shared.join("models/all-MiniLM-L6-v2");
        let data = crate::load(
            shared.join("data/covid-qa/dev.json"),
            &crate::LoadOptions::default(),
        )
        .unwrap();
        let config = FeatureConfig {
            word_ids: true,
            progress: Progress::Hidden,
            ..Default::default()
        };
        for tokenizer in [model.join("vocab.txt"), model.clone()] {
            // As `build_features` sets it up: windows are cut here, never by the tokenizer.
            let mut tokenizer = crate::load_tokenizer(&tokenizer).unwrap();
            tokenizer.with_truncation(None).unwrap().with_padding(None);
            let layout = PairLayout::of(&tokenizer).expect("a fixed layout");
            let mut encoder = tokenizer.clone();
            encoder.with_post_processor(None::<tokenizers::PostProcessorWrapper>);
            let specials = tokenizer.get_post_processor().unwrap().added_tokens(true);
            let mut windows = 0;
            for (i, example) in data.examples.iter().take(8).enumerate() {
                let mut context = encoder
                    .encode_char_offsets(&*example.context, false)
                    .unwrap();
                context.set_type_ids(vec![1; context.len()]);
                let context = ContextTokens::new(context);
                let build = |assembly| {
                    example_windows(
                        (&encoder, assembly),
                        i,
                        example,
                        &context,
                        specials,
                        &config,
                        0,
                    )
                    .unwrap()
                };
                let assembled = build(Assembly::Layout(&layout));
                assert_eq!(
                    assembled,
                    build(Assembly::PostProcessor(&tokenizer)),
                    "example {i}"
                );
                windows += assembled.len();
            }
            assert!(
                windows > 8 * 5,
                "long contexts give several windows: {windows}"
            );
        }
    }

    #[test]
    fn train_windows_with_answer_keep_only_labelled_spans() {
        let window = |start_position| Feature {
            example_index: 0,
            window: 0,
            input_ids: vec![],
            token_type_ids: vec![],
            attention_mask: vec![],
            offsets: vec![],
            max_context: vec![],
            word_ids: vec![],
            start_position,
            end_position: start_position,
        };
        let all = vec![window(0), window(7), window(0), window(3)];
        assert_eq!(TrainWindows::All.select(all.clone()), all);
        let kept = TrainWindows::WithAnswer.select(all);
        let starts: Vec<usize> = kept.iter().map(|f| f.start_position).collect();
        assert_eq!(starts, [7, 3]);
        assert_eq!(
            "with-answer".parse::<TrainWindows>(),
            Ok(TrainWindows::WithAnswer)
        );
        assert_eq!(TrainWindows::WithAnswer.to_string(), "with-answer");
        assert!("some".parse::<TrainWindows>().is_err());
    }
}
