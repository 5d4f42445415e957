"""Model cards: a README.md in each saved `policy/` and `reward/` folder, so that a folder pushed to a model hub
explains itself: what it is, how it was trained (the run's key settings), its held-out figures, how to load it."""

from __future__ import annotations

from pathlib import Path

import minirl
from minirl.runs import write_atomic

ALGOS = {"pretrain": "next-token cross-entropy on a corpus (pretraining, M6)",
         "sft": "supervised fine-tuning on expert demonstrations: cross-entropy on the completion tokens (M6)",
         "airl": "adversarial inverse RL: PPO on a token-level reward that a discriminator learns from expert "
                 "demonstrations as training goes (M2-M4)",
         "outcome": "PPO on the outcome reward: 1 at the last token when the final answer is right (M6)"}
SETTINGS = {"*": ("algo", "preset", "init", "data", "size", "seed", "steps", "prompts_per_iter", "lr",
                  "max_new_tokens", "temperature", "top_p"),
            "rl": ("samples_per_prompt", "minibatch_size", "ppo_epochs", "clip", "target_kl", "advantage", "gamma",
                   "lam", "kl_beta"),
            "airl": ("head", "form", "disc_lr", "disc_warmup", "disc_batch", "perturbed_per_expert",
                     "perturbed_labels", "change_share", "label_smoothing", "expert_nll", "reward_clip"),
            "reward": ("head", "form", "disc_lr", "disc_batch", "train_layers", "perturbed_per_expert",
                       "perturbed_labels", "change_share", "label_smoothing", "n_demos", "warmup_pool")}


def write_model_card(folder: str | Path, kind: str, cfg_dict: dict, figures: dict | None = None) -> Path:
    """A model card, `folder`/README.md, for a saved `policy` or `reward` model: what it is, how it was trained
    (the algorithm and the key settings of `cfg_dict`), its held-out `figures` when known, and how to load it."""
    folder, algo = Path(folder), cfg_dict.get("algo", "")
    keys = SETTINGS["*"] + (SETTINGS["rl"] if algo in ("airl", "outcome") else ()) + SETTINGS.get(algo, ())
    if kind == "policy":
        what = (f"The policy of the minirl run `{folder.parent}`: a causal language model trained by "
                f"{ALGOS.get(algo, algo)}. It is the checkpoint with the best sampled accuracy on validation problems"
                + (f" (step {figures['best_step']})." if (figures or {}).get("best_step") is not None else "."))
    else:
        what = (f"The reward model learned by AIRL in the minirl run `{folder.parent}`: a causal LM backbone "
                f"(`backbone/`) with a `{cfg_dict.get('head')}` head that gives every response token a reward f_t "
                "(token head: f_t = log pi_phi(y_t | x, y_<t); scalar head: `head.safetensors`, Linear(hidden, 1) "
                "on the last hidden state; hybrid head: the token head's f_t plus `head.safetensors` applied to the "
                "last hidden state before y_t). It is the discriminator at the end of training (M2).")
    lines = ["---", "library_name: transformers", f"tags: [minirl, {algo or 'unknown'}, "
             f"{'reward-model' if kind == 'reward' else 'text-generation'}]", "---", "",
             f"# {folder.parent.name}/{folder.name}", "", what, "", "## How it was trained", "",
             "| setting | value |", "|---|---|"]
    lines += [f"| {key} | `{cfg_dict[key]}` |" for key in keys if key in cfg_dict]
    lines += ["", f"minirl {cfg_dict.get('minirl_version', minirl.__version__)}, config hash "
              f"`{cfg_dict.get('config_hash', '?')}`; every setting is in the run's config.json.", "",
              "## Held-out figures", ""]
    numbers = {k: v for k, v in (figures or {}).items()  # figures, not timings (s_*_per_iter, wall_s) or tables
               if (isinstance(v, (int, float)) or v is None) and not k.startswith(("s_", "wall_"))}
    if numbers:
        lines += ["| figure | value |", "|---|---|"]
        lines += [f"| {k} | {'n/a' if v is None else f'{v:.3f}' if isinstance(v, float) else v} |"
                  for k, v in numbers.items()]
        lines += ["", "The final evaluation of the policy on held-out questions, several samples each (M5, M7)."]
    else:
        lines.append("Not evaluated.")
    write_atomic(folder / "README.md", "\n".join([*lines, "", *loading_lines(folder, kind, cfg_dict)]) + "\n")
    return folder / "README.md"


def loading_lines(folder: Path, kind: str, cfg_dict: dict) -> list[str]:
    """The card's "How to load it": plain transformers, and minirl."""
    lm = folder if kind == "policy" else folder / "backbone"
    lines = ["## How to load it", "", "With transformers:", "", "```python",
             "from transformers import AutoModelForCausalLM, AutoTokenizer", "",
             f'model = AutoModelForCausalLM.from_pretrained("{lm}")',
             f'tokenizer = AutoTokenizer.from_pretrained("{lm}")', "```", ""]
    if kind == "reward":
        lines += ["With the token head the reward of token y_t is its log-prob under this model; with the scalar "
                  "head it is `head.safetensors` (weight, bias) applied to the last hidden state; the hybrid head "
                  "adds the two (the head read at the state before y_t).", ""]
    lines += ["With minirl:", "", "```python"]
    lines += (["from minirl.models import load_lm", "", f'policy, tokenizer = load_lm("{folder}")'] if kind == "policy"
              else ["from minirl.models import RewardModel", "",
                    f'reward_model = RewardModel.load("{folder}")  # reward_model(input_ids, attention_mask): [B, T]'])
    return [*lines, "```", "", f"or the whole run: `minirl inspect --run {folder.parent}`, "
            f"`minirl rerank --run {folder.parent}`."]
