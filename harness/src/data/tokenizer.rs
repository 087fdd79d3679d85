//! The WordPiece tokenizer: the reference normaliser (upstream `_construct_tokenizer` in `cramming/data/tokenizer_preparation.py`, JonasGeiping/cramming 196c991), training with the
//! `tokenizers` crate, fixed special-token ids, saving and loading `tokenizer.json`, and a fast
//! encoder that gives the same ids as `Tokenizer::encode` for the common case.
//!
//! Pipeline of the saved `tokenizer.json` (loadable by Python `tokenizers` with identical ids):
//!
//! * normaliser: Replace "``"→"\"", Replace "''"→"\"", NFD, Lowercase, StripAccents,
//!   Replace regex ` {2,}`→" ", Replace regex `[^\x00-\x7F]+`→"" (switches: `lowercase`,
//!   `strip_accents` — NFD and StripAccents, or NFKC without them — and `ascii_only`);
//! * pre-tokenizer `Whitespace` (`\w+|[^\w\s]+`);
//! * model `WordPiece(unk = "<unk>", prefix "##", max 100 chars per word)`, decoder `WordPiece`;
//! * post-processor: single `$A <sep>`, pair `<cls> $A <sep> $B <sep>` (all type 0).
//!
//! Special tokens have FIXED ids (the reference's are hash-random per build): see [`special`].
use crate::error::Error;
use anyhow::{Context, Result};
use std::collections::HashMap;
use std::path::Path;
use tokenizers::models::wordpiece::{WordPiece, WordPieceTrainer};
use tokenizers::normalizers::replace::ReplacePattern;
use tokenizers::normalizers::{Lowercase, Replace, Sequence, StripAccents, NFD, NFKC};
use tokenizers::pre_tokenizers::whitespace::Whitespace;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, Model, Normalizer, NormalizerWrapper, Tokenizer, TokenizerImpl};

/// Special tokens and their fixed ids. Every crambench tokenizer has exactly these ids.
pub mod special {
    pub const PAD: u32 = 0;
    pub const BOS: u32 = 1;
    pub const EOS: u32 = 2;
    pub const UNK: u32 = 3;
    pub const CLS: u32 = 4;
    pub const SEP: u32 = 5;
    pub const MASK: u32 = 6;
    /// Number of special tokens; regular tokens start at this id.
    pub const COUNT: u32 = 7;
    /// The token strings, indexed by id.
    pub const TOKENS: [&str; 7] = ["<pad>", "<s>", "</s>", "<unk>", "<cls>", "<sep>", "<mask>"];
}

/// Normaliser switches (`[data]` `lowercase`, `strip_accents`, `ascii_only`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NormalizerOptions {
    pub lowercase: bool,
    pub strip_accents: bool,
    pub ascii_only: bool,
}

impl Default for NormalizerOptions {
    fn default() -> Self {
        NormalizerOptions {
            lowercase: true,
            strip_accents: true,
            ascii_only: true,
        }
    }
}

fn replace(pattern: ReplacePattern, content: &str) -> NormalizerWrapper {
    NormalizerWrapper::Replace(Replace::new(pattern, content).expect("static pattern"))
}

/// The reference normaliser sequence, as upstream's `_get_sane_normalizers` builds it
/// (`cramming/data/tokenizer_preparation.py`, JonasGeiping/cramming 196c991 and
/// Last1.13release): NFD when accents are stripped, else NFKC.
pub fn normalizer(o: NormalizerOptions) -> Sequence {
    let mut seq: Vec<NormalizerWrapper> = vec![
        replace(ReplacePattern::String("``".into()), "\""),
        replace(ReplacePattern::String("''".into()), "\""),
    ];
    seq.push(if o.strip_accents {
        NFD.into()
    } else {
        NFKC.into()
    });
    if o.lowercase {
        seq.push(Lowercase.into());
    }
    if o.strip_accents {
        seq.push(StripAccents.into());
    }
    seq.push(replace(ReplacePattern::Regex(" {2,}".into()), " "));
    if o.ascii_only {
        seq.push(replace(ReplacePattern::Regex(r"[^\x00-\x7F]+".into()), ""));
    }
    Sequence::new(seq)
}

fn post_processor() -> TemplateProcessing {
    TemplateProcessing::builder()
        .try_single("$A <sep>")
        .expect("static template")
        .try_pair("<cls> $A <sep> $B <sep>")
        .expect("static template")
        .special_tokens(vec![("<cls>", special::CLS), ("<sep>", special::SEP)])
        .build()
        .expect("static template")
}

/// Train a WordPiece tokenizer of `vocab_size` tokens (special tokens included) on `texts`.
/// Fails if the corpus is too small to reach `vocab_size` (as the reference does).
pub fn train<I, S>(texts: I, vocab_size: u32, o: NormalizerOptions) -> Result<Tokenizer>
where
    I: Iterator<Item = S> + Send,
    S: AsRef<str> + Send,
{
    let model = WordPiece::builder()
        .unk_token(special::TOKENS[special::UNK as usize].into())
        .continuing_subword_prefix("##".into())
        .max_input_chars_per_word(100)
        .build()
        .map_err(|e| anyhow::anyhow!("building WordPiece: {e}"))?;
    let mut tk: TokenizerImpl<
        WordPiece,
        Sequence,
        Whitespace,
        TemplateProcessing,
        tokenizers::decoders::wordpiece::WordPiece,
    > = TokenizerImpl::new(model);
    tk.with_normalizer(Some(normalizer(o)))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    tk.with_pre_tokenizer(Some(Whitespace {}));
    tk.with_post_processor(Some(post_processor()));
    tk.with_decoder(Some(tokenizers::decoders::wordpiece::WordPiece::default()));
    // Determinism: the tokenizers BPE/WordPiece trainer gives "##c" continuation tokens their
    // ids in the iteration order of a randomly seeded hash map, and ids break ties between
    // equally frequent merges, so two trainings on the same text can differ. Pre-registering
    // every "##c" the ASCII-only normaliser can produce (as trainer special tokens, removed
    // from the added vocabulary below) fixes their ids; the rest of training is ordered by
    // (count, pair ids). Without `ascii_only` other characters may appear and training is not
    // guaranteed deterministic.
    let mut specials: Vec<AddedToken> = special::TOKENS
        .iter()
        .map(|t| AddedToken::from(*t, true))
        .collect();
    if o.ascii_only {
        for b in 0u8..0x80 {
            let c = b as char;
            let space = matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r');
            if space || (o.lowercase && c.is_ascii_uppercase()) {
                continue;
            }
            specials.push(AddedToken::from(format!("##{c}"), true));
        }
    }
    let mut trainer = WordPieceTrainer::builder()
        .vocab_size(vocab_size as usize)
        .min_frequency(0)
        .show_progress(false)
        .special_tokens(specials)
        .build();
    tk.train(&mut trainer, texts)
        .map_err(|e| anyhow::anyhow!("training WordPiece: {e}"))?;
    let json = tk
        .to_string(true)
        .map_err(|e| anyhow::anyhow!("serialising the tokenizer: {e}"))?;
    // Keep only the real special tokens in the added vocabulary (the "##c" seeds stay in the
    // WordPiece vocabulary as ordinary tokens).
    let mut v: serde_json::Value = serde_json::from_str(&json)?;
    if let Some(added) = v.get_mut("added_tokens").and_then(|a| a.as_array_mut()) {
        added.retain(|t| {
            t.get("content")
                .and_then(|c| c.as_str())
                .is_some_and(|c| special::TOKENS.contains(&c))
        });
    }
    let tok: Tokenizer = serde_json::to_string(&v)?
        .parse()
        .map_err(|e| anyhow::anyhow!("re-reading the tokenizer: {e}"))?;
    let got = tok.get_vocab_size(true) as u32;
    if got != vocab_size {
        return Err(vocab_mismatch(vocab_size, got).into());
    }
    check_specials(&tok, "trained tokenizer")?;
    Ok(tok)
}

/// Why training gave `got` tokens instead of `vocab_size`, with the change that can help.
fn vocab_mismatch(vocab_size: u32, got: u32) -> Error {
    let min = crate::data::config::MIN_VOCAB_SIZE;
    if got > vocab_size {
        // The special tokens and the pre-registered "##c" seeds are always in the vocabulary.
        Error::input(
            "data.vocab_size",
            format!(
                "{vocab_size} is smaller than the {got} tokens every tokenizer of these \
                 normaliser settings holds (special tokens and continuation seeds); raise \
                 data.vocab_size to at least {got}"
            ),
        )
    } else if got < min {
        Error::input(
            "corpus",
            format!(
                "too small to train a vocabulary of {vocab_size} tokens: training stopped at \
                 {got}, below the smallest data.vocab_size allowed ({min}); use a larger corpus"
            ),
        )
    } else {
        Error::input(
            "corpus",
            format!(
                "too small to train a vocabulary of {vocab_size} tokens: training stopped at \
                 {got}; lower data.vocab_size to at most {got} or use a larger corpus"
            ),
        )
    }
}

/// The canonical bytes of a tokenizer (what is saved and hashed).
pub fn to_bytes(tok: &Tokenizer) -> Result<Vec<u8>> {
    let mut s = tok
        .to_string(true)
        .map_err(|e| anyhow::anyhow!("serialising the tokenizer: {e}"))?;
    s.push('\n');
    Ok(s.into_bytes())
}

/// Save `tok` atomically as `path`; returns the SHA-256 of the bytes written.
pub fn save(tok: &Tokenizer, path: &Path) -> Result<String> {
    let bytes = to_bytes(tok)?;
    crate::io::write_atomic(path, &bytes, None)?;
    Ok(crate::provenance::hash::sha256_hex(&bytes))
}

/// Load a `tokenizer.json` and check that its special tokens have the fixed ids of [`special`].
pub fn load_tokenizer(path: &Path) -> Result<Tokenizer> {
    let bytes = crate::io::read_limited(path, 1 << 30)?;
    let text = std::str::from_utf8(&bytes)
        .map_err(|e| Error::input(path.display(), format!("not UTF-8: {e}")))?;
    let tok: Tokenizer = text.parse().map_err(|e| {
        Error::input(
            path.display(),
            format!("not a tokenizers tokenizer.json: {e}"),
        )
    })?;
    check_specials(&tok, &path.display().to_string())?;
    Ok(tok)
}

/// Load a reference `tokenizer.json` whose seven special tokens occupy ids 0–6 in some order
/// (the Cramming reference's hash-random order) and move them to the fixed ids of [`special`].
/// Returns the rewritten tokenizer and `remap`, with `remap[old_id] = new_id` for ids 0–6 (ids
/// from 7 up are unchanged). Used for pre-tokenised (`parquet-ids`) data.
pub fn load_remapping_specials(path: &Path) -> Result<(Tokenizer, [u32; 7])> {
    load_remapping_specials_pinned(path, None)
}

/// [`load_remapping_specials`], refusing (exit 1) bytes that are not the pinned `(sha256,
/// size)`: the bytes parsed are the bytes checked, so a file changed after its pin check is
/// not used.
pub fn load_remapping_specials_pinned(
    path: &Path,
    pin: Option<&(String, u64)>,
) -> Result<(Tokenizer, [u32; 7])> {
    let bytes = crate::io::read_limited(path, 1 << 30)?;
    let what = path.display().to_string();
    if let Some((sha256, size)) = pin {
        let got = crate::provenance::hash::sha256_hex(&bytes);
        if &got != sha256 || bytes.len() as u64 != *size {
            return Err(Error::Check(format!(
                "{what}: changed while it was read: the pin check saw sha256 {sha256} and size \
                 {size}, the bytes read hash to {got} and size {}; refusing to build a dataset \
                 from them",
                bytes.len()
            ))
            .into());
        }
    }
    let mut v: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| Error::input(&what, format!("not JSON: {e}")))?;
    let vocab = v
        .pointer_mut("/model/vocab")
        .and_then(|x| x.as_object_mut())
        .ok_or_else(|| Error::input(&what, "no model.vocab (not a WordPiece tokenizer.json)"))?;
    let mut remap = [u32::MAX; 7];
    for (new, t) in special::TOKENS.iter().enumerate() {
        let old = vocab
            .get(*t)
            .and_then(|x| x.as_u64())
            .filter(|&o| o < 7)
            .ok_or_else(|| {
                Error::input(&what, format!("special token {t} is not among ids 0-6"))
            })?;
        remap[old as usize] = new as u32;
        vocab.insert(t.to_string(), new.into());
    }
    let new_id = |old: u64| -> u64 {
        if old < 7 {
            remap[old as usize] as u64
        } else {
            old
        }
    };
    if let Some(added) = v.get_mut("added_tokens").and_then(|a| a.as_array_mut()) {
        for t in added {
            if let Some(id) = t.get("id").and_then(|x| x.as_u64()) {
                t["id"] = new_id(id).into();
            }
        }
    }
    if let Some(st) = v
        .pointer_mut("/post_processor/special_tokens")
        .and_then(|x| x.as_object_mut())
    {
        for (_, t) in st.iter_mut() {
            if let Some(ids) = t.get_mut("ids").and_then(|x| x.as_array_mut()) {
                for id in ids {
                    if let Some(o) = id.as_u64() {
                        *id = new_id(o).into();
                    }
                }
            }
        }
    }
    let tok: Tokenizer = serde_json::to_string(&v)?
        .parse()
        .map_err(|e| Error::input(&what, format!("not a tokenizers tokenizer.json: {e}")))?;
    check_specials(&tok, &what)?;
    Ok((tok, remap))
}

fn check_specials(tok: &Tokenizer, what: &str) -> Result<()> {
    for (id, t) in special::TOKENS.iter().enumerate() {
        if tok.token_to_id(t) != Some(id as u32) {
            return Err(Error::input(
                what,
                format!(
                    "special token {t} has id {:?}; crambench tokenizers have it at {id}",
                    tok.token_to_id(t)
                ),
            )
            .into());
        }
    }
    Ok(())
}

/// Encodes documents to ids exactly as `tokenizer.encode(text, true)` does, with a fast path.
///
/// The fast path applies when the normalised text is ASCII (always, with `ascii_only`) and
/// accents are stripped: every step of the reference normaliser except the two pair replacements and
/// the space collapse maps one input character to a string independently of its neighbours, and
/// canonical reordering in NFD only moves combining marks, which StripAccents or the ASCII
/// filter remove. (NFKC, used without `strip_accents`, composes a letter and a following
/// combining mark into one non-ASCII character that the filter drops, so it is not per
/// character: those tokenizers always take the slow path.) So the
/// normalised text is `drop_non_ascii(collapse_spaces(concat(map(c))))` with a per-character map
/// computed once per character by the real normaliser and cached. Words (the `Whitespace`
/// pre-tokenizer's `\w+|[^\w\s]+` on ASCII) are cached with their WordPiece ids. Documents with
/// a special-token string in them, ASCII control characters other than `\t\n\v\f\r`, or
/// non-ASCII output take the slow path (`Tokenizer::encode_fast`). Tests check both paths give
/// the same ids on the demo corpus.
pub struct Encoder<'t> {
    tok: &'t Tokenizer,
    wp: &'t WordPiece,
    norm: &'t NormalizerWrapper,
    fast: bool,
    lower: bool,
}

/// Per-thread caches of an [`Encoder`].
#[derive(Default)]
pub struct EncoderCache {
    chars: HashMap<char, String>,
    words: HashMap<Box<[u8]>, Box<[u32]>>,
    norm: Vec<u8>,
}

/// Cap on cached words per thread.
const WORD_CACHE_MAX: usize = 1 << 20;

impl<'t> Encoder<'t> {
    /// An encoder for `tok` (any tokenizer whose model is WordPiece; the fast path is used only
    /// if its normaliser is the reference sequence with `ascii_only`).
    pub fn new(tok: &'t Tokenizer) -> Result<Self> {
        let wp = match tok.get_model() {
            tokenizers::ModelWrapper::WordPiece(wp) => wp,
            _ => anyhow::bail!("the tokenizer's model is not WordPiece"),
        };
        let norm = tok
            .get_normalizer()
            .context("the tokenizer has no normaliser")?;
        let fast = [true, false].iter().any(|&lowercase| {
            let want = serde_json::to_value(normalizer(NormalizerOptions {
                lowercase,
                strip_accents: true,
                ascii_only: true,
            }))
            .ok();
            want.is_some() && want == serde_json::to_value(norm).ok()
        });
        let pre_ok = serde_json::to_value(tok.get_pre_tokenizer()).ok()
            == serde_json::to_value(Some(Whitespace {})).ok();
        let post_ok = serde_json::to_value(tok.get_post_processor()).ok()
            == serde_json::to_value(Some(post_processor())).ok();
        let mut a = tokenizers::NormalizedString::from("A");
        let lower = norm.normalize(&mut a).is_ok() && a.get() == "a";
        let fast = fast
            && pre_ok
            && post_ok
            && tok.get_added_vocabulary().len() == special::COUNT as usize;
        Ok(Encoder {
            tok,
            wp,
            norm,
            fast,
            lower,
        })
    }

    /// Whether the fast path is available for this tokenizer.
    pub fn has_fast_path(&self) -> bool {
        self.fast
    }

    /// Ids of `text` with the post-processor applied (ends with `<sep>`), appended to `out`.
    pub fn encode_into(
        &self,
        text: &str,
        cache: &mut EncoderCache,
        out: &mut Vec<u32>,
    ) -> Result<()> {
        if self.fast && self.try_fast(text, cache, out)? {
            return Ok(());
        }
        self.encode_slow(text, out)
    }

    /// The reference path: `Tokenizer::encode_fast(text, true)`.
    pub fn encode_slow(&self, text: &str, out: &mut Vec<u32>) -> Result<()> {
        let enc = self
            .tok
            .encode_fast(text, true)
            .map_err(|e| anyhow::anyhow!("tokenizing: {e}"))?;
        out.extend_from_slice(enc.get_ids());
        Ok(())
    }

    fn map_char<'c>(&self, c: char, chars: &'c mut HashMap<char, String>) -> Result<&'c str> {
        if let std::collections::hash_map::Entry::Vacant(slot) = chars.entry(c) {
            let mut ns = tokenizers::NormalizedString::from(c.to_string());
            self.norm
                .normalize(&mut ns)
                .map_err(|e| anyhow::anyhow!("normalising: {e}"))?;
            slot.insert(ns.get().to_string());
        }
        Ok(chars.get(&c).map(String::as_str).unwrap_or(""))
    }

    /// Fast path; returns false (having written nothing) when the document needs the slow path.
    fn try_fast(&self, text: &str, cache: &mut EncoderCache, out: &mut Vec<u32>) -> Result<bool> {
        if text.contains('<') && special::TOKENS.iter().any(|t| text.contains(t)) {
            return Ok(false);
        }
        // 1. Normalise into cache.norm: pair replacements, per-char map, collapse spaces; then
        //    drop non-ASCII (kept as 0x80 markers until the collapse is done).
        let EncoderCache { chars, words, norm } = cache;
        norm.clear();
        let lower = self.lower;
        let b = text.as_bytes();
        let mut mapped: Vec<u8> = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            let c = b[i];
            if c < 0x80 {
                if (c == b'`' || c == b'\'') && b.get(i + 1) == Some(&c) {
                    mapped.push(b'"');
                    i += 2;
                    continue;
                }
                if c < 0x20 && !matches!(c, b'\t' | b'\n' | 0x0b | 0x0c | b'\r') || c == 0x7f {
                    return Ok(false);
                }
                mapped.push(if lower { c.to_ascii_lowercase() } else { c });
                i += 1;
            } else {
                let ch = text[i..].chars().next().expect("char boundary");
                let m = self.map_char(ch, chars)?;
                for &mb in m.as_bytes() {
                    // Non-ASCII output survives until the ASCII filter: keep a marker byte that
                    // is neither a space nor ASCII.
                    mapped.push(if mb < 0x80 { mb } else { 0x80 });
                }
                i += ch.len_utf8();
            }
        }
        // collapse runs of 2+ spaces, then drop non-ASCII markers
        let mut prev_space = false;
        for &c in &mapped {
            if c == b' ' {
                if !prev_space {
                    norm.push(c);
                }
                prev_space = true;
            } else {
                prev_space = false;
                if c < 0x80 {
                    norm.push(c);
                }
            }
        }
        // 2. Pre-tokenise (\w+ | [^\w\s]+ on ASCII) and look up words.
        let is_word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
        let is_space = |c: u8| matches!(c, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r');
        let n = norm.len();
        let mut j = 0;
        if words.len() > WORD_CACHE_MAX {
            words.clear();
        }
        while j < n {
            let c = norm[j];
            if is_space(c) {
                j += 1;
                continue;
            }
            let w = is_word(c);
            let start = j;
            while j < n && !is_space(norm[j]) && is_word(norm[j]) == w {
                j += 1;
            }
            let word = &norm[start..j];
            if let Some(ids) = words.get(word) {
                out.extend_from_slice(ids);
            } else {
                let s = std::str::from_utf8(word).expect("ASCII");
                let toks = self
                    .wp
                    .tokenize(s)
                    .map_err(|e| anyhow::anyhow!("WordPiece: {e}"))?;
                let ids: Box<[u32]> = toks.iter().map(|t| t.id).collect();
                out.extend_from_slice(&ids);
                words.insert(word.into(), ids);
            }
        }
        out.push(special::SEP);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small_tokenizer() -> Tokenizer {
        let text = "The quick brown fox jumps over the lazy dog. Émile's café, naïve “quotes” and ``tex'' quotes!  Spaces   here.\n"
            .repeat(20);
        let mut lines: Vec<String> = (0..200)
            .map(|i| format!("word{i} number {i} and more {}", i * 7))
            .collect();
        lines.push(text);
        train(lines.iter(), 300, NormalizerOptions::default()).unwrap()
    }

    #[test]
    fn a_vocabulary_mismatch_says_which_way_helps() {
        // ASCII-only pre-registers ~100 continuation seeds: 64 tokens can never be reached by
        // lowering, only by raising data.vocab_size.
        let o = NormalizerOptions {
            lowercase: true,
            strip_accents: true,
            ascii_only: true,
        };
        let e = train(["the quick brown fox"].iter(), 64, o)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("raise data.vocab_size") && !e.contains("lower"),
            "{e}"
        );
        // A corpus too small for the vocabulary: lowering helps, down to what was reached.
        let o = NormalizerOptions {
            ascii_only: false,
            ..o
        };
        let words: Vec<String> = (0..300).map(|i| format!("word{i} other{i}")).collect();
        let e = train(words.iter(), 5000, o).unwrap_err().to_string();
        assert!(e.contains("lower data.vocab_size to at most"), "{e}");
        // Below the smallest vocabulary allowed, lowering cannot help either.
        let e = vocab_mismatch(5000, 40).to_string();
        assert!(
            e.contains("use a larger corpus") && !e.contains("lower"),
            "{e}"
        );
    }

    #[test]
    fn special_ids_are_fixed_and_templates_apply() {
        let tok = small_tokenizer();
        for (i, t) in special::TOKENS.iter().enumerate() {
            assert_eq!(tok.token_to_id(t), Some(i as u32));
        }
        let e = tok.encode("the dog", true).unwrap();
        assert_eq!(*e.get_ids().last().unwrap(), special::SEP);
        assert_ne!(e.get_ids()[0], special::CLS);
        let p = tok.encode(("the", "dog"), true).unwrap();
        let ids = p.get_ids();
        assert_eq!(ids[0], special::CLS);
        assert_eq!(ids.iter().filter(|&&i| i == special::SEP).count(), 2);
        assert!(p.get_type_ids().iter().all(|&t| t == 0));
    }

    #[test]
    fn normaliser_matches_the_reference_sequence() {
        let tok = small_tokenizer();
        let n = tok.get_normalizer().unwrap();
        let mut s = tokenizers::NormalizedString::from("``Héllo''   WORLD  ☃  Ünïcode");
        n.normalize(&mut s).unwrap();
        // quotes → ", accents stripped, lowercased, spaces collapsed, non-ASCII dropped (after
        // the collapse, so the snowman leaves two spaces)
        assert_eq!(s.get(), "\"hello\" world  unicode");
    }

    #[test]
    fn fast_path_equals_tokenizers_encode() {
        let tok = small_tokenizer();
        let enc = Encoder::new(&tok).unwrap();
        assert!(enc.has_fast_path());
        let mut cache = EncoderCache::default();
        for t in [
            "The quick brown fox", "  leading and trailing  ", "", "a\u{0}b", "tab\there\nnew line",
            "```triple''' quotes", "İstanbul ﬁne Ωmega — dash… “x”", "snow ☃  man", "x<sep>y <mask>",
            "under_score __init__ 3.14 e=mc^2", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "e\u{301}\u{308}x a\u{308}\u{301}", "\u{1F600} emoji", "CAPITALS Émile",
        ] {
            let mut fast = Vec::new();
            enc.encode_into(t, &mut cache, &mut fast).unwrap();
            let want = tok.encode(t, true).unwrap().get_ids().to_vec();
            assert_eq!(fast, want, "{t:?}");
        }
    }
}
