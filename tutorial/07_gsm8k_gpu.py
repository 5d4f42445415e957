"""Step 07 - the same pipeline on GSM8K with a real chat model on one GPU (method.md M1, M4, M8).

Run:  python tutorial/07_gsm8k_gpu.py      (seconds; it trains nothing and downloads nothing)

Nothing in steps 02-06 is specific to the miniature world: the data are `{"question", "answer"}` dicts in
GSM8K's format (step 01), the models are ordinary transformers causal LMs. Here the policy and the reward model
are both Qwen2.5-0.5B-Instruct (the paper uses a smaller reward model than the policy: 0.5B/1.5B for 3B/7B).

It prints: the exact commands to run on a GPU machine, the `gsm8k-qwen0.5b` preset's settings, and a GPU memory
estimate computed from the parameter count, with its arithmetic. Without CUDA it says so and stops there.
"""

from __future__ import annotations

import torch
from _common import GSM8K_DIR

from minirl.config import PRESETS, from_preset

PRESET = "gsm8k-qwen0.5b"
GB = 1e9

# ---------------------------------------------------------------- 1. the commands
# SFT is the baseline (M6); AIRL learns the reward from the same demonstrations (M2) and trains the policy on it
# (M4); rerank and inspect then use the AIRL run's reward model (steps 05, 06). The preset reads GSM8K's splits
# and the model from the Hugging Face hub; with an offline copy of GSM8K (MINIRL_GSM8K_DIR) the data need no
# download, and rerank uses the run's own held-out set unless given --data.
local = GSM8K_DIR is not None and (GSM8K_DIR / "test.jsonl").is_file()
data = f" --data {GSM8K_DIR / 'train.jsonl'} --test-data {GSM8K_DIR / 'test.jsonl'}" if local else ""
print("== on a machine with one CUDA GPU:")
print(f"minirl train --preset {PRESET} --algo sft --out runs/gsm8k-sft{data}")
print(f"minirl train --preset {PRESET} --algo airl --out runs/gsm8k-airl{data}")
print("minirl rerank --run runs/gsm8k-airl --n 16 --questions 200")
print("minirl inspect --run runs/gsm8k-airl --perturb operator      # one trace coloured by its token rewards")
print("minirl inspect --run runs/gsm8k-airl --localisation 100      # Hit@1 on perturbed traces (M7)")

# ---------------------------------------------------------------- 2. the preset
# A preset is a named set of overrides on TrainConfig's defaults ("*" for every algo); the command line wins.
cfg = from_preset(PRESET, "airl")
print(f"\n== preset {PRESET!r} (minirl.config.PRESETS), as the airl run sees it:")
for key, value in PRESETS[PRESET]["*"].items():
    print(f"  {key:<18} {value}")
print(f"  {'(defaults kept)':<18} clip {cfg.clip}, ppo_epochs {cfg.ppo_epochs}, advantage {cfg.advantage!r}, "
      f"head {cfg.head!r}, form {cfg.form!r}, label_smoothing {cfg.label_smoothing}, precision {cfg.precision!r} "
      f"(bf16-mixed on CUDA)")

# ---------------------------------------------------------------- 3. memory, from the parameter count
# Qwen2.5-0.5B's config: hidden 896, 24 layers, 14 query heads and 2 key/value heads of 64, MLP 4864, vocabulary
# 151,936, input and output embeddings tied.
h, layers, kv, mlp, vocab = 896, 24, 2 * 64, 4864, 151_936
per_layer = (h * h + h) + 2 * (h * kv + kv) + h * h + 3 * h * mlp + 2 * h  # q (bias), k, v (bias), o, MLP, 2 norms
params = layers * per_layer + vocab * h + h  # + embedding (tied with the LM head) + final norm
print("\n== GPU memory estimate (precision bf16-mixed on CUDA: minirl.models.autocast)")
print(f"parameters: {layers} layers x {per_layer:,} + embedding {vocab:,} x {h} + norm {h} = {params:,} (0.49B)")

# Trained models (policy, reward model), fully fine-tuned in mixed precision: fp32 weights 4 bytes + fp32 grads 4
# bytes + AdamW's two fp32 moments 8 bytes = 16 bytes per parameter (bf16 weights would need 8, but lose most
# updates at lr 1e-6 to rounding: docs/gpu.md). The forward pass adds bf16 copies of the weights in use (2 bytes,
# one model at a time). With LoRA (lora_rank > 0) only the small adapters get grads and moments: ~4 bytes per
# parameter. A frozen fp32 reference copy of the policy (4 bytes) exists only when kl_beta > 0 (M4).
per_param = 4 if cfg.lora_rank > 0 else 4 + 4 + 2 * 4
trained = 2 * params * per_param
copies = params * 2
reference = params * 4 if cfg.kl_beta > 0 else 0
print(f"lora_rank {cfg.lora_rank} ({'LoRA' if cfg.lora_rank else 'full fine-tuning'}), grad_checkpointing "
      f"{cfg.grad_checkpointing}, micro_batch_size {cfg.micro_batch_size}")
print(f"policy + reward model: 2 x {params:,} x {per_param} bytes "
      f"({'weights; adapters not counted' if cfg.lora_rank else '4 weights + 4 grads + 8 AdamW'}) = "
      f"{trained / GB:.2f} GB")
print(f"bf16 copies of the weights for the forward pass: {params:,} x 2 bytes = {copies / GB:.2f} GB")
print(f"frozen reference (kl_beta {cfg.kl_beta}): {params:,} x 4 bytes = {reference / GB:.2f} GB")

# The LM head's output dominates activations: every position gets 151,936 logits, cast to fp32 (4 bytes) and
# kept in ~3 copies (bf16 logits -> fp32 -> / temperature -> log-softmax, some saved for backward). A PPO
# minibatch goes through the model `micro_batch_size` rows at a time (its gradients accumulated), so the rows
# held at once are those of one micro-batch.
prompt = 200  # GSM8K question + chat template + system line, padded to the longest prompt of the batch (estimate)
length = prompt + cfg.max_new_tokens
rows = cfg.micro_batch_size or cfg.minibatch_size


def logits_bytes(sequences: int) -> int:
    return sequences * length * vocab * 4 * 3


minibatch = logits_bytes(rows)
print(f"logits of one micro-batch: {rows} x ({prompt} + {cfg.max_new_tokens}) x {vocab:,} x 4 bytes "
      f"x 3 = {minibatch / GB:.2f} GB")
# Activations saved for the backward pass besides the logits: ~34 bytes per token per hidden unit per layer in
# 16-bit (Korthikanti et al. 2022, attention without the s^2 term as with SDPA): a rough figure. With gradient
# checkpointing only each layer's 2-byte input is kept (and one layer's activations are recomputed at a time).
saved = 2 if cfg.grad_checkpointing else 34
acts = rows * length * h * saved * layers
print(f"other saved activations: {rows} x {length} x {h} x {saved} bytes x {layers} = {acts / GB:.2f} GB")
total = trained + copies + reference + minibatch + acts
print(f"estimated peak during a PPO update: {total / GB:.1f} GB")

# Scoring without gradients (the rollout before the update, and evaluation) runs through the LM head in chunks:
# `minirl.rollout.in_chunks` scores a rollout one micro-batch at a time and evaluation 8 rows at a time, so those
# forwards hold no more logits than one micro-batch; without the chunks a whole rollout would need:
rollout = cfg.prompts_per_iter * cfg.samples_per_prompt
print(f"logits of one scoring chunk ({rows} rows): {logits_bytes(rows) / GB:.2f} GB; "
      f"unchunked, a rollout of {rollout} would need {logits_bytes(rollout) / GB:.1f} GB")
print(f"-> the PPO update sets the peak: about {total / GB:.0f} GB, within a 24 GB card "
      f"(measure it: tutorial/gpu_check.py)")

# ---------------------------------------------------------------- 4. this machine
if not torch.cuda.is_available():
    print("\nCUDA is not available here: run the commands above on a GPU machine (nothing was downloaded).")
    raise SystemExit(0)
free, capacity = torch.cuda.mem_get_info()
print(f"\nCUDA device: {torch.cuda.get_device_name()}, {capacity / GB:.1f} GB ({free / GB:.1f} GB free); "
      f"the PPO-update estimate {'fits' if total < free else 'does not fit'}.")
