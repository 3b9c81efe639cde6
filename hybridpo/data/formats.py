"""Row formats: one raw row -> the texts of one example (prompt, responses), or a reason to drop it.

| format            | fields                                   | prompt is                                  |
|-------------------|------------------------------------------|--------------------------------------------|
| `standard`        | prompt, chosen, rejected (strings; TRL)  | `prompt_template` applied to `prompt`      |
| `conversational`  | the same, as lists of {role, content}    | rendered with the chat template            |
| `implicit_prompt` | chosen, rejected (whole dialogues)       | their shared part up to the last assistant turn |
| `prompt_only`     | prompt                                   | as `standard`                              |
| `sft`             | prompt + `response_field`                | as `standard`                              |

Adding a format is one parse function and one line in FORMATS. Texts leave this module ready to
tokenise: the prompt text ends where the response text begins (see `tokenize.py` on the boundary).
"""

from __future__ import annotations

from dataclasses import dataclass
from os.path import commonprefix
from typing import Callable, Hashable

from hybridpo.data.chat import render, resolve_template
from hybridpo.data.config import DataConfig
from hybridpo.data.examples import DataError
from hybridpo.data.sources import Row

SFT_RESPONSE_FIELDS = ("completion", "response")  # tried in order when `response_field` is None


@dataclass(frozen=True)
class TextPair:
    prompt: str
    chosen: str
    rejected: str
    group: Hashable | None
    where: str


@dataclass(frozen=True)
class TextPrompt:
    prompt: str
    reference: str | None
    group: Hashable | None
    where: str


@dataclass(frozen=True)
class Dropped:
    reason: str  # "tie" or "empty": the DataStats counter and the `on_*` setting it falls under
    message: str  # names the row and the field


class RowReader:
    """Reads rows of one format with the settings and tokenizer (for chat templates) of one load."""

    def __init__(self, cfg: DataConfig, tokenizer, format_name: str):
        self.cfg = cfg
        self.tokenizer = tokenizer
        self.format = format_name
        self._template: str | None = None

    # --- fields -------------------------------------------------------------------------------
    def string(self, row: Row, field: str) -> str:
        if field not in row.data:
            raise DataError(f"{row.where}: missing field {field!r} (the row has {sorted(row.data)})")
        value = row.data[field]
        if not isinstance(value, str):
            raise DataError(f"{row.where}: field {field!r} must be a string, got {type(value).__name__}")
        return value

    def messages(self, row: Row, field: str) -> list[dict]:
        if field not in row.data:
            raise DataError(f"{row.where}: missing field {field!r} (the row has {sorted(row.data)})")
        value = row.data[field]
        if not isinstance(value, list):
            raise DataError(f"{row.where}: field {field!r} must be a list of {{role, content}} messages, "
                            f"got {type(value).__name__}")
        for i, m in enumerate(value):
            if not (isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)):
                raise DataError(f"{row.where}: field {field!r}, message {i}: expected "
                                f"{{'role': str, 'content': str}}, got {m!r:.80}")
        return [{"role": m["role"], "content": m["content"]} for m in value]

    def text_or_messages(self, row: Row, field: str) -> str | list[dict]:
        return self.messages(row, field) if isinstance(row.data.get(field), list) else self.string(row, field)

    def group(self, row: Row, raw_prompt: str) -> Hashable | None:
        split_by = self.cfg.split_by
        if split_by == "prompt":
            return raw_prompt
        if split_by == "row":
            return None
        if split_by not in row.data:
            raise DataError(f"{row.where}: missing field {split_by!r} named by data.split_by")
        value = row.data[split_by]
        return value if isinstance(value, (str, int)) else str(value)

    # --- text pieces ------------------------------------------------------------------------------
    def template(self) -> str:
        if self._template is None:
            self._template = resolve_template(self.tokenizer, self.cfg.chat_template)
        return self._template

    def response_text(self, text: str) -> str:
        prefix = self.cfg.response_prefix
        if prefix and text.startswith(prefix):
            text = text[len(prefix):]
        if self.cfg.normalize_response_space:
            text = " " + text.strip() if text.strip() else ""
        return text

    def render_pair(self, row: Row, prompt, responses: list) -> tuple[str, list[str]]:
        """Prompt (string or messages) and responses (the same kind) -> texts with an exact boundary."""
        if isinstance(prompt, str) and not self.cfg.as_chat:
            return self.cfg.prompt_template.replace("{prompt}", prompt), responses
        if isinstance(prompt, str):
            prompt = [{"role": "user", "content": self.cfg.prompt_template.replace("{prompt}", prompt)}]
            responses = [[{"role": "assistant", "content": r}] for r in responses]
        return render(self.tokenizer, self.template(), prompt, responses, row.where)


def _empty(row: Row, **parts) -> Dropped | None:
    for field, value in parts.items():
        content = value if isinstance(value, str) else "".join(m["content"] for m in value)
        if not content.strip():
            return Dropped("empty", f"{row.where}: field {field!r} is empty")
    return None


def _pair(r: RowReader, row: Row, prompt, chosen, rejected) -> TextPair | Dropped:
    """Checks (empty, tie) on the content, then renders; the group of a string prompt is the raw
    prompt (the TL;DR post), of messages the rendered prompt."""
    if isinstance(chosen, str):
        chosen, rejected = r.response_text(chosen), r.response_text(rejected)
    bad = _empty(row, **{r.cfg.prompt_field: prompt, r.cfg.chosen_field: chosen, r.cfg.rejected_field: rejected})
    if bad:
        return bad
    if chosen == rejected:
        return Dropped("tie", f"{row.where}: fields {r.cfg.chosen_field!r} and {r.cfg.rejected_field!r} "
                              "are equal (a tie carries no preference)")
    prompt_text, (chosen_text, rejected_text) = r.render_pair(row, prompt, [chosen, rejected])
    group = r.group(row, prompt if isinstance(prompt, str) else prompt_text)
    return TextPair(prompt_text, chosen_text, rejected_text, group, row.where)


def parse_standard(r: RowReader, row: Row) -> TextPair | Dropped:
    prompt = r.string(row, r.cfg.prompt_field)
    chosen, rejected = r.string(row, r.cfg.chosen_field), r.string(row, r.cfg.rejected_field)
    return _pair(r, row, prompt, chosen, rejected)


def parse_conversational(r: RowReader, row: Row) -> TextPair | Dropped:
    prompt = r.messages(row, r.cfg.prompt_field)
    chosen, rejected = r.messages(row, r.cfg.chosen_field), r.messages(row, r.cfg.rejected_field)
    return _pair(r, row, prompt, chosen, rejected)


def parse_implicit_prompt(r: RowReader, row: Row) -> TextPair | Dropped:
    """Whole dialogues sharing a prefix (Anthropic HH): the prompt is the shared part up to and
    including the last assistant marker (strings) or the shared messages before the last
    assistant turn (message lists); the responses are the rest."""
    cf, rf = r.cfg.chosen_field, r.cfg.rejected_field
    if isinstance(row.data.get(cf), list):
        chosen, rejected = r.messages(row, cf), r.messages(row, rf)
        n = 0
        while n < min(len(chosen), len(rejected)) and chosen[n] == rejected[n]:
            n += 1
        while n > 0 and (n >= len(chosen) or chosen[n]["role"] != "assistant"):
            n -= 1  # back off to the start of an assistant turn
        if n == 0 or chosen[n]["role"] != "assistant":
            raise DataError(f"{row.where}: fields {cf!r} and {rf!r} share no messages before an assistant "
                            "turn, so there is no implicit prompt (give a 'prompt' field)")
        return _pair(r, row, chosen[:n], chosen[n:], rejected[n:])
    chosen, rejected = r.string(row, cf), r.string(row, rf)
    marker = r.cfg.implicit_prompt_marker
    cut = commonprefix([chosen, rejected]).rfind(marker)
    if cut < 0:
        raise DataError(f"{row.where}: fields {cf!r} and {rf!r} share no {marker!r}, so there is no "
                        "implicit prompt (set data.implicit_prompt_marker or give a 'prompt' field)")
    end = cut + len(marker)
    return _pair(r, row, chosen[:end], chosen[end:], rejected[end:])


def _prompt(r: RowReader, row: Row, reference: tuple[str, str | list[dict]] | None) -> TextPrompt | Dropped:
    """A prompt (string or messages) and an optional (field, reference response)."""
    prompt = r.text_or_messages(row, r.cfg.prompt_field)
    field, ref = reference if reference is not None else (None, None)
    if isinstance(ref, str):
        ref = r.response_text(ref)
    bad = _empty(row, **{r.cfg.prompt_field: prompt, **({field: ref} if field else {})})
    if bad:
        return bad
    text, refs = r.render_pair(row, prompt, [ref] if field else [])
    group = r.group(row, prompt if isinstance(prompt, str) else text)
    return TextPrompt(text, refs[0] if field else None, group, row.where)


def parse_prompt_only(r: RowReader, row: Row) -> TextPrompt | Dropped:
    return _prompt(r, row, None)


def parse_sft(r: RowReader, row: Row) -> TextPrompt | Dropped:
    field = sft_response_field(r.cfg, row)
    return _prompt(r, row, (field, r.text_or_messages(row, field)))


def sft_response_field(cfg: DataConfig, row: Row) -> str:
    if cfg.response_field is not None:
        return cfg.response_field
    for field in SFT_RESPONSE_FIELDS:
        if field in row.data:
            return field
    raise DataError(f"{row.where}: SFT rows need a response field: none of {list(SFT_RESPONSE_FIELDS)} "
                    f"found in {sorted(row.data)}; set data.response_field")


# name -> (kind of example it yields, parse function)
FORMATS: dict[str, tuple[str, Callable[[RowReader, Row], TextPair | TextPrompt | Dropped]]] = {
    "standard": ("preference", parse_standard),
    "conversational": ("preference", parse_conversational),
    "implicit_prompt": ("preference", parse_implicit_prompt),
    "prompt_only": ("prompt", parse_prompt_only),
    "sft": ("prompt", parse_sft),
}


def detect_format(cfg: DataConfig, row: Row) -> str:
    """The format named in the config, or the one the first row's fields imply."""
    if cfg.format != "auto":
        return cfg.format
    d = row.data
    has = lambda f: d.get(f) is not None  # noqa: E731
    if has(cfg.chosen_field) and has(cfg.rejected_field):
        if not has(cfg.prompt_field):
            return "implicit_prompt"
        return "conversational" if isinstance(d[cfg.prompt_field], list) else "standard"
    pair = [f for f in (cfg.chosen_field, cfg.rejected_field) if has(f)]
    if len(pair) == 1 and cfg.response_field not in pair:
        missing = ({cfg.chosen_field, cfg.rejected_field} - set(pair)).pop()
        raise DataError(f"{row.where}: missing field {missing!r}: the row has {pair[0]!r} but not its pair "
                        f"(fields found {sorted(d)})")
    if has(cfg.prompt_field):
        fields = [cfg.response_field] if cfg.response_field else list(SFT_RESPONSE_FIELDS)
        return "sft" if any(has(f) for f in fields) else "prompt_only"
    raise DataError(
        f"{row.where}: cannot detect the data format from the fields found {sorted(d)}: expected "
        f"{cfg.prompt_field!r}+{cfg.chosen_field!r}+{cfg.rejected_field!r} (standard / conversational), "
        f"{cfg.chosen_field!r}+{cfg.rejected_field!r} (implicit prompt), {cfg.prompt_field!r}+completion/response "
        f"(sft) or {cfg.prompt_field!r} (prompt-only); set data.format and the data.*_field names"
    )
