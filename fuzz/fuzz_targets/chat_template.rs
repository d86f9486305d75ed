//! Chat templates: the input is a template, then after a NUL byte a message's content. The
//! render must end (fuel) with Ok or Err, within the output cap.
#![no_main]

use libfuzzer_sys::fuzz_target;
use moegraft::tokenizer::chat::{render, ChatMessage};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (template, content) = text.split_once('\0').unwrap_or((text, "hi"));
    let messages = [
        ChatMessage { role: "system".into(), content: "Be brief.".into() },
        ChatMessage::user(content),
    ];
    if let Ok(out) = render(template, &messages, true, Some("<s>"), Some("</s>")) {
        assert!(out.len() <= 4 << 20);
    }
});
