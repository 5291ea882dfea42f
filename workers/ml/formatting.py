"""How a prompt (and an answer) become the text a model reads.

One function, :func:`format_prompt`, is used by generation, SFT, the reward model and PPO, so
that every stage sees exactly the same text for the same prompt; a model trained on one layout
and scored or sampled with another silently gets worse. :func:`template_for` gives the same
layout as a Python format string, stored in each saved folder's ``rlhf.json`` so that outside
tools can score a (prompt, response) pair the way we trained it.
"""

from __future__ import annotations

from typing import Any

#: Layout for models without a chat template (e.g. the tiny test models, plain base LMs).
PLAIN_TEMPLATE = "User: {prompt}\nAssistant: {response}"

# The part the model continues: the plain template cut before the answer. Derived from
# PLAIN_TEMPLATE so the two can never drift apart.
_PLAIN_PROMPT_PART = PLAIN_TEMPLATE.split("{response}", 1)[0]

# Stand-in prompt used to turn a rendered chat template back into a format string. Has no
# characters a chat template would escape or strip.
_SENTINEL = "RLHFSTUDIOPROMPTSENTINEL7f3a9c"


def _chat_template(tokenizer: Any) -> str | None:
    template = getattr(tokenizer, "chat_template", None)
    return template if template else None


def format_prompt(tokenizer: Any, prompt: str) -> str:
    """Return the text the model continues to answer ``prompt``.

    With a chat template, the single user turn rendered with the generation prompt (so the model
    starts the assistant's turn); otherwise :data:`PLAIN_TEMPLATE` cut before ``{response}``.
    Shared by generation, SFT, RM and PPO: change it here, and every stage changes together.
    """
    if _chat_template(tokenizer) is not None:
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )
        return str(text)
    return _PLAIN_PROMPT_PART.format(prompt=prompt)


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
