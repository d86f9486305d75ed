//! Unicode scripts, the cheapest language signal a token carries: the language prior routes a
//! token by the script of its letters, and an expert claims the scripts its languages are
//! written in.

/// The writing systems the language prior tells apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Script {
    Latin,
    Cyrillic,
    Greek,
    Han,
    /// Hiragana and Katakana: only Japanese uses them.
    Kana,
    Hangul,
    Arabic,
    Hebrew,
    Devanagari,
    Thai,
    Armenian,
    Georgian,
    Bengali,
    Tamil,
}

/// The script of one character, if it is a letter of a script we know.
pub fn char_script(c: char) -> Option<Script> {
    let cp = c as u32;
    let script = match cp {
        0x41..=0x5A
        | 0x61..=0x7A
        | 0xC0..=0x24F
        | 0x1E00..=0x1EFF
        | 0xFF21..=0xFF3A
        | 0xFF41..=0xFF5A => Script::Latin,
        0xAA | 0xBA => Script::Latin,
        0x370..=0x3FF | 0x1F00..=0x1FFF => Script::Greek,
        0x400..=0x52F | 0x2DE0..=0x2DFF | 0xA640..=0xA69F | 0x1C80..=0x1C8F => Script::Cyrillic,
        0x531..=0x58F => Script::Armenian,
        0x591..=0x5FF => Script::Hebrew,
        0x600..=0x6FF | 0x750..=0x77F | 0x8A0..=0x8FF | 0xFB50..=0xFDFF | 0xFE70..=0xFEFF => {
            Script::Arabic
        }
        0x900..=0x97F => Script::Devanagari,
        0x980..=0x9FF => Script::Bengali,
        0xB80..=0xBFF => Script::Tamil,
        0xE00..=0xE7F => Script::Thai,
        0x10A0..=0x10FF => Script::Georgian,
        0x1100..=0x11FF | 0x3130..=0x318F | 0xAC00..=0xD7AF => Script::Hangul,
        0x3040..=0x30FF | 0x31F0..=0x31FF | 0xFF66..=0xFF9F => Script::Kana,
        0x3400..=0x4DBF | 0x4E00..=0x9FFF | 0xF900..=0xFAFF | 0x20000..=0x2FA1F => Script::Han,
        _ => return None,
    };
    // Latin-1's × and ÷ sit inside the letter range but are not letters.
    if cp == 0xD7 || cp == 0xF7 {
        return None;
    }
    Some(script)
}

/// The script most of `text`'s letters are written in (ties: the first seen); `None` for text
/// without letters (spaces, digits, punctuation, partial UTF-8 pieces of a byte-level token).
pub fn text_script(text: &str) -> Option<Script> {
    let mut counts: Vec<(Script, usize)> = Vec::new();
    for s in text.chars().filter_map(char_script) {
        match counts.iter_mut().find(|(k, _)| *k == s) {
            Some((_, n)) => *n += 1,
            None => counts.push((s, 1)),
        }
    }
    // Japanese mixes Han and Kana within one word: any Kana makes the token Japanese.
    if counts.iter().any(|(s, _)| *s == Script::Kana) {
        return Some(Script::Kana);
    }
    let best = counts.iter().map(|(_, n)| *n).max()?;
    counts.iter().find(|(_, n)| *n == best).map(|(s, _)| *s)
}

/// The scripts a language (ISO 639-1 code, optionally with a region: "pt-BR") is written in;
/// `None` for a code we do not know.
pub fn language_scripts(code: &str) -> Option<&'static [Script]> {
    let lang = code
        .split(['-', '_'])
        .next()
        .unwrap_or(code)
        .to_ascii_lowercase();
    use Script::*;
    Some(match lang.as_str() {
        // Japanese writes Han (kanji) and Kana; a Kana token is Japanese for sure.
        "ja" => &[Han, Kana],
        "zh" | "yue" => &[Han],
        "ko" => &[Hangul, Han],
        "ru" | "uk" | "bg" | "sr" | "mk" | "be" | "kk" | "ky" | "mn" | "tg" => &[Cyrillic],
        "el" => &[Greek],
        "ar" | "fa" | "ur" | "ps" => &[Arabic],
        "he" | "yi" => &[Hebrew],
        "hi" | "mr" | "ne" | "sa" => &[Devanagari],
        "bn" | "as" => &[Bengali],
        "ta" => &[Tamil],
        "th" => &[Thai],
        "hy" => &[Armenian],
        "ka" => &[Georgian],
        "en" | "de" | "es" | "fr" | "it" | "pt" | "nl" | "sv" | "da" | "no" | "nb" | "nn"
        | "fi" | "et" | "lv" | "lt" | "pl" | "cs" | "sk" | "sl" | "hr" | "bs" | "hu" | "ro"
        | "tr" | "az" | "uz" | "id" | "ms" | "vi" | "tl" | "sw" | "ca" | "eu" | "gl" | "is"
        | "ga" | "cy" | "mt" | "sq" | "af" | "la" | "eo" | "so" | "ha" | "yo" | "zu" => &[Latin],
        _ => return None,
    })
}

/// Each token's script with letterless tokens inheriting the previous token's script, starting
/// from `previous` (the script carried over from the preceding chunk), which is updated.
pub fn token_scripts(
    ids: &[u32],
    script_of: impl Fn(u32) -> Option<Script>,
    previous: &mut Option<Script>,
) -> Vec<Option<Script>> {
    ids.iter()
        .map(|&id| {
            if let Some(s) = script_of(id) {
                *previous = Some(s);
            }
            *previous
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_scripts() {
        assert_eq!(text_script("Hello"), Some(Script::Latin));
        assert_eq!(text_script(" Straße"), Some(Script::Latin));
        assert_eq!(text_script("привет"), Some(Script::Cyrillic));
        assert_eq!(text_script("καλημέρα"), Some(Script::Greek));
        assert_eq!(text_script("中文"), Some(Script::Han));
        assert_eq!(text_script("ひらがな"), Some(Script::Kana));
        assert_eq!(text_script("カタカナ"), Some(Script::Kana));
        // Kanji with okurigana is Japanese, not Chinese.
        assert_eq!(text_script("食べる"), Some(Script::Kana));
        assert_eq!(text_script("한국어"), Some(Script::Hangul));
        assert_eq!(text_script("مرحبا"), Some(Script::Arabic));
        assert_eq!(text_script("नमस्ते"), Some(Script::Devanagari));
        assert_eq!(text_script("שלום"), Some(Script::Hebrew));
        assert_eq!(text_script("สวัสดี"), Some(Script::Thai));
    }

    #[test]
    fn letterless_text_has_no_script() {
        for t in ["", " ", "123", ", .!?", "\u{FFFD}", "×÷", "\n\t"] {
            assert_eq!(text_script(t), None, "{t:?}");
        }
    }

    #[test]
    fn majority_script_wins() {
        assert_eq!(text_script("abcд"), Some(Script::Latin));
        assert_eq!(text_script("aдб"), Some(Script::Cyrillic));
    }

    #[test]
    fn letterless_tokens_inherit_the_previous_script() {
        let script_of = |id: u32| match id {
            0 => Some(Script::Latin),
            1 => Some(Script::Kana),
            _ => None,
        };
        let mut prev = None;
        assert_eq!(
            token_scripts(&[2, 0, 2, 1, 2], script_of, &mut prev),
            vec![
                None,
                Some(Script::Latin),
                Some(Script::Latin),
                Some(Script::Kana),
                Some(Script::Kana)
            ]
        );
        // Carried into the next chunk.
        assert_eq!(prev, Some(Script::Kana));
        assert_eq!(
            token_scripts(&[2], script_of, &mut prev),
            vec![Some(Script::Kana)]
        );
    }

    #[test]
    fn language_codes_map_to_scripts() {
        assert_eq!(
            language_scripts("ja"),
            Some(&[Script::Han, Script::Kana][..])
        );
        assert_eq!(language_scripts("zh"), Some(&[Script::Han][..]));
        assert_eq!(language_scripts("ru"), Some(&[Script::Cyrillic][..]));
        assert_eq!(language_scripts("pt-BR"), Some(&[Script::Latin][..]));
        assert_eq!(language_scripts("EN"), Some(&[Script::Latin][..]));
        assert_eq!(language_scripts("xx"), None);
    }
}
