"""Rendering `{role, content}` messages to text with a chat template, with an exact prompt boundary.

The prompt is rendered with the generation prompt (`add_generation_prompt=True`), the whole
conversation without it, and the response text is what the conversation adds after the prompt.
A template that does not render the prompt as a prefix of the conversation is an error (the
boundary would be a guess).
"""

from __future__ import annotations

from hybridpo.data.examples import DataError

# Anthropic-HH style, used only when `chat_template: builtin` is configured: the prompt ends with
# "\n\nAssistant:" and each assistant reply starts with a space, the same text as the
# implicit-prompt format and a clean BPE boundary. Written as Jinja string literals because
# transformers renders with trim_blocks (a newline right after a tag would be dropped).
BUILTIN_TEMPLATE = (
    r"{% for m in messages %}"
    r"{% if m['role'] == 'user' %}{{ '\n\nHuman: ' + m['content'] }}"
    r"{% elif m['role'] == 'assistant' %}{{ '\n\nAssistant: ' + m['content'] }}"
    r"{% else %}{{ m['content'] }}{% endif %}"
    r"{% endfor %}"
    r"{% if add_generation_prompt %}{{ '\n\nAssistant:' }}{% endif %}"
)


def resolve_template(tokenizer, setting: str) -> str:
    """`chat_template` setting -> the Jinja template to render with."""
    if setting == "builtin":
        return BUILTIN_TEMPLATE
    if setting == "tokenizer":
        template = getattr(tokenizer, "chat_template", None)
        if not template:
            raise DataError(
                f"the tokenizer ({type(tokenizer).__name__}, {getattr(tokenizer, 'name_or_path', '')!r}) has no "
                "chat template, needed for conversational rows or `as_chat`; use a chat model's tokenizer, "
                "or set data.chat_template to 'builtin' (HH-style Human/Assistant) or to a Jinja template"
            )
        return template
    return setting  # a Jinja template given in the config


def render(tokenizer, template: str, prompt: list[dict], responses: list[list[dict]],
           where: str) -> tuple[str, list[str]]:
    """(prompt messages, [response messages, ...]) -> (prompt text, [response text, ...])."""
    prompt_text = tokenizer.apply_chat_template(
        prompt, chat_template=template, tokenize=False, add_generation_prompt=True
    )
    texts = []
    for response in responses:
        full = tokenizer.apply_chat_template(prompt + response, chat_template=template, tokenize=False)
        if not full.startswith(prompt_text):
            raise DataError(
                f"{where}: the chat template does not render the prompt as a prefix of the whole "
                f"conversation, so the prompt/response boundary is not exact "
                f"(prompt ends {prompt_text[-40:]!r}, conversation has {full[:len(prompt_text)][-40:]!r})"
            )
        texts.append(full[len(prompt_text):])
    return prompt_text, texts
