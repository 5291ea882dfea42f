"""Generation step of the InstructGPT loop on a tiny random GPT-2 (no downloads, no database).

One tiny model is built per module: training a tokenizer and saving a model take about a second,
and every test only reads them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tests.chat import CHAT_TEMPLATE
from workers.ml.formatting import PLAIN_TEMPLATE, format_prompt, template_for
from workers.ml.sampling import (
    SamplingParams,
    dedupe_answers,
    naive_sample,
    sample_answers,
)
from workers.ml.tiny import build_tiny_causal_lm

TEXTS = [
    "User: What is the capital of France?\nAssistant: Paris is the capital of France.",
    "User: Name a primary colour.\nAssistant: Red, blue and yellow are primary colours.",
    "User: How many legs does a spider have?\nAssistant: A spider has eight legs.",
    "User: Write a haiku about rain.\nAssistant: Soft rain on the roof, the garden drinks slowly, night hums.",
    "The quick brown fox jumps over the lazy dog. 0123456789 {braces} and [brackets].",
] * 4

PROMPTS = [
    "Hi",
    "What is the capital of France, and why is it famous?",
    "Tell me a long story about a spider who counts its eight legs every morning.",
]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_causal_lm(tmp_path_factory.mktemp("tiny") / "base", texts=TEXTS)


@pytest.fixture(scope="module")
def tokenizer(model_dir: Path) -> Any:
    return AutoTokenizer.from_pretrained(model_dir)


@pytest.fixture(scope="module")
def model(model_dir: Path) -> Any:
    return AutoModelForCausalLM.from_pretrained(model_dir)


def test_saved_folder_reloads_with_template_and_distinct_pad(
    model_dir: Path, model: Any, tokenizer: Any
) -> None:
    meta = json.loads((model_dir / "rlhf.json").read_text())
    assert {k: meta[k] for k in ("kind", "parent", "template")} == {
        "kind": "base", "parent": None, "template": PLAIN_TEMPLATE,
    }  # fmt: skip
    # how a dialogue is laid out, rebuilt from the file alone
    layout = meta["dialogue"]
    assert layout["chat_template"] is False
    turns = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
             {"role": "user", "content": "c"}]  # fmt: skip
    rebuilt = (
        "".join(
            layout["turn_template"].format(role=layout["roles"][t["role"]], content=t["content"])
            for t in turns
        )
        + layout["answer_prefix"]
    )
    assert (
        rebuilt == format_prompt(tokenizer, turns) == "User: a\nAssistant: b\nUser: c\nAssistant: "
    )
    assert tokenizer.pad_token_id is not None
    assert tokenizer.pad_token_id != tokenizer.eos_token_id
    assert tokenizer.padding_side == "left"
    assert model.config.pad_token_id == tokenizer.pad_token_id
    assert model.generation_config.pad_token_id == tokenizer.pad_token_id
    assert model.generation_config.eos_token_id == tokenizer.eos_token_id
    assert model.config.vocab_size == len(tokenizer)
    # Unknown characters still encode (byte level) and round-trip.
    text = "Ünïcödé ✓ {x}"
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text


def test_same_seed_builds_same_weights(tmp_path: Path, model: Any) -> None:
    other = build_tiny_causal_lm(tmp_path / "again", texts=TEXTS)
    reloaded = AutoModelForCausalLM.from_pretrained(other)
    for a, b in zip(model.parameters(), reloaded.parameters(), strict=True):
        assert torch.equal(a, b)


def test_format_prompt_without_chat_template(tokenizer: Any) -> None:
    assert tokenizer.chat_template is None
    text = format_prompt(tokenizer, "Why {so} blue?")
    assert text == "User: Why {so} blue?\nAssistant: "
    assert template_for(tokenizer) == PLAIN_TEMPLATE
    assert PLAIN_TEMPLATE.format(prompt="Why {so} blue?", response="Sky.") == text + "Sky."


def test_format_prompt_with_chat_template(model_dir: Path) -> None:
    chat_tok = AutoTokenizer.from_pretrained(model_dir)  # a copy: the shared one stays plain
    chat_tok.chat_template = CHAT_TEMPLATE
    text = format_prompt(chat_tok, "Why {so} blue?")
    assert text == "<|user|>Why {so} blue?\n<|assistant|>"
    template = template_for(chat_tok)
    assert template == "<|user|>{prompt}\n<|assistant|>{response}"
    assert template.format(prompt="Why {so} blue?", response="") == text


def test_left_padding_matches_unpadded_greedy(model: Any, tokenizer: Any) -> None:
    params = SamplingParams(temperature=0, max_new_tokens=12, seed=0)
    batched = sample_answers(model, tokenizer, PROMPTS, k=1, params=params, batch_size=8)
    assert len({a[0] for a in batched.answers}) == len(PROMPTS)  # non-trivial answers
    for prompt, answers in zip(PROMPTS, batched.answers, strict=True):
        alone = sample_answers(model, tokenizer, [prompt], k=1, params=params)
        assert answers == alone.answers[0]
    # Same result through the one-call-per-answer baseline.
    assert naive_sample(model, tokenizer, PROMPTS, k=1, params=params).answers == batched.answers


def test_left_padding_uses_attention_mask(model: Any, tokenizer: Any) -> None:
    """Raw check of the model under test: padded rows equal unpadded ones token for token."""
    rows = [tokenizer(format_prompt(tokenizer, p))["input_ids"] for p in PROMPTS]
    padded = tokenizer.pad({"input_ids": rows}, return_tensors="pt")
    assert tokenizer.padding_side == "left"
    assert padded["attention_mask"][0, 0] == 0  # the short prompt is padded on the left
    kwargs = {"max_new_tokens": 8, "do_sample": False, "pad_token_id": tokenizer.pad_token_id}
    with torch.inference_mode():
        out = model.generate(**padded, **kwargs)
        width = padded["input_ids"].shape[1]
        for i, row in enumerate(rows):
            alone = model.generate(torch.tensor([row]), **kwargs)
            new_alone = alone[0, len(row) :].tolist()
            assert out[i, width : width + len(new_alone)].tolist() == new_alone


def test_k_answers_per_prompt_in_the_right_slot(model: Any, tokenizer: Any) -> None:
    k = 3
    params = SamplingParams(max_new_tokens=6, seed=123)
    result = sample_answers(model, tokenizer, PROMPTS, k=k, params=params, batch_size=2)
    assert [len(a) for a in result.answers] == [k] * len(PROMPTS)
    assert [len(c) for c in result.token_counts] == [k] * len(PROMPTS)
    assert all(1 <= n <= 6 for row in result.token_counts for n in row)
    assert result.new_tokens == sum(map(sum, result.token_counts))
    assert result.seconds > 0 and result.tokens_per_second > 0
    assert all(a == a.strip() for row in result.answers for a in row)
    # Same seed, same answers: sampling is reproducible.
    again = sample_answers(model, tokenizer, PROMPTS, k=k, params=params, batch_size=2)
    assert again.answers == result.answers
    # Slot check with greedy decoding: all k answers of a prompt are its own greedy answer,
    # whatever the batching, so a mix-up between prompts would show.
    greedy = SamplingParams(temperature=0, max_new_tokens=8)
    by_k = sample_answers(model, tokenizer, PROMPTS, k=k, params=greedy, batch_size=2)
    single = sample_answers(model, tokenizer, PROMPTS, k=1, params=greedy)
    for answers, (expected,) in zip(by_k.answers, single.answers, strict=True):
        assert answers == [expected] * k
    assert len({row[0] for row in single.answers}) > 1  # the prompts are told apart


def test_pure_sampling_passes_top_k_zero(model: Any, tokenizer: Any) -> None:
    """transformers 5 would default top_k to 50; pure sampling must switch it off explicitly."""
    seen: dict[str, Any] = {}
    original = model.generate

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.update(kwargs)
        return original(*args, **kwargs)

    model.generate = spy
    try:
        sample_answers(model, tokenizer, ["Hi"], k=2, params=SamplingParams(max_new_tokens=2))
    finally:
        del model.generate
    assert seen["do_sample"] is True
    assert (seen["temperature"], seen["top_p"], seen["top_k"]) == (1.0, 1.0, 0)
    assert seen["num_return_sequences"] == 2
    assert seen["attention_mask"] is not None
    assert seen["pad_token_id"] == tokenizer.pad_token_id != seen["eos_token_id"]


def test_overlong_prompt_is_left_truncated_and_counted(model: Any, tokenizer: Any) -> None:
    long_prompt = "spider legs " * 400  # far beyond the 256-token context
    params = SamplingParams(temperature=0, max_new_tokens=8)
    result = sample_answers(model, tokenizer, ["Hi", long_prompt], k=2, params=params)
    assert result.truncated_prompts == 1
    assert [len(a) for a in result.answers] == [2, 2]
    capped = sample_answers(model, tokenizer, PROMPTS, k=1, params=params, max_prompt_tokens=5)
    assert capped.truncated_prompts == len(PROMPTS)
    with pytest.raises(ValueError, match="no room"):
        sample_answers(model, tokenizer, ["Hi"], k=1, params=SamplingParams(max_new_tokens=256))


def test_model_training_mode_is_restored(model: Any, tokenizer: Any) -> None:
    model.train()
    try:
        sample_answers(model, tokenizer, ["Hi"], k=1, params=SamplingParams(max_new_tokens=2))
        assert model.training
    finally:
        model.eval()


def test_dedupe_answers() -> None:
    answers = ["a", "", "b", "  ", "a", "c", "b", "d"]
    assert dedupe_answers(answers, existing={"c"}) == ["a", "b", "d"]
    assert dedupe_answers([], existing=set()) == []
    # A model can decode to NUL, which Postgres cannot store: removed (all-NUL is empty).
    assert dedupe_answers(["a\x00b", "\x00\x00", "ab"], existing=set()) == ["ab"]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"temperature": -0.1}, "temperature"),
        ({"temperature": float("nan")}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"top_k": -1}, "top_k"),
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"max_new_tokens": 4097}, "max_new_tokens"),
    ],
)
def test_sampling_params_validation(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SamplingParams(**kwargs)


def test_sampling_params_defaults_are_pure_sampling() -> None:
    params = SamplingParams()
    assert (params.temperature, params.top_p, params.top_k) == (1.0, 1.0, 0)
    assert SamplingParams(temperature=0, max_new_tokens=4096).greedy


def test_bad_k_and_batch_size(model: Any, tokenizer: Any) -> None:
    with pytest.raises(ValueError, match="k must be"):
        sample_answers(model, tokenizer, ["Hi"], k=0, params=SamplingParams())
    with pytest.raises(ValueError, match="batch_size"):
        sample_answers(model, tokenizer, ["Hi"], k=1, params=SamplingParams(), batch_size=0)
