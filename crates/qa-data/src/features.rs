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
    fn validate(&self) -> Result<()> {
        if self.max_length < 8 {
            return Err(DataError::Config(format!(
                "max_length {} is too small",
                self.max_length
            )));
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
    let token_strings = TokenStrings::needed_by(&tokenizer);

    // Contexts are whole articles (tens of KB in COVID-QA): hashed with aHash, not SipHash.
    let mut context_index: ahash::AHashMap<&str, usize> = ahash::AHashMap::new();
    let mut contexts: Vec<&str> = Vec::new();
    let context_of: Vec<usize> = examples
        .iter()
        .map(|ex| {
            *context_index.entry(ex.context.as_str()).or_insert_with(|| {
                contexts.push(ex.context.as_str());
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
    let context_tokens: Vec<std::result::Result<Encoding, String>> = contexts
        .par_iter()
        .progress_with(contexts_bar.clone())
        .map(|c| {
            let mut enc = encoder
                .encode_char_offsets(*c, false)
                .map_err(|e| format!("tokenizing the context failed: {e}"))?;
            // As the second sequence of a pair.
            enc.set_type_ids(vec![1; enc.len()]);
            Ok(match token_strings {
                TokenStrings::Keep => enc,
                TokenStrings::Drop => without_token_strings(&enc),
            })
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
            let tokenizers = (&encoder, &tokenizer);
            example_windows(tokenizers, i, ex, context, specials, config, pad_id)
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

/// Whether the windows' token strings must be kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TokenStrings {
    /// The post-processor reads them (RoBERTa's and byte-level's offset trimming).
    Keep,
    /// Nothing reads them: windows carry empty strings, which cost no allocation per token.
    Drop,
}

impl TokenStrings {
    /// What `tokenizer`'s post-processor needs. BERT's and template processors only move token
    /// strings around, and windows keep ids, types, masks and offsets, never the strings;
    /// cloning a `String` per context token per window was a fifth of `qa features`.
    fn needed_by(tokenizer: &Tokenizer) -> Self {
        use tokenizers::PostProcessorWrapper as Processor;
        match tokenizer.get_post_processor() {
            None | Some(Processor::Bert(_)) | Some(Processor::Template(_)) => Self::Drop,
            Some(_) => Self::Keep,
        }
    }
}

/// `enc` with every token string empty.
fn without_token_strings(enc: &Encoding) -> Encoding {
    Encoding::new(
        enc.get_ids().to_vec(),
        enc.get_type_ids().to_vec(),
        vec![String::new(); enc.len()],
        enc.get_word_ids().to_vec(),
        enc.get_offsets().to_vec(),
        enc.get_special_tokens_mask().to_vec(),
        enc.get_attention_mask().to_vec(),
        Vec::new(),
        ahash::AHashMap::default(),
    )
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

/// `encoder` tokenizes the question (no post-processor); `tokenizer` adds the special tokens.
fn example_windows(
    (encoder, tokenizer): (&Tokenizer, &Tokenizer),
    example_index: usize,
    example: &Example,
    context: &Encoding,
    specials: usize,
    config: &FeatureConfig,
    pad_id: u32,
) -> std::result::Result<Vec<Feature>, String> {
    let question = encoder
        .encode_char_offsets(example.question.as_str(), false)
        .map_err(|e| format!("tokenizing the question failed: {e}"))?;
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
        .into_iter()
        .enumerate()
        .map(|(window, range)| {
            let enc = tokenizer
                .post_process(question.clone(), Some(slice_encoding(context, range)), true)
                .map_err(|e| format!("adding special tokens failed: {e}"))?;
            window_feature(example_index, window, example, &enc, config)
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    mark_max_context(&mut features);
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
    enc: &Encoding,
    config: &FeatureConfig,
) -> std::result::Result<Feature, String> {
    let sequence_ids = enc.get_sequence_ids();
    let offsets: Vec<Option<(usize, usize)>> = sequence_ids
        .iter()
        .zip(enc.get_offsets())
        .map(|(seq, &off)| (*seq == Some(1)).then_some(off))
        .collect();
    let ctx_first = sequence_ids.iter().position(|s| *s == Some(1));
    let ctx_last = sequence_ids.iter().rposition(|s| *s == Some(1));
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
        input_ids: enc.get_ids().to_vec(),
        token_type_ids: enc.get_type_ids().to_vec(),
        attention_mask: enc.get_attention_mask().to_vec(),
        max_context: vec![false; offsets.len()],
        word_ids: if config.word_ids {
            sequence_ids
                .iter()
                .zip(enc.get_word_ids())
                .map(|(seq, &w)| if *seq == Some(1) { w } else { None })
                .collect()
        } else {
            Vec::new()
        },
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
    let seq_len = features.iter().map(|f| f.len()).max().unwrap_or(0);
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
