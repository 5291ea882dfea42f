"""PPO: our step against TRL 1.12's ``trl.experimental.ppo.PPOTrainer`` on the same tiny GPT-2.

TRL removed its PPOTrainer in 1.13, so TRL 1.12 runs in its own virtualenv,
``bench/.venv-trl112`` (made on first use from the local package index: TRL 1.12 over this
project's other packages), through ``bench/ppo_trl112.py``. Both sides get the same policy,
reference, reward model and value model (a copy of the RM), the same prompts, batch,
minibatches, PPO epochs and response length, on the same number of CPU threads.

1. **Speed**: ``--steps`` PPO steps each; episodes (rollouts) per second and the time split:
   generation, scoring (reward model, reference and old log-probs, values) and update.
2. **Same losses**: one frozen rollout (sampled by our policy, then made full length with no
   EOS or PAD inside, so that both libraries' conventions for where a response ends agree) is
   fed to both, two minibatches in the same order, one epoch: the policy and value losses
   (the mean over both minibatches; the second comes after one AdamW step, so it checks the
   gradients and the optimizer too) must agree to 1e-5.

Usage: python -m bench.ppo [--steps 4] [--batch 16] [--mini 4] [--epochs 4] [--tokens 32]
       [--layers 2] [--embd 128]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
VENV = HERE / ".venv-trl112"
TRL = "trl==1.12.0"


def trl_python() -> Path:
    """The virtualenv's Python, made on first use: TRL 1.12 in its own site-packages, in front
    of this project's (added by a .pth file), so nothing of ours is replaced."""
    python = VENV / "bin" / "python"
    if (VENV / ".ready").is_file():
        return python
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", "--clear", str(VENV)], check=True
    )
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    ours = sysconfig.get_paths()["purelib"]
    Path(site, "rlhf-studio.pth").write_text(f"import site; site.addsitedir({ours!r})\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         "--no-deps", "--target", site, TRL],
        check=True,
    )  # fmt: skip
    (VENV / ".ready").touch()
    return python


def build(work: Path, args: argparse.Namespace) -> tuple[Path, Path]:
    """A tiny GPT-2 policy and a reward model on the same base (a random, seeded score head)."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from workers.ml.synthetic import corpus
    from workers.ml.tiny import build_tiny_causal_lm
    from workers.ml.training import save_model

    policy = build_tiny_causal_lm(
        work / "policy", texts=corpus(), n_layer=args.layers, n_embd=args.embd, n_head=4,
        n_positions=512,
    )  # fmt: skip
    tokenizer = AutoTokenizer.from_pretrained(policy)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        reward = AutoModelForSequenceClassification.from_pretrained(policy, num_labels=1)
    reward.config.pad_token_id = tokenizer.pad_token_id
    extra = {"reward_mean": 0.0, "reward_std": 1.0}
    return policy, save_model(reward, tokenizer, work / "rm", kind="rm", parent=None, extra=extra)


def ours(
    policy: Path, reward: Path, prompts: list[str], args: argparse.Namespace, **over: Any
) -> Any:
    from workers.ml.loading import load_causal_lm
    from workers.ml.ppo import PPOConfig, PPOTrainer, RewardModelScorer, build_critic

    config = PPOConfig(
        steps=args.steps, batch_size=args.batch, mini_batch_size=args.mini,
        ppo_epochs=args.epochs, max_new_tokens=args.tokens, learning_rate=1e-5, kl_coef=0.05,
        missing_eos_penalty=0.0, max_grad_norm=None, sample_every=0, eval_every=0,
    )  # fmt: skip
    for key, value in over.items():
        setattr(config, key, value)
    model, tokenizer = load_causal_lm(policy, padding_side="left")
    reference, _ = load_causal_lm(policy)
    critic, source = build_critic(policy, tokenizer, reward)
    assert source == "reward model"
    return PPOTrainer(
        model, reference, critic, tokenizer, RewardModelScorer(reward), config, prompts=prompts
    )


def frozen_rollout(trainer: Any, work: Path) -> Any:
    """Sample a batch, make every response full length with no EOS/PAD inside, and save what
    TRL needs (responses, the generation logits, the scores)."""
    import torch

    from workers.ml.ppo import forward_logits
    from workers.ml.sampling import encode_prompt

    rollout = trainer.generate(trainer.batch_prompts(0), seed=1)
    response = rollout.response
    width = trainer.config.max_new_tokens
    filler = trainer.tokenizer.convert_tokens_to_ids("the")
    if response.shape[1] < width:
        extra = torch.full((len(response), width - response.shape[1]), filler)
        response = torch.cat([response, extra], 1)
    special = (response == trainer.pad_id) | torch.isin(response, torch.tensor(trainer.eos_ids))
    response = response.masked_fill(special, filler)
    rollout.response, rollout.mask = response, torch.ones(response.shape)
    rollout.eos = torch.zeros(len(response), dtype=torch.bool)
    rollout.responses = trainer.tokenizer.batch_decode(response, skip_special_tokens=True)
    rollout.raw_scores = trainer.scorer(rollout.prompts, rollout.responses)
    rollout.scores = trainer.normalise(rollout.raw_scores)
    with torch.no_grad():
        p = rollout.query.shape[1]
        logits = forward_logits(trainer.policy, rollout.input_ids, rollout.attention_mask)
        logits = logits[:, p - 1 : -1] / (1.0 + 1e-7)  # TRL samples at temperature + 1e-7
    torch.save(
        {"response": response, "logits": logits, "scores": rollout.scores}, work / "rollout.pt"
    )
    setup = json.loads((work / "setup.json").read_text())
    setup["frozen_queries"] = [
        encode_prompt(trainer.tokenizer, p)[-trainer.config.max_prompt_length :]
        for p in rollout.prompts
    ]
    (work / "setup.json").write_text(json.dumps(setup))
    return rollout


def run_trl(python: Path, work: Path, mode: str) -> dict[str, Any]:
    done = subprocess.run([str(python), "-m", "bench.ppo_trl112", str(work), mode],
                          cwd=HERE.parent, capture_output=True, text=True, check=False)  # fmt: skip
    if done.returncode:
        sys.exit(f"TRL 1.12 ({mode}) failed:\n{done.stderr[-4000:]}")
    result: dict[str, Any] = json.loads((work / f"trl-{mode}.json").read_text())
    return result


def main() -> None:
    import torch

    from workers.ml.sampling import encode_prompt
    from workers.ml.synthetic import prompts as make_prompts

    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--mini", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--embd", type=int, default=128)
    args, _unknown = parser.parse_known_args()
    python = trl_python()
    threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        policy, reward = build(work, args)
        prompts = make_prompts(args.steps * args.batch, seed=3)
        trainer = ours(policy, reward, prompts, args)
        setup = {
            "policy": str(policy), "reward": str(reward), "threads": threads,
            "queries": [encode_prompt(trainer.tokenizer, p)[-trainer.config.max_prompt_length :]
                        for p in prompts],
            "batch": args.batch, "mini": args.mini, "epochs": args.epochs, "steps": args.steps,
            "tokens": args.tokens, "lr": 1e-5, "kl_coef": 0.05,
        }  # fmt: skip
        (work / "setup.json").write_text(json.dumps(setup))

        lengths = []
        for _ in range(args.steps):
            lengths.append(trainer.step().values["response_length"])
        mine = dict(trainer.timings)
        mine_total = sum(mine.values())
        theirs = run_trl(python, work, "speed")
        episodes = args.steps * args.batch
        print(
            f"PPO, tiny GPT-2 {args.layers} layers x {args.embd}, {args.steps} steps of "
            f"{args.batch} rollouts, minibatches of {args.mini}, {args.epochs} PPO epochs, up to "
            f"{args.tokens} new tokens, CPU ({threads} threads); TRL {theirs['trl']}\n"
            f"  ours      {episodes / mine_total:7.2f} episodes/s ({mine_total:6.1f} s: generation "
            f"{mine['generation']:.1f}, scoring {mine['scoring']:.1f}, update {mine['update']:.1f}); "
            f"mean answer {sum(lengths) / len(lengths):.1f} tokens\n"
            f"  TRL 1.12  {episodes / theirs['seconds']:7.2f} episodes/s ({theirs['seconds']:6.1f} s: "
            f"generation {theirs['generation']:.1f}, scoring {theirs['scoring']:.1f}, update "
            f"{theirs['update']:.1f})\n"
            f"  speed ratio (ours / TRL) {theirs['seconds'] / mine_total:.2f}"
        )

        half = args.batch // 2
        frozen = ours(policy, reward, prompts, args, mini_batch_size=half, ppo_epochs=1)
        rollout = frozen_rollout(frozen, work)
        trl_losses = run_trl(python, work, "losses")
        frozen.prepare(rollout, order=torch.tensor(trl_losses["order"]))  # TRL's minibatches
        mine_losses = frozen.update(rollout, seed=0)
        print(f"  one frozen rollout, 2 minibatches of {half} (the second after one AdamW step):")
        for name in ("policy_loss", "value_loss"):
            diff = abs(mine_losses[name] - trl_losses[name])
            print(
                f"    {name:11s} ours {mine_losses[name]: .8f}  TRL "
                f"{trl_losses[name]: .8f}  |diff| {diff:.1e} ({'ok' if diff < 1e-5 else 'DIFFERENT'})"
            )


if __name__ == "__main__":
    main()
