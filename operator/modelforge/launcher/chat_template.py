"""`modelforge chat-template`: the model's own chat template, wrapped so that vLLM applies a default system
prompt (a ModelServe's spec.systemPrompt).

vLLM has no default-system-prompt option, but it takes a chat template (`--chat-template FILE`) and default
template variables (`--default-chat-template-kwargs`). The serving pod's init container runs this command
on the model's files and writes the wrapped template to a volume the engine mounts; the prompt itself
travels as the variable `modelforge_system` in the engine's arguments, so changing it needs no new
template. A request that brings its own system message keeps it (the default is not added); a request may
also set `chat_template_kwargs: {"modelforge_system": ...}` itself.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..plan.serving import SYSTEM_VARIABLE

# Jinja: a top-level `set` inside an `if` replaces `messages` for the rest of the template (an `if` opens no
# scope), so the model's template below sees the system message as if the client had sent it.
PREFIX = (  # no text between the tags: what it renders is only what the model's template renders
    "{#- ModelForge: spec.systemPrompt arrives as the template variable " + SYSTEM_VARIABLE + "; it is added "
    "only when the request has no system message. The model's own template follows unchanged. #}"
    "{%- if " + SYSTEM_VARIABLE + " is defined and " + SYSTEM_VARIABLE + " and "
    "(messages | length == 0 or messages[0]['role'] != 'system') %}"
    "{%- set messages = [{'role': 'system', 'content': " + SYSTEM_VARIABLE + "}] + messages %}"
    "{%- endif %}"
)


class NoChatTemplate(Exception):
    pass


def with_default_system(template: str) -> str:
    """The model's template with the default-system-prompt prefix (idempotent: wrapping twice adds nothing)."""
    return template if template.startswith(PREFIX) else PREFIX + template


def model_chat_template(model: Path) -> str:
    """The chat template a model directory carries: chat_template.jinja (what transformers saves today), else
    tokenizer_config.json's chat_template (a string, or a list of named templates: the one named default)."""
    jinja = model / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text()
    config = model / "tokenizer_config.json"
    if config.is_file():
        value = json.loads(config.read_text()).get("chat_template")
        if isinstance(value, list):
            value = next((t.get("template") for t in value if isinstance(t, dict) and t.get("name") == "default"), None)
        if isinstance(value, str) and value.strip():
            return value
    raise NoChatTemplate(
        f"{model} has no chat template (no chat_template.jinja, no chat_template in tokenizer_config.json): "
        "spec.systemPrompt cannot be applied by vLLM; remove spec.systemPrompt or use a model with a chat template"
    )


def main(model: str, out: str) -> int:
    try:
        template = model_chat_template(Path(model))
    except (NoChatTemplate, OSError, ValueError) as exc:
        # The init container's terminationMessagePolicy is FallbackToLogsOnError: this line is what the pod's
        # status (and so the ModelServe's condition) shows.
        print(f"modelforge chat-template: {exc}", file=sys.stderr)
        return 1
    target = Path(out)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(with_default_system(template))
    print(f"modelforge chat-template: {target} (the chat template of {model}, with the default system prompt)")
    return 0
