"""How a prompt (and an answer) become the text a model reads.

One function, :func:`format_prompt`, is used by generation, SFT, the reward model and PPO, so
that every stage sees exactly the same text for the same prompt; a model trained on one layout
and scored or sampled with another silently gets worse. :func:`template_for` gives the same
layout as a Python format string, stored in each saved folder's ``rlhf.json`` so that outside
tools can score a (prompt, response) pair the way we trained it; :func:`dialogue_layout`
says in the same file how a dialogue prompt (design §11) is laid out.

A prompt is a string or a dialogue (a list of messages ending with a user turn). With a chat
template the messages go through it as they are (a string is one user message); without one,
each turn is written the way the plain template writes the single user turn: ``User: ...``,
``Assistant: ...`` (and ``System: ...``) a line each, then ``Assistant: `` for the answer. A
string prompt and the same text as one user message always give the same text.
"""

from __future__ import annotations

from typing import Any

from app.dialogue import ROLE_LABELS, PromptInput, as_messages

#: Layout for models without a chat template (e.g. the tiny test models, plain base LMs).
PLAIN_TEMPLATE = "User: {prompt}\nAssistant: {response}"

# The part the model continues: the plain template cut before the answer. Derived from
# PLAIN_TEMPLATE so the two can never drift apart.
_PLAIN_PROMPT_PART = PLAIN_TEMPLATE.split("{response}", 1)[0]

# What starts the answer's line in the plain layout ("Assistant: ").
ANSWER_PREFIX = _PLAIN_PROMPT_PART.rsplit("\n", 1)[1]

# Stand-in prompt used to turn a rendered chat template back into a format string. Has no
# characters a chat template would escape or strip.
_SENTINEL = "RLHFSTUDIOPROMPTSENTINEL7f3a9c"


def _chat_template(tokenizer: Any) -> str | None:
    template = getattr(tokenizer, "chat_template", None)
    return template if template else None


def format_prompt(tokenizer: Any, prompt: PromptInput) -> str:
    """Return the text the model continues to answer ``prompt`` (a string or a dialogue).

    With a chat template, every turn rendered by it with the generation prompt (so the model
    starts the assistant's turn); otherwise :data:`PLAIN_TEMPLATE`'s layout turn by turn, cut
    before ``{response}``. Shared by generation, SFT, RM and PPO: change it here, and every
    stage changes together.
    """
    if _chat_template(tokenizer) is not None:
        text = tokenizer.apply_chat_template(
            as_messages(prompt), tokenize=False, add_generation_prompt=True
        )
        return str(text)
    return plain_layout(prompt)


def plain_layout(prompt: PromptInput) -> str:
    """:func:`format_prompt` for a model without a chat template: each turn as ``Role:
    content`` and a newline, then ``Assistant: ``; for a string, ``PLAIN_TEMPLATE`` cut before
    the response."""
    turns = "".join(f"{ROLE_LABELS[m['role']]}: {m['content']}\n" for m in as_messages(prompt))
    return turns + ANSWER_PREFIX


def dialogue_layout(tokenizer: Any) -> dict[str, Any]:
    """How a dialogue prompt becomes the model's input, for ``rlhf.json`` beside
    :func:`template_for` (which holds for a string prompt, the same as one user turn)."""
    if _chat_template(tokenizer) is not None:
        return {
            "chat_template": True,
            "layout": "the tokenizer's chat template over the messages "
            "(apply_chat_template(messages, add_generation_prompt=True)), then the response",
        }
    return {
        "chat_template": False,
        "layout": "each turn as '<Role>: <content>' and a newline, then 'Assistant: ' and "
        "the response",
        "turn_template": "{role}: {content}\n",
        "roles": dict(ROLE_LABELS),
        "answer_prefix": ANSWER_PREFIX,
    }


def template_for(tokenizer: Any) -> str:
    """Return the Python format string (``{prompt}``, ``{response}``) matching :func:`format_prompt`.

    Written to ``rlhf.json`` so tools outside RLHF Studio can rebuild the exact input text, e.g.
    to score an answer with a saved reward model. For chat templates the string is the rendered
    generation prompt with the prompt replaced by ``{prompt}`` and the response appended, and any
    literal braces escaped, so ``template.format(prompt=p, response="")`` equals
    ``format_prompt(tokenizer, p)``.
    """
    if _chat_template(tokenizer) is None:
        return PLAIN_TEMPLATE
    rendered = format_prompt(tokenizer, _SENTINEL)
    if rendered.count(_SENTINEL) != 1:
        raise ValueError("chat template must contain the user's prompt exactly once")
    escaped = rendered.replace("{", "{{").replace("}", "}}")
    return escaped.replace(_SENTINEL, "{prompt}") + "{response}"
