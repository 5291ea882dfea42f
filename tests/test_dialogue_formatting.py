"""How a dialogue prompt becomes a model's input (design §11): one function,
``format_prompt``, for generation, SFT, RM and PPO; the tokenizer's chat template over every
turn when it has one, else the plain ``User:``/``Assistant:`` layout turn by turn. Checked on
the formatted text and on the token ids a tiny model is given, through the generation job."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from transformers import AutoTokenizer, GenerationMixin

from app.config import Settings
from app.dialogue import Message
from app.jobs import kinds
from app.jobs.models import JobStatus
from app.jobs.service import create_job
from app.labeling.models import Completion
from app.models_registry.models import ModelKind, ModelVersion
from tests.helpers import make_project, make_prompt
from workers.ml.formatting import PLAIN_TEMPLATE, format_prompt, template_for
from workers.ml.openai_backend import OpenAIBackend, _body
from workers.ml.rm_train import KwiseCollator, Ranking
from workers.ml.sampling import SamplingParams, encode_prompt, sample_answers
from workers.ml.sft_train import CompletionCollator, Example
from workers.runner import run_job

# A chat template that writes every turn with its role, so the tests can see each one.
TURNS_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
DIALOGUE: list[Message] = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Name a colour."},
    {"role": "assistant", "content": "Blue."},
    {"role": "user", "content": "Another {one}?"},
]
WITH_TEMPLATE = (
    "<|system|>Be brief.\n<|user|>Name a colour.\n<|assistant|>Blue.\n<|user|>Another {one}?\n"
    "<|assistant|>"
)
PLAIN = (
    "System: Be brief.\nUser: Name a colour.\nAssistant: Blue.\nUser: Another {one}?\nAssistant: "
)
TEXTS = [
    "User: Name a colour.\nAssistant: Blue. Red. Green. <|user|> <|assistant|> <|system|>",
    "The quick brown fox jumps over the lazy dog. Be brief. Another one?",
] * 20


class _Plain:
    chat_template = None


@pytest.fixture(scope="module")
def chat_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny GPT-2 whose saved tokenizer has a chat template."""
    from workers.ml.tiny import build_tiny_causal_lm

    folder = build_tiny_causal_lm(tmp_path_factory.mktemp("chat") / "m", texts=TEXTS)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.chat_template = TURNS_TEMPLATE
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def chat_tokenizer(chat_model: Path) -> Any:
    return AutoTokenizer.from_pretrained(chat_model)


def test_without_a_chat_template_each_turn_is_a_line() -> None:
    assert format_prompt(_Plain(), DIALOGUE) == PLAIN
    # a string and the same text as one user message are the same input, the same as before
    one: list[Message] = [{"role": "user", "content": "Hi {x}\nthere"}]
    assert format_prompt(_Plain(), one) == format_prompt(_Plain(), "Hi {x}\nthere")
    assert format_prompt(_Plain(), "Hi {x}\nthere") == PLAIN_TEMPLATE.split("{response}")[
        0
    ].replace("{prompt}", "Hi {x}\nthere")


def test_with_a_chat_template_it_renders_every_turn(chat_tokenizer: Any) -> None:
    assert format_prompt(chat_tokenizer, DIALOGUE) == WITH_TEMPLATE
    assert format_prompt(chat_tokenizer, "Why?") == "<|user|>Why?\n<|assistant|>"
    # the string template in rlhf.json stays right for string prompts
    assert (
        template_for(chat_tokenizer).format(prompt="Why?", response="")
        == "<|user|>Why?\n<|assistant|>"
    )


def test_the_token_ids_are_the_formatted_dialogue(chat_tokenizer: Any) -> None:
    ids = encode_prompt(chat_tokenizer, DIALOGUE)
    assert chat_tokenizer.decode(ids) == WITH_TEMPLATE


def test_sft_and_the_reward_model_read_the_same_formatted_dialogue(chat_tokenizer: Any) -> None:
    sft = CompletionCollator(chat_tokenizer, max_length=200)
    ids, labels = sft.encode(Example(prompt=DIALOGUE, completion="Red."))
    answer = [i for i, label in zip(ids, labels, strict=True) if label != -100]
    prompt_ids = ids[: len(ids) - len(answer)]
    assert chat_tokenizer.decode(prompt_ids) == WITH_TEMPLATE
    assert chat_tokenizer.decode(answer, skip_special_tokens=True) == "Red."
    rm = KwiseCollator(chat_tokenizer, max_length=200, causal=True)
    texts = rm.texts(Ranking(prompt=DIALOGUE, answers=["Red.", "Green."], places=[0, 1]))
    assert texts == [WITH_TEMPLATE + "Red." + chat_tokenizer.eos_token,
                     WITH_TEMPLATE + "Green." + chat_tokenizer.eos_token]  # fmt: skip


def test_a_long_dialogue_loses_its_first_turns_not_its_last(chat_tokenizer: Any) -> None:
    from workers.ml.sampling import _encode_prompts

    long: list[Message] = [{"role": "user", "content": "fox " * 200}, *DIALOGUE[1:]]
    (ids,), truncated = _encode_prompts(chat_tokenizer, [long], 40)
    assert truncated == 1 and len(ids) == 40
    assert chat_tokenizer.decode(ids).endswith("<|user|>Another {one}?\n<|assistant|>")


def test_an_endpoint_gets_the_turns_or_the_plain_layout() -> None:
    params = SamplingParams(max_new_tokens=8)
    chat = OpenAIBackend(base_url="http://x", model="m", chat=True, api_key=None)
    assert _body(chat, DIALOGUE, 2, params)["messages"] == DIALOGUE
    assert _body(chat, "Hi", 2, params)["messages"] == [{"role": "user", "content": "Hi"}]
    completions = OpenAIBackend(base_url="http://x", model="m", chat=False, api_key=None)
    assert _body(completions, DIALOGUE, 2, params)["prompt"] == PLAIN


def test_sampling_a_dialogue_gives_k_answers(chat_model: Path, chat_tokenizer: Any) -> None:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(chat_model)
    params = SamplingParams(max_new_tokens=6, seed=3)
    result = sample_answers(model, chat_tokenizer, [DIALOGUE, "Why?"], k=3, params=params)
    assert [len(row) for row in result.answers] == [3, 3]


def test_the_generation_job_samples_a_dialogue_with_the_template_on_every_turn(
    session: Session,
    session_factory: sessionmaker[Session],
    settings: Settings,
    chat_model: Path,
    chat_tokenizer: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The job reads the prompt's turns from the database: what the model is given, decoded,
    is the chat template over every turn (its left padding aside)."""
    seen: list[str] = []
    generate = GenerationMixin.generate

    def spy(self: Any, *args: Any, **kwargs: Any) -> Any:
        for row, mask in zip(kwargs["input_ids"], kwargs["attention_mask"], strict=True):
            seen.append(chat_tokenizer.decode(row[mask.bool()]))
        return generate(self, *args, **kwargs)

    monkeypatch.setattr(GenerationMixin, "generate", spy)
    project = make_project(session, k=2)
    dialogue = make_prompt(session, project, messages=DIALOGUE, answers=0)
    plain = make_prompt(session, project, text="Why?", answers=0)
    version = ModelVersion(name="tiny-chat", kind=ModelKind.policy, path=str(chat_model))
    session.add(version)
    session.flush()
    project.current_policy_id = version.id
    params = {"sampling": {"max_new_tokens": 6, "seed": 1}, "batch_size": 2}
    job = create_job(session=session, kind=kinds.GENERATE, project_id=project.id, params=params)
    session.commit()
    status = run_job(job_id=job.id, session_factory=session_factory, settings=settings)
    assert status == JobStatus.succeeded
    assert WITH_TEMPLATE in seen and "<|user|>Why?\n<|assistant|>" in seen
    stored = session.scalars(select(Completion.prompt_id)).all()
    assert stored.count(dialogue.id) >= 1 and stored.count(plain.id) >= 1
