"""PPO against a reward model (InstructGPT's third step), with optional PPO-ptx.

One step = sample a batch of prompts, roll out one response each from the policy (pure
sampling), score it, then ``ppo_epochs`` passes of clipped updates over minibatches:

1. **Rollout**: prompts laid out by ``encode_prompt`` (the ids generation and SFT use), left
   padded, ``generate`` with temperature ``T``, top_k 0, top_p 1. A response's tokens run up
   to and including its first EOS; what follows is masked out everywhere.
2. **Score**: the reward model reads the *decoded* text through its own tokenizer and template
   (so a policy and an RM with different tokenizers work), normalised with the mean and std
   stored with the RM, clipped to ``+-score_clip``; a response that hit the length limit
   without EOS loses ``missing_eos_penalty``.
3. **Log-probs** of the policy (the "old" ones) and of the frozen reference (the SFT model) are
   computed with the same temperature; values come from the critic. With LoRA
   (``config.lora``) the policy and the critic each carry an adapter (the critic's score head
   trained in full) and the reference is the policy with its adapter off: no copy of it.
4. **Rewards**: ``-beta * (logp - logp_ref)`` per token plus the score on the last real token;
   GAE (gamma 1, lambda 0.95), advantages whitened over the real tokens.
5. **Update**: clipped surrogate (0.2) + ``vf_coef`` * clipped value loss (0.2), plus with
   PPO-ptx ``ptx_coef`` * the LM loss on a batch of demonstrations; a step whose loss or
   gradient is NaN/inf is skipped and logged; several in a row stop the run.

The old log-probs and values are computed in the same minibatches, in the same order, as the
first update pass, so the first minibatch of the first epoch sees a ratio of exactly 1.

Critic (decision): a value head on a copy of the reward model when the RM is a causal LM whose
vocabulary agrees with the policy's on every policy token (InstructGPT initialises the value
function from the RM: it already reads the answers' quality); its head is rescaled so that
its first values are the normalised scores the returns are made of. Otherwise (an encoder RM
such as MiniLM, another tokenizer) a value head on a copy of the policy, as TRL's examples do.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from app.dialogue import PromptInput
from workers.ml.long_inputs import DROP, LeftOut, check_policy, too_long
from workers.ml.lora import LoraSettings, adapter_off, apply_lora, is_lora
from workers.ml.ppo_math import (
    KLController,
    entropy_from_logits,
    gae,
    has_eos,
    kl_penalties,
    masked_mean,
    masked_whiten,
    policy_loss,
    response_mask,
    token_logprobs,
    token_rewards,
    value_loss,
)
from workers.ml.sampling import encode_prompt


class PPOError(RuntimeError):
    """The run cannot go on; the message says why (shown on the job page)."""


@dataclass
class PPOConfig:
    steps: int = 20  # rollout batches
    batch_size: int = 16  # prompts (rollouts) per step
    mini_batch_size: int = 4
    ppo_epochs: int = 4
    learning_rate: float = 1e-5
    max_new_tokens: int = 64
    max_prompt_length: int = 256
    temperature: float = 1.0
    kl_coef: float = 0.05  # beta
    kl_target: float | None = None  # set: adaptive KL towards this (nats per response)
    kl_horizon: int = 10000
    gamma: float = 1.0
    lam: float = 0.95
    cliprange: float = 0.2
    cliprange_value: float = 0.2
    vf_coef: float = 0.1
    score_clip: float = 5.0
    missing_eos_penalty: float = 1.0
    ptx_coef: float = 0.0  # PPO-ptx: gamma_ptx
    ptx_batch_size: int = 4
    max_grad_norm: float | None = 1.0
    forward_batch_size: int = 16  # rollouts per forward pass of the reference and the critic
    seed: int = 0
    sample_every: int = 5  # a table of sample responses every N steps
    samples: int = 4
    eval_every: int = 10  # held-out mean score every N steps (and at the start and end)
    eval_prompts: int = 32
    save_steps: int = 0  # a checkpoint every N steps (0: none)
    max_bad_steps: int = 3  # NaN/inf steps in a row before the run stops
    lora: LoraSettings | None = None  # set: adapters on the policy and critic, not every weight

    def __post_init__(self) -> None:
        if self.batch_size % self.mini_batch_size:
            raise PPOError(
                f"batch_size ({self.batch_size}) must be a multiple of mini_batch_size "
                f"({self.mini_batch_size})"
            )


def fit_prompts(
    tokenizer: Any,
    prompts: Sequence[PromptInput],
    *,
    max_prompt_length: int,
    long_answers: str = DROP,
) -> tuple[list[PromptInput], LeftOut, int]:
    """The prompts a rollout can start from, what was left out and how many will be cut: a
    prompt longer than ``max_prompt_length`` tokens is left out (``drop``) or kept, to be cut
    from the left when it is encoded (``truncate``), the long-input policy of design §10."""
    check_policy(long_answers, PPOError)
    kept, left_out, cut = [], LeftOut(), 0
    for prompt in prompts:
        if len(encode_prompt(tokenizer, prompt)) > max_prompt_length:
            if long_answers == DROP:
                left_out.add(too_long("prompts", max_prompt_length, limit="max_prompt_length"))
                continue
            cut += 1
        kept.append(prompt)
    return kept, left_out, cut


#: (prompts, responses) -> raw reward-model scores, (B,)
Scorer = Callable[[Sequence[PromptInput], Sequence[str]], torch.Tensor]


class RewardModelScorer:
    """Scores decoded answers with a reward model folder, through its own tokenizer and
    template (prompts cut at the start, never the answer)."""

    def __init__(self, path: str | Path, *, max_length: int = 512, batch_size: int = 16) -> None:
        from workers.ml.reward_model import is_causal, load_reward_model
        from workers.ml.rm_train import KwiseCollator
        from workers.ml.training import disable_dropout, fit_max_length

        self.model, self.tokenizer = load_reward_model(path)
        disable_dropout(self.model)
        self.model.eval()
        self.causal = is_causal(self.model.config)
        self.collator = KwiseCollator(
            self.tokenizer, max_length=fit_max_length(max_length, self.model), causal=self.causal
        )
        self.batch_size = batch_size

    def to(self, device: torch.device) -> RewardModelScorer:
        self.model.to(device)
        return self

    @torch.no_grad()
    def __call__(self, prompts: Sequence[PromptInput], responses: Sequence[str]) -> torch.Tensor:
        from workers.ml.reward_model import reward_scores
        from workers.ml.rm_train import Ranking

        device = next(self.model.parameters()).device
        out = []
        for start in range(0, len(prompts), self.batch_size):
            chunk = [
                Ranking(p, [r], [0])
                for p, r in zip(
                    prompts[start : start + self.batch_size],
                    responses[start : start + self.batch_size],
                    strict=True,
                )
            ]
            batch = self.collator(chunk)
            out.append(
                reward_scores(
                    self.model, batch["input_ids"].to(device), batch["attention_mask"].to(device)
                ).float()
            )
        return torch.cat(out).cpu() if out else torch.zeros(0)


def _policy_vocab_agrees(policy_tokenizer: Any, rm_tokenizer: Any) -> bool:
    rm_vocab = rm_tokenizer.get_vocab()
    return all(rm_vocab.get(token) == i for token, i in policy_tokenizer.get_vocab().items())


def build_critic(
    policy_path: str | Path,
    policy_tokenizer: Any,
    reward_path: str | Path | None,
    *,
    reward_mean: float = 0.0,
    reward_std: float = 1.0,
) -> tuple[Any, str]:
    """The value model and where it came from ("reward model" or "policy"); see the module
    docstring for the choice."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from workers.ml.reward_model import is_causal
    from workers.ml.training import disable_dropout

    if reward_path is not None:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(reward_path)
        rm_tokenizer = AutoTokenizer.from_pretrained(reward_path)
        if is_causal(config) and _policy_vocab_agrees(policy_tokenizer, rm_tokenizer):
            critic = AutoModelForSequenceClassification.from_pretrained(reward_path, num_labels=1)
            head = critic.score
            with torch.no_grad():  # values start as the normalised scores
                head.weight.div_(reward_std)
                if head.bias is not None:
                    head.bias.sub_(reward_mean).div_(reward_std)
                else:
                    head.bias = torch.nn.Parameter(
                        torch.full((1,), -reward_mean / reward_std, dtype=head.weight.dtype)
                    )
            disable_dropout(critic)
            return critic, "reward model"
    critic = AutoModelForSequenceClassification.from_pretrained(policy_path, num_labels=1)
    with torch.no_grad():
        critic.score.weight.zero_()  # values start at 0: no made-up baseline
    disable_dropout(critic)
    return critic, "policy"


def token_values(
    critic: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> torch.Tensor:
    """(B, T) the critic's value at every position."""
    from workers.ml.reward_model import position_scores

    return position_scores(critic, input_ids, attention_mask).float()


@dataclass
class Rollout:
    """One batch of rollouts; every (B, R) tensor is over the response tokens."""

    prompts: list[PromptInput]
    responses: list[str]
    query: torch.Tensor  # (B, P) left-padded prompt ids
    query_mask: torch.Tensor
    response: torch.Tensor  # (B, R)
    mask: torch.Tensor  # (B, R) float, 1 up to and including the first EOS
    raw_scores: torch.Tensor  # (B,) as the RM said
    scores: torch.Tensor  # (B,) normalised, clipped, EOS penalty applied
    eos: torch.Tensor  # (B,) bool
    logprobs: torch.Tensor | None = None
    ref_logprobs: torch.Tensor | None = None
    values: torch.Tensor | None = None
    advantages: torch.Tensor | None = None
    returns: torch.Tensor | None = None
    order: torch.Tensor | None = None  # the first PPO epoch's order of the rollouts

    @property
    def input_ids(self) -> torch.Tensor:
        return torch.cat([self.query, self.response], dim=1)

    @property
    def attention_mask(self) -> torch.Tensor:
        return torch.cat([self.query_mask.float(), self.mask], dim=1).long()


def forward_logits(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Any:
    positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    return model(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions).logits


@dataclass
class StepStats:
    values: dict[str, float] = field(default_factory=dict)
    samples: list[dict[str, Any]] = field(default_factory=list)


class PPOTrainer:
    """Policy, frozen reference, critic and scorer on one device. ``step()`` runs one PPO step
    (rollout, score, update) on the next batch of ``prompts``; ``rollout`` and ``update`` are
    public so a test or a benchmark can feed a frozen rollout. With ``config.lora`` the
    policy and critic get their adapters here and ``ref_policy`` must be None (the reference
    is the policy with its adapter off)."""

    def __init__(
        self,
        policy: Any,
        ref_policy: Any | None,
        critic: Any,
        tokenizer: Any,
        scorer: Scorer,
        config: PPOConfig,
        *,
        prompts: Sequence[PromptInput],
        reward_mean: float = 0.0,
        reward_std: float = 1.0,
        demonstrations: Sequence[Any] = (),
    ) -> None:
        from workers.ml.training import disable_dropout

        if not prompts:
            raise PPOError("there are no prompts to train on: import or write some first")
        if (ref_policy is None) != (config.lora is not None):
            raise PPOError(
                "PPO takes a reference model without LoRA and none with it (the policy with "
                "its adapter off is the reference)"
            )
        for model in (policy, ref_policy, critic):
            if model is not None:
                disable_dropout(model)
        if config.lora is not None:  # after: an adapter dropout asked for is kept
            torch.manual_seed(config.seed)  # the adapters start random (lora_A): seeded
            policy = apply_lora(policy, config.lora, task="causal")
            critic = apply_lora(critic, config.lora, task="score")
        self.policy, self.ref_policy, self.critic = policy, ref_policy, critic
        if ref_policy is not None:
            ref_policy.eval()
            for p in ref_policy.parameters():
                p.requires_grad_(False)
        self.tokenizer = tokenizer
        self.scorer = scorer
        self.config = config
        self.prompts = list(prompts)
        self.reward_mean = reward_mean
        self.reward_std = reward_std if reward_std and math.isfinite(reward_std) else 1.0
        self.device = next(policy.parameters()).device
        self.eos_ids = self._eos_ids()
        self.pad_id = (
            tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_ids[0]
        )
        params = [p for model in (policy, critic) for p in model.parameters() if p.requires_grad]
        # AdamW as the transformers Trainer sets it up (no weight decay), one over both models
        self.optimizer = torch.optim.AdamW(
            params, lr=config.learning_rate, eps=1e-8, weight_decay=0.0
        )
        self.kl = KLController(config.kl_coef, target=config.kl_target, horizon=config.kl_horizon)
        self.step_index = 0  # steps done
        self.timings = {"generation": 0.0, "scoring": 0.0, "update": 0.0}  # seconds, cumulative
        self.bad_in_a_row = 0
        self.demonstrations = list(demonstrations)
        self.ptx_collator: Any = None
        if config.ptx_coef > 0:
            if not self.demonstrations:
                raise PPOError(
                    "PPO-ptx needs demonstrations (ptx_coef > 0) and the project has none"
                )
            from workers.ml.sft_train import CompletionCollator

            length = config.max_prompt_length + config.max_new_tokens
            self.ptx_collator = CompletionCollator(tokenizer, max_length=length)

    def _eos_ids(self) -> list[int]:
        eos = getattr(self.policy.generation_config, "eos_token_id", None)
        if eos is None:
            eos = self.tokenizer.eos_token_id
        if eos is None:
            raise PPOError("the policy's tokenizer has no EOS token: answers could never end")
        return [int(e) for e in eos] if isinstance(eos, list | tuple) else [int(eos)]

    # --- data -------------------------------------------------------------------------------

    def batch_prompts(self, step: int) -> list[PromptInput]:
        """The prompts of step ``step``: passes over the prompts, each in a seeded order; a
        function of the step alone, so a resumed run draws what an unbroken one would."""
        n, size = len(self.prompts), self.config.batch_size
        out = []
        for i in range(step * size, (step + 1) * size):
            epoch, at = divmod(i, n)
            order = torch.randperm(
                n, generator=torch.Generator().manual_seed(self.config.seed + epoch)
            )
            out.append(self.prompts[int(order[at])])
        return out

    def _encode(self, prompts: Sequence[PromptInput]) -> tuple[torch.Tensor, torch.Tensor]:
        rows = [encode_prompt(self.tokenizer, p)[-self.config.max_prompt_length :] for p in prompts]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, width - len(row) :] = torch.tensor(row, dtype=torch.long)
            mask[i, width - len(row) :] = 1
        return ids.to(self.device), mask.to(self.device)

    # --- rollout ----------------------------------------------------------------------------

    @torch.no_grad()
    def generate(self, prompts: Sequence[PromptInput], *, seed: int) -> Rollout:
        """Sample one response per prompt and score it (no log-probs yet)."""
        cfg = self.config
        start = time.perf_counter()
        query, query_mask = self._encode(prompts)
        self.policy.eval()
        torch.manual_seed(seed)
        out = self.policy.generate(
            input_ids=query, attention_mask=query_mask, do_sample=True,
            temperature=cfg.temperature, top_k=0, top_p=1.0, max_new_tokens=cfg.max_new_tokens,
            pad_token_id=self.pad_id, eos_token_id=self.eos_ids,
        )  # fmt: skip
        response = out[:, query.shape[1] :]
        if response.shape[1] == 0:  # every prompt at once hit a limit: one pad column
            response = torch.full((len(prompts), 1), self.pad_id, device=self.device)
        mask = response_mask(response, self.eos_ids)
        eos = has_eos(response, mask, self.eos_ids)
        texts = [
            self.tokenizer.decode(row[: int(n)], skip_special_tokens=True).strip()
            for row, n in zip(response.tolist(), mask.sum(1).tolist(), strict=True)
        ]
        scored = time.perf_counter()
        self.timings["generation"] += scored - start
        raw = self.scorer(list(prompts), texts).float()
        self.timings["scoring"] += time.perf_counter() - scored
        scores = self.normalise(raw) - cfg.missing_eos_penalty * (~eos).float().cpu()
        return Rollout(
            prompts=list(prompts), responses=texts, query=query, query_mask=query_mask,
            response=response, mask=mask, raw_scores=raw, scores=scores, eos=eos.cpu(),
        )  # fmt: skip

    def normalise(self, raw: torch.Tensor) -> torch.Tensor:
        clip = self.config.score_clip
        return ((raw - self.reward_mean) / self.reward_std).clamp(-clip, clip)

    @torch.no_grad()
    def prepare(self, rollout: Rollout, *, order: torch.Tensor) -> Rollout:
        """Old and reference log-probs, values, rewards and advantages; computed minibatch by
        minibatch in ``order``, the first update pass's order."""
        cfg = self.config
        began = time.perf_counter()
        self.policy.eval()
        self.critic.eval()
        ids, attn = rollout.input_ids, rollout.attention_mask
        p = rollout.query.shape[1]
        logprobs = torch.zeros_like(rollout.mask)
        ref_logprobs = torch.zeros_like(rollout.mask)
        values = torch.zeros_like(rollout.mask)
        for start in range(0, len(order), cfg.mini_batch_size):  # as the first update pass
            rows = order[start : start + cfg.mini_batch_size]
            logits = forward_logits(self.policy, ids[rows], attn[rows])[:, p - 1 : -1]
            logprobs[rows] = token_logprobs(logits / cfg.temperature, rollout.response[rows])
        reference = self.policy if self.ref_policy is None else self.ref_policy
        for start in range(0, len(order), cfg.forward_batch_size):
            rows = order[start : start + cfg.forward_batch_size]
            with adapter_off(reference):  # LoRA: the policy with its adapter off
                ref = forward_logits(reference, ids[rows], attn[rows])[:, p - 1 : -1]
            ref_logprobs[rows] = token_logprobs(ref / cfg.temperature, rollout.response[rows])
            values[rows] = token_values(self.critic, ids[rows], attn[rows])[:, p - 1 : -1]
        mask = rollout.mask
        logprobs, ref_logprobs, values = logprobs * mask, ref_logprobs * mask, values * mask
        rewards = token_rewards(
            rollout.scores.to(self.device), logprobs, ref_logprobs, mask, self.kl.value
        )
        advantages, returns = gae(rewards, values, mask, gamma=cfg.gamma, lam=cfg.lam)
        advantages = masked_whiten(advantages, mask)
        rollout.logprobs, rollout.ref_logprobs, rollout.values = logprobs, ref_logprobs, values
        rollout.advantages, rollout.returns, rollout.order = advantages, returns, order
        self.timings["scoring"] += time.perf_counter() - began
        return rollout

    # --- update -----------------------------------------------------------------------------

    def _ptx_loss(self, index: int) -> torch.Tensor:
        size = self.config.ptx_batch_size
        n = len(self.demonstrations)
        batch = [self.demonstrations[(index * size + i) % n] for i in range(size)]
        inputs = {k: v.to(self.device) for k, v in self.ptx_collator(batch).items()}
        return self.policy(**inputs).loss

    def update(self, rollout: Rollout, *, seed: int) -> dict[str, float]:
        """``ppo_epochs`` passes of clipped updates; the first in ``rollout.order``."""
        cfg = self.config
        assert rollout.advantages is not None and rollout.order is not None
        assert rollout.logprobs is not None and rollout.values is not None
        assert rollout.returns is not None
        started = time.perf_counter()
        self.policy.train()
        self.critic.train()
        ids, attn = rollout.input_ids, rollout.attention_mask
        p = rollout.query.shape[1]
        generator = torch.Generator().manual_seed(seed)
        stats: dict[str, list[float]] = {}
        skipped = 0
        minibatch = 0
        for epoch in range(cfg.ppo_epochs):
            order = rollout.order if epoch == 0 else torch.randperm(len(ids), generator=generator)
            for start in range(0, len(order), cfg.mini_batch_size):
                rows = order[start : start + cfg.mini_batch_size].to(self.device)
                mask = rollout.mask[rows]
                logits = forward_logits(self.policy, ids[rows], attn[rows])[:, p - 1 : -1]
                logits = logits / cfg.temperature
                new_logprobs = token_logprobs(logits, rollout.response[rows])
                pg = policy_loss(
                    new_logprobs, rollout.logprobs[rows], rollout.advantages[rows], mask,
                    cliprange=cfg.cliprange,
                )  # fmt: skip
                vpred = token_values(self.critic, ids[rows], attn[rows])[:, p - 1 : -1]
                vf, vf_clip = value_loss(
                    vpred * mask, rollout.values[rows], rollout.returns[rows], mask,
                    cliprange_value=cfg.cliprange_value,
                )  # fmt: skip
                loss = pg.loss + cfg.vf_coef * vf
                if self.ptx_collator is not None:
                    ptx = self._ptx_loss(self.step_index * 1000 + minibatch)
                    loss = loss + cfg.ptx_coef * ptx
                    stats.setdefault("ptx_loss", []).append(float(ptx.detach()))
                minibatch += 1
                self.optimizer.zero_grad(set_to_none=True)
                if not torch.isfinite(loss):
                    skipped += 1
                    continue
                loss.backward()
                params = [q for group in self.optimizer.param_groups for q in group["params"]]
                if cfg.max_grad_norm:
                    norm = torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
                else:
                    norm = torch.nn.utils.get_total_norm(
                        [q.grad for q in params if q.grad is not None]
                    )
                if not torch.isfinite(norm):
                    self.optimizer.zero_grad(set_to_none=True)
                    skipped += 1
                    continue
                self.optimizer.step()
                with torch.no_grad():
                    entropy = masked_mean(entropy_from_logits(logits), mask)
                for name, value in (
                    ("policy_loss", pg.loss), ("value_loss", vf), ("clip_fraction", pg.clip_fraction),
                    ("value_clip_fraction", vf_clip), ("approx_kl", pg.approx_kl),
                    ("entropy", entropy), ("ratio", masked_mean(pg.ratio, mask)),
                    ("grad_norm", norm),
                ):  # fmt: skip
                    stats.setdefault(name, []).append(float(value.detach()))
                if epoch == 0 and start == 0:
                    stats["first_ratio_max_error"] = [
                        float(((pg.ratio.detach() - 1).abs() * mask).max())
                    ]
        self.optimizer.zero_grad(set_to_none=True)
        out = {name: sum(v) / len(v) for name, v in stats.items() if v}
        out["skipped_minibatches"] = float(skipped)
        out["minibatches"] = float(minibatch)
        self.timings["update"] += time.perf_counter() - started
        return out

    # --- one step ---------------------------------------------------------------------------

    def step(self) -> StepStats:
        """Rollout, score, update on the next batch; raises ``PPOError`` after
        ``max_bad_steps`` steps in a row whose updates were all NaN/inf."""
        cfg = self.config
        index = self.step_index
        before = dict(self.timings)
        rollout = self.generate(self.batch_prompts(index), seed=cfg.seed * 1_000_003 + index)
        order = torch.randperm(
            len(rollout.prompts), generator=torch.Generator().manual_seed(cfg.seed * 7919 + index)
        ).to(self.device)
        self.prepare(rollout, order=order)
        update = self.update(rollout, seed=cfg.seed * 104729 + index)
        timings = {f"time_{k}": v - before[k] for k, v in self.timings.items()}
        mask = rollout.mask
        assert rollout.logprobs is not None and rollout.ref_logprobs is not None
        k1, k3 = kl_penalties(rollout.logprobs, rollout.ref_logprobs)
        kl_k1 = float((k1 * mask).sum(1).mean())
        values: dict[str, float] = {
            "score": float(rollout.raw_scores.mean()),
            "score_normalised": float(rollout.scores.mean()),
            "kl": kl_k1,
            "kl_k3": float((k3 * mask).sum(1).mean()),
            "kl_coef": self.kl.value,
            "reward": float(rollout.scores.mean()) - self.kl.value * kl_k1,
            "response_length": float(mask.sum(1).mean()),
            "eos_rate": float(rollout.eos.float().mean()),
            **update,
            **timings,
        }
        self.kl.update(kl_k1, len(rollout.prompts))
        self.step_index += 1
        if update["minibatches"] and update["skipped_minibatches"] == update["minibatches"]:
            self.bad_in_a_row += 1
            if self.bad_in_a_row >= cfg.max_bad_steps:
                raise PPOError(
                    f"the loss or its gradient was NaN/inf in every update of {self.bad_in_a_row} "
                    "steps in a row: lower the learning rate, or check the reward model's scores"
                )
        else:
            self.bad_in_a_row = 0
        samples = []
        if cfg.sample_every and index % cfg.sample_every == 0:
            samples = [
                {"prompt": p, "response": r, "score": round(float(s), 4)}
                for p, r, s in list(
                    zip(rollout.prompts, rollout.responses, rollout.raw_scores, strict=True)
                )[: cfg.samples]
            ]
        return StepStats(
            values={k: v for k, v in values.items() if math.isfinite(v)}, samples=samples
        )

    @torch.no_grad()
    def evaluate(self, prompts: Sequence[PromptInput], *, seed: int = 12345) -> dict[str, float]:
        """Mean RM score (raw) and KL to the reference of sampled answers to ``prompts``."""
        if not prompts:
            return {}
        cfg = self.config
        scores, kls, lengths = [], [], []
        for start in range(0, len(prompts), cfg.batch_size):
            rollout = self.generate(prompts[start : start + cfg.batch_size], seed=seed + start)
            order = torch.arange(len(rollout.prompts), device=self.device)
            self.prepare(rollout, order=order)
            assert rollout.logprobs is not None and rollout.ref_logprobs is not None
            k1, _ = kl_penalties(rollout.logprobs, rollout.ref_logprobs)
            scores.append(rollout.raw_scores)
            kls.append((k1 * rollout.mask).sum(1).cpu())
            lengths.append(rollout.mask.sum(1).cpu())
        return {
            "score": float(torch.cat(scores).mean()),
            "kl": float(torch.cat(kls).mean()),
            "response_length": float(torch.cat(lengths).mean()),
        }

    # --- checkpoints ------------------------------------------------------------------------

    def save_checkpoint(self, folder: Path) -> Path:
        """Policy, critic, optimizer and counters in ``folder/step-N``, written under a
        temporary name and renamed, so a checkpoint that exists is whole."""
        final = folder / f"step-{self.step_index}"
        tmp = folder / f"step-{self.step_index}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        self.policy.save_pretrained(tmp / "policy")
        torch.save(self.critic.state_dict(), tmp / "critic.pt")  # its head may have a bias
        torch.save(
            {"optimizer": self.optimizer.state_dict(), "step": self.step_index,
             "kl_coef": self.kl.value, "bad_in_a_row": self.bad_in_a_row},
            tmp / "state.pt",
        )  # fmt: skip
        (tmp / "config.json").write_text(json.dumps(asdict(self.config)), encoding="utf-8")
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        for old in folder.glob("step-*"):
            if old != final and not old.name.endswith(".tmp"):
                shutil.rmtree(old, ignore_errors=True)
        return final

    def load_checkpoint(self, checkpoint: Path) -> None:
        from transformers import AutoModelForCausalLM

        if is_lora(self.policy):  # the checkpoint holds the adapter (save_pretrained's)
            self.policy.load_adapter(
                checkpoint / "policy", self.policy.active_adapter, is_trainable=True
            )
        else:
            policy = AutoModelForCausalLM.from_pretrained(checkpoint / "policy")
            self.policy.load_state_dict(policy.state_dict())
        critic = torch.load(checkpoint / "critic.pt", map_location=self.device, weights_only=True)
        self.critic.load_state_dict(critic)
        state = torch.load(checkpoint / "state.pt", map_location=self.device, weights_only=False)
        self.optimizer.load_state_dict(state["optimizer"])
        self.step_index = int(state["step"])
        self.kl.value = float(state["kl_coef"])
        self.bad_in_a_row = int(state["bad_in_a_row"])


def last_ppo_checkpoint(folder: Path) -> Path | None:
    if not folder.is_dir():
        return None
    found = [
        (int(path.name.removeprefix("step-")), path)
        for path in folder.glob("step-*")
        if path.name.removeprefix("step-").isdigit() and (path / "state.pt").is_file()
    ]
    return max(found)[1] if found else None
