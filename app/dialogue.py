"""Prompts that are dialogues (design §11).

A prompt is a string or a list of messages ``{"role": "system"|"user"|"assistant",
"content": str}`` ending with a ``user`` turn; the answers to rank, and a demonstration, are
the next ``assistant`` turn. A string prompt is the same as one ``user`` message.

Here: the rules a dialogue keeps (:func:`check_messages`, used by the import), the plain text
rendering that a prompt's ``text`` column holds (:func:`plain_text`), the reading of
Anthropic HH transcripts (:func:`parse_hh`) and the key that recognises a prompt again
(:func:`prompt_key`). How a dialogue is laid out for a model is
``workers.ml.formatting.format_prompt``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any, Literal, TypedDict

Role = Literal["system", "user", "assistant"]
ROLES: tuple[Role, ...] = ("system", "user", "assistant")
ROLE_LABELS: dict[str, str] = {"system": "System", "user": "User", "assistant": "Assistant"}
MESSAGE_FIELDS = ("role", "content")


class Message(TypedDict):
    role: Role
    content: str


#: What a job reads as a prompt: its text, or its turns.
PromptInput = str | Sequence[Message]


def as_messages(prompt: PromptInput) -> list[Message]:
    """The prompt as turns: a string is one ``user`` message."""
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    return [{"role": m["role"], "content": m["content"]} for m in prompt]


def answer_text(value: str | Sequence[Message]) -> str:
    """An answer as text: a string, or a conversational export's one assistant message."""
    return value if isinstance(value, str) else value[-1]["content"]


def is_dialogue(prompt: PromptInput) -> bool:
    """Whether the prompt is more than one user message (what needs turns to show)."""
    return not isinstance(prompt, str) and not (len(prompt) == 1 and prompt[0]["role"] == "user")


def plain_text(messages: Sequence[Message]) -> str:
    """The plain rendering stored as a prompt's ``text``: a lone user message is its content;
    otherwise each turn as ``Role: content``, with a blank line between turns."""
    if len(messages) == 1 and messages[0]["role"] == "user":
        return messages[0]["content"]
    return "\n\n".join(f"{ROLE_LABELS[m['role']]}: {m['content']}" for m in messages)


def prompt_key(text: str, messages: Sequence[Message] | None) -> str:
    """What recognises a prompt again (an import of the same rows): its text for a string
    prompt, its turns for a dialogue, so a string that happens to read like a dialogue's
    rendering is another prompt."""
    if messages is None:
        return text
    return "\x00dialogue:" + json.dumps(
        [[m["role"], m["content"]] for m in messages], ensure_ascii=False
    )


def check_messages(
    value: Any, label: str, problems: list[str], *, unstorable: Any = None
) -> list[Message] | None:
    """The messages of a dialogue prompt, or None with every reason it is not one appended to
    ``problems``: a non-empty array of objects with a known ``role`` and a non-empty string
    ``content``, a ``system`` turn only first, the last turn ``user``. ``unstorable(text)``
    says why the database cannot store a text, if it cannot."""
    if not isinstance(value, list):
        problems.append(f"{label} must be a string or an array of messages, not {json_type(value)}")
        return None
    if not value:
        problems.append(f"{label} is an empty array: a dialogue needs at least one user turn")
        return None
    found: list[str] = []
    messages: list[Message] = []
    for index, item in enumerate(value):
        where = f"{label[:-1]}[{index}]'" if label.endswith("'") else f"{label}[{index}]"
        if not isinstance(item, dict):
            found.append(
                f"{where} must be an object with 'role' and 'content', not {json_type(item)}"
            )
            continue
        unknown = [key for key in item if key not in MESSAGE_FIELDS]
        if unknown:
            names = ", ".join(repr(k[:40]) for k in unknown)
            found.append(f"{where} has unknown field {names} (known: role, content)")
        role, content = item.get("role"), item.get("content")
        if role not in ROLES:
            said = "is missing" if role is None else f"{_short(role)} is unknown"
            found.append(f"{where}: the role {said} (one of system, user, assistant)")
        elif role == "system" and index > 0:
            found.append(f"{where}: a system turn can only be the first")
        if not isinstance(content, str):
            missing = (
                "is missing" if content is None else f"must be a string, not {json_type(content)}"
            )
            found.append(f"{where}: 'content' {missing}")
        elif not content.strip():
            found.append(f"{where}: 'content' is empty")
        elif unstorable is not None and (problem := unstorable(content)) is not None:
            found.append(f"{where}: 'content' {problem}")
        elif role in ROLES:
            messages.append({"role": role, "content": content})
    if not found and messages[-1]["role"] != "user":
        found.append(
            f"{label} ends with {'an' if messages[-1]['role'] == 'assistant' else 'a'} "
            f"{messages[-1]['role']} turn; a prompt ends with the user's turn (the answers are "
            "the next assistant turn)"
        )
    if found:
        problems.extend(found)
        return None
    return messages


def check_answer_message(value: Any, label: str, problems: list[str]) -> str | None:
    """The text of a conversational preference's ``chosen``/``rejected``: exactly one
    ``assistant`` message (TRL's conversational preference form). An empty text is allowed,
    as for string answers (harmlessness data prefers saying nothing)."""
    shape = "one assistant message, [{'role': 'assistant', 'content': ...}]"
    if not isinstance(value, list) or len(value) != 1 or not isinstance(value[0], dict):
        what = f"{len(value)} items" if isinstance(value, list) else json_type(value)
        problems.append(f"{label} must be a string or {shape}, not {what}")
        return None
    message = value[0]
    unknown = [key for key in message if key not in MESSAGE_FIELDS]
    if unknown or message.get("role") != "assistant" or not isinstance(message.get("content"), str):
        problems.append(f"{label} must be {shape}, not a {_short(message.get('role'))} message")
        return None
    return str(message["content"])


# "Human:" / "Assistant:" turns of an Anthropic HH transcript ("\n\nHuman: ...").
_HH_TURN = re.compile(r"(?:^|\n\n)(Human|Assistant):[ ]?")
_HH_ROLES: dict[str, Role] = {"Human": "user", "Assistant": "assistant"}


def parse_hh(text: str) -> list[Message] | str:
    """An Anthropic HH transcript (``Human: ...\\n\\nAssistant: ...``) as turns, the empty
    final ``Assistant:`` (where the answer goes) dropped; or why it is not one."""
    parts = _HH_TURN.split(text)
    if parts[0].strip():
        return "does not start with 'Human:' (an HH transcript is 'Human: ...\\n\\nAssistant: ...')"
    messages: list[Message] = []
    for speaker, content in zip(parts[1::2], parts[2::2], strict=True):
        messages.append({"role": _HH_ROLES[speaker], "content": content.strip()})
    if messages and messages[-1]["role"] == "assistant" and not messages[-1]["content"]:
        messages.pop()
    if not messages:
        return "has no 'Human:' turn"
    empty = [i + 1 for i, m in enumerate(messages) if not m["content"]]
    if empty:
        return f"turn {empty[0]} of the transcript is empty"
    if messages[-1]["role"] != "user":
        return "ends with an Assistant turn that has text; a prompt ends with the Human's turn"
    return messages


def json_type(value: Any) -> str:
    """A JSON value's kind in words, for messages ("a string", "an array", ...)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:40] + "…"
