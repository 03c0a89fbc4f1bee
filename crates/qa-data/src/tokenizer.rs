//! Loading a Hugging Face tokenizer: `tokenizer.json` when present, else a BERT WordPiece
//! tokenizer rebuilt from `vocab.txt` and `tokenizer_config.json` (older checkpoints ship only those).
//! A folder with only a SentencePiece model (`spm.model`, ...) is refused with the one-line
//! conversion that writes its `tokenizer.json`.

use std::path::Path;

use tokenizers::decoders::wordpiece::WordPiece as WordPieceDecoder;
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::bert::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::bert::BertProcessing;
use tokenizers::Tokenizer;

use crate::error::{DataError, Result};
use crate::record::{parse_json, read_text};

/// The files slow SentencePiece tokenizers save (DeBERTa-v2/v3, ALBERT, XLM-RoBERTa), which
/// this crate does not read: `tokenizers` has no SentencePiece protobuf reader.
pub const SENTENCEPIECE_FILES: [&str; 3] = ["spm.model", "spiece.model", "sentencepiece.bpe.model"];

/// Loads the tokenizer of a model folder (or a `tokenizer.json` / `vocab.txt` file directly).
pub fn load_tokenizer(path: &Path) -> Result<Tokenizer> {
    let (json, vocab, config) = if path.is_dir() {
        (
            path.join("tokenizer.json"),
            path.join("vocab.txt"),
            path.join("tokenizer_config.json"),
        )
    } else if path.extension().is_some_and(|e| e == "txt") {
        (
            path.with_file_name("tokenizer.json-not-used"),
            path.to_path_buf(),
            path.with_file_name("tokenizer_config.json"),
        )
    } else {
        (
            path.to_path_buf(),
            path.with_file_name("vocab.txt"),
            path.with_file_name("tokenizer_config.json"),
        )
    };
    if json.is_file() || (!path.is_dir() && json == path && path.exists()) {
        return tokenizer_from_json(&json);
    }
    if vocab.is_file() {
        return wordpiece_from_vocab(&vocab, &config);
    }
    if let Some(model_file) = SENTENCEPIECE_FILES
        .iter()
        .find(|name| path.is_dir() && path.join(name).is_file())
    {
        return Err(DataError::SentencePieceOnly {
            path: path.to_path_buf(),
            model_file: model_file.to_string(),
        });
    }
    Err(DataError::NoTokenizer {
        path: path.to_path_buf(),
    })
}

/// Reads a `tokenizer.json`, telling apart a file that is no JSON ([`DataError::Json`]), JSON
/// that is no tokenizer (`{}`, a `config.json`: [`DataError::NotATokenizer`]) and a tokenizer
/// that `tokenizers` cannot build.
fn tokenizer_from_json(path: &Path) -> Result<Tokenizer> {
    let text = read_text(path)?;
    let value = parse_json(path, &text)?;
    // `model` is the one key a tokenizer file cannot do without.
    if value.get("model").is_none() {
        let why = if value.is_object() {
            "it has no \"model\" key"
        } else {
            "it is not a JSON object"
        };
        return Err(DataError::NotATokenizer {
            path: path.to_path_buf(),
            why: format!("{why}; `save_pretrained` or `tokenizer.save()` writes one"),
        });
    }
    text.parse::<Tokenizer>()
        .map_err(|e| DataError::NotATokenizer {
            path: path.to_path_buf(),
            why: e.to_string(),
        })
}

/// The settings of `tokenizer_config.json` that shape a BERT tokenizer.
#[derive(Debug, serde::Deserialize)]
struct BertTokenizerConfig {
    #[serde(default = "yes")]
    do_lower_case: bool,
    #[serde(default = "yes")]
    tokenize_chinese_chars: bool,
    #[serde(default)]
    strip_accents: Option<bool>,
    #[serde(default = "unk")]
    unk_token: String,
    #[serde(default = "sep")]
    sep_token: String,
    #[serde(default = "cls")]
    cls_token: String,
}

fn yes() -> bool {
    true
}
fn unk() -> String {
    "[UNK]".into()
}
fn sep() -> String {
    "[SEP]".into()
}
fn cls() -> String {
    "[CLS]".into()
}

fn wordpiece_from_vocab(vocab: &Path, config_path: &Path) -> Result<Tokenizer> {
    let config: BertTokenizerConfig = if config_path.is_file() {
        serde_json::from_value(parse_json(config_path, &read_text(config_path)?)?).map_err(
            |source| DataError::Json {
                path: config_path.to_path_buf(),
                line: None,
                source,
            },
        )?
    } else {
        // BERT's defaults: an uncased vocabulary.
        serde_json::from_str("{}").expect("empty object parses")
    };
    let tok_err = |what: String| DataError::Tokenizer {
        path: vocab.to_path_buf(),
        what,
    };
    let vocab_str = vocab
        .to_str()
        .ok_or_else(|| tok_err("path is not UTF-8".into()))?;
    let model = WordPiece::from_file(vocab_str)
        .unk_token(config.unk_token.clone())
        .build()
        .map_err(|e| tok_err(e.to_string()))?;
    let token_id = |token: &str| {
        tokenizers::Model::token_to_id(&model, token)
            .ok_or_else(|| tok_err(format!("special token {token} is not in the vocabulary")))
    };
    let sep = (config.sep_token.clone(), token_id(&config.sep_token)?);
    let cls = (config.cls_token.clone(), token_id(&config.cls_token)?);
    let mut tokenizer = Tokenizer::new(model);
    tokenizer
        .with_normalizer(Some(BertNormalizer::new(
            true,
            config.tokenize_chinese_chars,
            config.strip_accents,
            config.do_lower_case,
        )))
        .with_pre_tokenizer(Some(BertPreTokenizer))
        .with_post_processor(Some(BertProcessing::new(sep, cls)))
        .with_decoder(Some(WordPieceDecoder::default()));
    Ok(tokenizer)
}

/// The id batches are padded with, the one definition for features, training and inference:
/// the tokenizer's own padding settings when it has them, else its `[PAD]` (BERT) or `<pad>`
/// (RoBERTa) token, else 0.
pub fn pad_token_id(tokenizer: &Tokenizer) -> u32 {
    if let Some(padding) = tokenizer.get_padding() {
        return padding.pad_id;
    }
    ["[PAD]", "<pad>"]
        .iter()
        .find_map(|token| tokenizer.token_to_id(token))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokenizers::PaddingParams;

    fn wordpiece(vocab: &[(&str, u32)]) -> Tokenizer {
        let vocab: ahash::AHashMap<String, u32> = vocab
            .iter()
            .map(|&(token, id)| (token.to_string(), id))
            .collect();
        let model = WordPiece::builder()
            .vocab(vocab)
            .unk_token("[UNK]".into())
            .build()
            .unwrap();
        Tokenizer::new(model)
    }

    #[test]
    fn pad_token_id_prefers_padding_settings_then_pad_tokens_then_zero() {
        let bert = wordpiece(&[("[UNK]", 0), ("hello", 1), ("[PAD]", 5)]);
        assert_eq!(pad_token_id(&bert), 5);

        let roberta_like = wordpiece(&[("[UNK]", 0), ("<pad>", 1)]);
        assert_eq!(pad_token_id(&roberta_like), 1);

        let no_pad_token = wordpiece(&[("[UNK]", 3), ("hello", 1)]);
        assert_eq!(pad_token_id(&no_pad_token), 0);

        let mut configured = wordpiece(&[("[UNK]", 0), ("[PAD]", 5)]);
        configured.with_padding(Some(PaddingParams {
            pad_id: 9,
            ..Default::default()
        }));
        assert_eq!(pad_token_id(&configured), 9);
    }

    #[test]
    fn pad_token_id_of_the_shared_minilm_tokenizer_is_its_pad_token() {
        let dir = qa_testkit::shared_dir().join("models/all-MiniLM-L6-v2");
        let tokenizer = load_tokenizer(&dir).unwrap();
        assert_eq!(
            Some(pad_token_id(&tokenizer)),
            tokenizer.token_to_id("[PAD]")
        );
    }
}
