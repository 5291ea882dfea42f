"""TRL 1.12's side of ``bench/ppo.py``; not a benchmark on its own.

``bench/ppo.py`` runs this file with the Python of ``bench/.venv-trl112``, a virtualenv that
holds TRL 1.12 (the last release with ``trl.experimental.ppo.PPOTrainer``) over this project's
other packages. It reads ``WORK/setup.json`` and writes ``WORK/trl-<mode>.json``:

- ``speed``: TRL's own ``train()`` for the same steps, batch, minibatches, epochs and response
  length; the time split is measured by wrapping TRL's generation, reward and forward
  functions (rollout forward passes count as scoring, the wrapped policy+value model's as
  the update).
- ``losses``: one frozen rollout (``WORK/rollout.pt``, made by our side) fed to TRL in place
  of its generation and reward model, two minibatches taken in row order, one epoch: TRL's
  policy and value losses (the mean of the two; the second comes after one AdamW step), and
  the order of its rows, which our side then follows.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any


def main() -> None:
    import torch
    import trl
    from datasets import Dataset
    from transformers import (
        AutoModelForCausalLM,
        AutoModelForSequenceClassification,
        AutoTokenizer,
        TrainerCallback,
    )
    from trl.experimental.ppo import PPOConfig, PPOTrainer
    from trl.experimental.ppo import ppo_trainer as module

    work, mode = Path(sys.argv[1]), sys.argv[2]
    setup = json.loads((work / "setup.json").read_text())
    torch.set_num_threads(setup["threads"])
    policy_dir, rm_dir = setup["policy"], setup["reward"]
    tokenizer = AutoTokenizer.from_pretrained(policy_dir, padding_side="left")
    policy = AutoModelForCausalLM.from_pretrained(policy_dir)
    reference = AutoModelForCausalLM.from_pretrained(policy_dir)
    reward = AutoModelForSequenceClassification.from_pretrained(rm_dir, num_labels=1)
    value = AutoModelForSequenceClassification.from_pretrained(rm_dir, num_labels=1)
    frozen = mode == "losses"
    batch = setup["batch"]
    args = PPOConfig(
        output_dir=str(work / "trl-out"), per_device_train_batch_size=batch,
        num_mini_batches=2 if frozen else batch // setup["mini"],
        num_ppo_epochs=1 if frozen else setup["epochs"], response_length=setup["tokens"],
        total_episodes=batch * (1 if frozen else setup["steps"]), learning_rate=setup["lr"],
        kl_coef=setup["kl_coef"], stop_token="eos", temperature=1.0, missing_eos_penalty=None,
        num_sample_generations=0, report_to=[], save_strategy="no", use_cpu=True,
        logging_steps=1, seed=0, disable_tqdm=True, local_rollout_forward_batch_size=batch,
    )  # fmt: skip
    queries = setup["frozen_queries"] if frozen else setup["queries"]
    dataset = Dataset.from_dict({"input_ids": queries})
    timings = {"generation": 0.0, "scoring": 0.0}
    logged: list[dict[str, Any]] = []

    class Keep(TrainerCallback):
        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
            logged.append(dict(logs or {}))

    trainer = PPOTrainer(
        args=args, processing_class=tokenizer, model=policy, ref_model=reference,
        reward_model=reward, train_dataset=dataset, value_model=value, callbacks=[Keep()],
    )  # fmt: skip
    wrapper = trainer.model
    real_generation, real_reward, real_forward = (
        module.batch_generation, module.get_reward, module.forward,
    )  # fmt: skip

    if frozen:
        rollout = torch.load(work / "rollout.pt")
        rows = {tuple(q): i for i, q in enumerate(queries)}

        def order_of(queries: torch.Tensor) -> list[int]:
            pad = tokenizer.pad_token_id
            return [rows[tuple(t for t in q.tolist() if t != pad)] for q in queries]

        order: list[int] = []
        module.np.random.permutation = lambda n: module.np.arange(n)  # minibatches in row order

        def generation(model: Any, queries: torch.Tensor, *a: Any, **k: Any) -> Any:
            index = order_of(queries)
            order.extend(index)
            responses = rollout["response"][index]
            return torch.cat([queries, responses], 1), rollout["logits"][index]

        def get_reward(model: Any, query_responses: torch.Tensor, pad: int, context: int) -> Any:
            if model is not reward:
                return real_reward(model, query_responses, pad, context)
            index = order_of(query_responses[:, :context])
            return None, rollout["scores"][index], None

    else:

        def generation(*a: Any, **k: Any) -> Any:
            start = time.perf_counter()
            out = real_generation(*a, **k)
            timings["generation"] += time.perf_counter() - start
            return out

        def get_reward(*a: Any, **k: Any) -> Any:
            start = time.perf_counter()
            out = real_reward(*a, **k)
            timings["scoring"] += time.perf_counter() - start
            return out

    def forward(model: Any, *a: Any, **k: Any) -> Any:
        if model is wrapper:  # the update's forward passes
            return real_forward(model, *a, **k)
        start = time.perf_counter()
        out = real_forward(model, *a, **k)
        timings["scoring"] += time.perf_counter() - start
        return out

    module.batch_generation, module.get_reward, module.forward = generation, get_reward, forward
    start = time.perf_counter()
    trainer.train()
    total = time.perf_counter() - start
    result = {
        "trl": trl.__version__, "seconds": total, "episodes": args.total_episodes,
        "generation": timings["generation"], "scoring": timings["scoring"],
        "update": total - timings["generation"] - timings["scoring"],
        "policy_loss": logged[0].get("loss/policy_avg"),
        "value_loss": logged[0].get("loss/value_avg"),
        "kl": logged[0].get("objective/kl"), "scores": logged[0].get("objective/scores"),
        "order": order if frozen else None,
    }  # fmt: skip
    (work / f"trl-{mode}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main()
