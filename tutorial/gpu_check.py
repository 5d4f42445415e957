"""Device check: minirl's one-GPU path, timed, in one run of under 10 minutes. Prints ONE JSON line (docs/gpu.md).

    PYTHONPATH=. python tutorial/gpu_check.py                 # on a CUDA machine; downloads nothing
    PYTHONPATH=. python tutorial/gpu_check.py --device cpu    # every part at toy sizes on the CPU (the tests run it)

Parts, each a key of the JSON line:
  tiny         the tiny preset on the synthetic world: the base policy (pretrain), the reward model alone (AIRL with
               --steps 0: the discriminator warm-up only), and a short AIRL run; held-out figures and timings.
  preset       the gsm8k-qwen0.5b preset's AIRL loop, at its batch sizes, lengths and micro-batches, for a few
               iterations on models of Qwen2.5-0.5B-Instruct's exact shape (494,032,768 parameters) with random
               weights, policy and reward model alike, and a tokenizer fitted here: peak GPU memory, seconds per
               iteration (sample / score, the discriminator step included / update) and the sampler's tokens per
               second. Random weights never sample EOS, so every response runs to max_new_tokens: the worst case.
  preset_fp32  the same with --precision fp32, when the time left allows it.
Training output goes to stderr; run folders to a temporary directory (or --out).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
import transformers
from transformers import Qwen2Config, Qwen2ForCausalLM

from minirl.config import from_preset
from minirl.data import synthetic_tasks
from minirl.models import build_tokenizer, save_lm
from minirl.train import train

QWEN_TEMPLATE = (  # the shape of Qwen2.5's chat template, without its tool-calling branches
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
QWEN_05B = dict(vocab_size=151936, hidden_size=896, num_hidden_layers=24, num_attention_heads=14,
                num_key_value_heads=2, intermediate_size=4864, tie_word_embeddings=True, rope_theta=1e6,
                max_position_embeddings=32768)  # Qwen2.5-0.5B-Instruct's config.json
QWEN_TOY = dict(QWEN_05B, vocab_size=1024, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                intermediate_size=64)
WORLD = dict(n_demos=200, n_corpus=2000)  # the synthetic world the preset part draws its problems from

# Overrides of each run at full size (GPU) and at toy size (--device cpu). Full-size `preset` keeps the preset's
# batch sizes and lengths and cuts only what is not the loop: evaluation, warm-up and the world's size.
TINY = {"full": dict(pretrain=dict(steps=300, final_questions=200), reward=dict(steps=0, final_questions=200),
                     airl=dict(steps=20, eval_every=10, final_questions=200)),
        "toy": dict(pretrain=dict(steps=20, prompts_per_iter=8), reward=dict(steps=0, disc_warmup=3),
                    airl=dict(steps=2, eval_every=2, disc_warmup=2))}
TOY_WORLD = dict(size="micro", n_corpus=300, n_demos=40, warmup_pool=8, eval_questions=4, final_questions=8,
                 eval_samples=2, max_new_tokens=32)
PRESET = {"full": dict(steps=3, eval_every=3, disc_warmup=2, warmup_pool=4, eval_questions=4, final_questions=4,
                       eval_samples=2, **WORLD),
          "toy": dict(steps=2, eval_every=2, disc_warmup=1, warmup_pool=2, eval_questions=2, final_questions=2,
                      eval_samples=2, prompts_per_iter=2, samples_per_prompt=2, minibatch_size=2, micro_batch_size=1,
                      disc_batch=2, max_new_tokens=16, eval_batch=4, **WORLD)}


def gib(n_bytes: int) -> float:
    return round(n_bytes / 2**30, 2)


def peak_memory() -> dict:
    if not torch.cuda.is_available():
        return {}
    return {"peak_gib": gib(torch.cuda.max_memory_allocated()),
            "peak_reserved_gib": gib(torch.cuda.max_memory_reserved())}


def strict(value):
    """JSON has no NaN: a non-finite float (an undefined AUROC) becomes null, at any depth."""
    if isinstance(value, dict):
        return {k: strict(v) for k, v in value.items()}
    if isinstance(value, list):
        return [strict(v) for v in value]
    return None if isinstance(value, float) and not math.isfinite(value) else value


@contextlib.contextmanager
def stdout_to_stderr():
    """Whatever is written to stdout meanwhile, by Python (training's tables) or by native code (the tokenizers
    trainer), goes to stderr: stdout carries the one JSON line."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def timed_train(cfg) -> tuple[dict, float]:
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    summary = train(cfg)
    return summary, round(time.perf_counter() - started, 1)


def tiny_part(out: Path, mode: str) -> dict:
    """Base policy, reward model alone, short AIRL run: the tiny preset's pipeline on this device."""
    world = TOY_WORLD if mode == "toy" else {}
    runs = TINY[mode]
    base, base_s = timed_train(from_preset("tiny", "pretrain", out=str(out / "base"), **world, **runs["pretrain"]))
    reward, reward_s = timed_train(from_preset("tiny", "airl", init=str(out / "base"), out=str(out / "reward"),
                                               **world, **runs["reward"]))
    airl, airl_s = timed_train(from_preset("tiny", "airl", init=str(out / "base"), out=str(out / "airl"),
                                           **world, **runs["airl"]))
    k = world.get("eval_samples", 8)  # best-of-k
    return {"base": {"sampled_acc": base["sampled_acc"], "greedy_acc": base["greedy_acc"], "wall_s": base_s},
            "reward_alone": {"reward_auroc": reward["reward_auroc"], f"bo{k}_reward": reward[f"bo{k}_reward"],
                             f"bo{k}_random": reward[f"bo{k}_random"], "wall_s": reward_s},
            "airl": {"sampled_acc": airl["sampled_acc"], "greedy_acc": airl["greedy_acc"],
                     "reward_auroc": airl["reward_auroc"], "best_step": airl["best_step"], "wall_s": airl_s,
                     "s_per_iter": {key: round(airl[f"s_{key}_per_iter"], 3) for key in ("sample", "score", "update")},
                     **peak_memory()}}


def save_qwen_shaped(folder: Path, mode: str) -> int:
    """A random Qwen2 of Qwen2.5-0.5B-Instruct's shape (toy: two small layers) with a chat template and a
    tokenizer fitted on the synthetic world: ~400 real tokens, the embedding padded to 151,936 rows (Qwen2.5's
    are padded too). Built on the GPU when there is one (seconds instead of a minute). Returns its parameters."""
    tasks = synthetic_tasks(0, **WORLD)
    tokenizer = build_tokenizer([t["question"] + "\n" + t["answer"] for t in tasks["corpus"] + tasks["demos"]])
    tokenizer.chat_template = QWEN_TEMPLATE
    config = Qwen2Config(**(QWEN_05B if mode == "full" else QWEN_TOY), pad_token_id=tokenizer.pad_token_id,
                         eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id)
    torch.manual_seed(0)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = Qwen2ForCausalLM(config)
    save_lm(model, tokenizer, folder)
    return sum(p.numel() for p in model.parameters())


def preset_part(out: Path, model: Path, mode: str, precision: str) -> dict:
    """The gsm8k-qwen0.5b preset's AIRL loop on the Qwen-shaped model: memory and time per iteration."""
    cfg = from_preset("gsm8k-qwen0.5b", "airl", data="synthetic", init=str(model), reward_init=str(model),
                      out=str(out / f"preset-{precision}"), precision=precision, **PRESET[mode])
    summary, wall_s = timed_train(cfg)
    iters = [m for m in map(json.loads, (out / f"preset-{precision}/metrics.jsonl").read_text().splitlines())
             if "iter" in m]
    sampled = [cfg.prompts_per_iter * cfg.samples_per_prompt * m["response_len"] for m in iters]  # tokens
    return {"precision": precision, "wall_s": wall_s, **peak_memory(),
            "rollout": f"{cfg.prompts_per_iter}x{cfg.samples_per_prompt}, minibatch {cfg.minibatch_size} in "
                       f"micro-batches of {cfg.micro_batch_size}, max_new_tokens {cfg.max_new_tokens}",
            "s_sample": [round(m["s_sample"], 2) for m in iters], "s_score": [round(m["s_score"], 2) for m in iters],
            "s_update": [round(m["s_update"], 2) for m in iters],
            "sampler_tokens_per_s": [round(n / m["s_sample"]) for n, m in zip(sampled, iters)],
            "response_len": [m["response_len"] for m in iters],
            "ratio_first": [round(m["ratio_first"], 5) for m in iters],  # 1 up to rounding (M4)
            "approx_kl": [m["approx_kl"] for m in iters], "disc_loss": [m["disc_loss"] for m in iters],
            "finite": all(math.isfinite(v) for m in iters for v in m.values() if isinstance(v, float)),
            "reward_auroc": summary.get("reward_auroc")}


def check(out: Path, mode: str, budget_s: float) -> dict:
    started = time.perf_counter()
    result = {"device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu", "mode": mode,
              "torch": torch.__version__, "transformers": transformers.__version__}
    result["tiny"] = tiny_part(out / "tiny", mode)
    result["qwen_shaped_parameters"] = save_qwen_shaped(out / "qwen-shaped", mode)
    if torch.cuda.is_available():
        torch.cuda.empty_cache()  # the model built on the GPU is saved and gone: the runs load their own
    preset_started = time.perf_counter()
    result["preset"] = preset_part(out, out / "qwen-shaped", mode, "auto" if mode == "full" else "bf16-mixed")
    elapsed, preset_s = time.perf_counter() - started, time.perf_counter() - preset_started
    if elapsed + 1.3 * preset_s < budget_s:  # fp32 is slower than bf16-mixed: ask for some margin
        result["preset_fp32"] = preset_part(out, out / "qwen-shaped", mode, "fp32")
    else:
        result["preset_fp32"] = f"skipped: {elapsed:.0f} s gone of the {budget_s:.0f} s budget"
    result["wall_s"] = round(time.perf_counter() - started, 1)
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                        help="cuda: the full check; cpu: every part at toy sizes (needs no GPU)")
    parser.add_argument("--out", default="", help="folder for the run folders (default: a temporary one)")
    parser.add_argument("--budget-s", type=float, default=540, help="skip preset_fp32 unless it fits in this")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        result = {"device": "cpu", "error": "no CUDA device here: nothing to check (--device cpu runs the toy sizes)"}
    elif args.device == "cpu" and torch.cuda.is_available():  # minirl.models.pick_device would take the GPU
        result = {"device": "cuda", "error": "--device cpu with CUDA visible: run it with CUDA_VISIBLE_DEVICES="}
    else:
        out = Path(args.out or tempfile.mkdtemp(prefix="minirl-gpu-check-"))
        with stdout_to_stderr():
            result = check(out, "full" if args.device == "cuda" else "toy", args.budget_s)
    print(json.dumps(strict(result)))
    return result


if __name__ == "__main__":
    main()
