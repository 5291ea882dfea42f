"""A small chat template for tests of dialogue formatting and conversational training: each
turn as ``<|role|>content`` on its own line, then ``<|assistant|>`` for the answer."""

from __future__ import annotations

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
