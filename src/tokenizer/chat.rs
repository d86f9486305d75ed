//! Chat templates: the Jinja templates of tokenizer_config.json rendered with minijinja, set
//! up like transformers (trim_blocks, lstrip_blocks, loop controls, `raise_exception`) and
//! sandboxed: no file or network access, bounded work (fuel) and bounded output.

use minijinja::{Environment, Error as JinjaError, ErrorKind, Value as JinjaValue};
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn user(content: &str) -> Self {
        Self {
            role: "user".into(),
            content: content.into(),
        }
    }
}

/// Template instructions a render may spend (a real chat template needs a few thousand).
const FUEL: u64 = 2_000_000;
/// Longest rendered prompt accepted.
const MAX_OUTPUT: usize = 4 << 20;

/// The default template of tokenizer_config.json (a string, or a list of named templates).
pub fn template_from_config(config: &Value) -> Option<String> {
    match config.get("chat_template")? {
        Value::String(s) => Some(s.clone()),
        Value::Array(list) => list
            .iter()
            .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
            .or_else(|| list.first())
            .and_then(|t| t.get("template"))
            .and_then(Value::as_str)
            .map(str::to_string),
        _ => None,
    }
}

pub fn render(
    template: &str,
    messages: &[ChatMessage],
    add_generation_prompt: bool,
    bos_token: Option<&str>,
    eos_token: Option<&str>,
) -> Result<String, String> {
    // Nothing can be loaded here (no files, no network), so statements that load other
    // templates are refused before compiling: minijinja 3.1 also panics (`unreachable!`)
    // compiling some malformed ones, e.g. `{% import 'x' as -c %}` (found by fuzzing), and in
    // the browser a panic ends the worker.
    if let Some(keyword) = loading_statement(template) {
        return Err(format!(
            "chat template uses '{keyword}': a chat template cannot load other templates"
        ));
    }
    // Any other engine panic natively becomes an error (in wasm a panic aborts).
    std::panic::catch_unwind(|| {
        render_unguarded(
            template,
            messages,
            add_generation_prompt,
            bos_token,
            eos_token,
        )
    })
    .unwrap_or_else(|_| Err("chat template crashed the template engine".to_string()))
}

/// The first statement that would load another template (`{% import %}`, `{% from %}`,
/// `{% include %}`, `{% extends %}`), if any.
fn loading_statement(template: &str) -> Option<&'static str> {
    template.match_indices("{%").find_map(|(at, _)| {
        let rest = template[at + 2..]
            .trim_start_matches(['-', '+'])
            .trim_start();
        let word: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        ["import", "from", "include", "extends"]
            .into_iter()
            .find(|k| *k == word)
    })
}

fn render_unguarded(
    template: &str,
    messages: &[ChatMessage],
    add_generation_prompt: bool,
    bos_token: Option<&str>,
    eos_token: Option<&str>,
) -> Result<String, String> {
    let mut env = Environment::new();
    let syntax = minijinja::syntax::SyntaxConfig::builder()
        .trim_blocks(true)
        .lstrip_blocks(true)
        .build()
        .map_err(|e| e.to_string())?;
    env.set_syntax(syntax);
    env.set_fuel(Some(FUEL));
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function(
        "raise_exception",
        |msg: String| -> Result<JinjaValue, JinjaError> {
            Err(JinjaError::new(ErrorKind::InvalidOperation, msg))
        },
    );
    // Templates that print today's date get a fixed one: renders stay reproducible.
    env.add_function("strftime_now", |_fmt: String| -> String {
        "26 Jul 2024".to_string()
    });
    env.add_template("chat", template)
        .map_err(|e| format!("chat template does not parse: {}", one_line(&e.to_string())))?;
    let tmpl = env
        .get_template("chat")
        .map_err(|e| format!("chat template: {e}"))?;
    // Output is capped as it is written: fuel alone lets each step print a huge string.
    let mut out = CappedOutput::default();
    let rendered = tmpl.render_captured_to(
        minijinja::context! {
            messages => JinjaValue::from(minijinja::value::Serde(messages)),
            add_generation_prompt => add_generation_prompt,
            bos_token => bos_token.unwrap_or(""),
            eos_token => eos_token.unwrap_or(""),
        },
        &mut out,
    );
    if out.overflowed {
        return Err(format!("chat template output exceeds {MAX_OUTPUT} bytes"));
    }
    rendered.map_err(|e| format!("chat template failed: {}", one_line(&e.to_string())))?;
    String::from_utf8(out.bytes).map_err(|_| "chat template output is not UTF-8".to_string())
}

/// Errors are shown on one line (CLI stderr, page status).
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A writer that refuses to grow past `MAX_OUTPUT`, which aborts the render.
#[derive(Default)]
struct CappedOutput {
    bytes: Vec<u8>,
    overflowed: bool,
}

impl std::io::Write for CappedOutput {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.bytes.len() + buf.len() > MAX_OUTPUT {
            self.overflowed = true;
            return Err(std::io::Error::other("chat template output too large"));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHATML: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    #[test]
    fn renders_chatml_with_generation_prompt() {
        let out = render(CHATML, &[ChatMessage::user("Hi")], true, None, None).unwrap();
        assert_eq!(
            out,
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn python_string_methods_and_raise_exception_work() {
        let t = "{% if messages[0]['role'] != 'user' %}{{ raise_exception('bad role') }}{% endif %}{{ messages[0]['content'].strip().upper() }}";
        assert_eq!(
            render(t, &[ChatMessage::user("  hey ")], false, None, None).unwrap(),
            "HEY"
        );
        let err = render(
            t,
            &[ChatMessage {
                role: "x".into(),
                content: "".into(),
            }],
            false,
            None,
            None,
        )
        .unwrap_err();
        assert!(err.contains("bad role"), "{err}");
    }

    #[test]
    fn loading_statements_are_refused_before_the_engine_sees_them() {
        // The chat_template fuzz target's finds (tests/fixtures/fuzz-regressions/chat_template/):
        // each made minijinja panic while compiling.
        for (t, keyword) in [
            ("{% import '.son' as c %dictc%}y", "import"),
            ("{% import 'x' as -c %}", "import"),
            ("a{%- from 'x' import y %}", "from"),
            ("{%+ include 'x' %}", "include"),
            ("{% extends 'x' %}", "extends"),
        ] {
            let err = render(t, &[], false, None, None).unwrap_err();
            assert!(err.contains(&format!("uses '{keyword}'")), "{t}: {err}");
        }
        // Words that merely start like one are fine.
        assert_eq!(
            render(
                "{% set imported = 1 %}{{ imported }}",
                &[],
                false,
                None,
                None
            )
            .unwrap(),
            "1"
        );
    }

    #[test]
    fn runaway_templates_are_stopped() {
        let t = "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}";
        assert!(render(t, &[], false, None, None).is_err());
    }
}
