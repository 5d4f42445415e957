"""Models: the tiny tokenizer and LM, loading real models, and the reward model (M2).

- `build_tokenizer` fits a byte-level BPE with every digit its own token (a few hundred
  tokens, ~150 per synthetic problem) and wraps it as a transformers fast tokenizer.
- `build_tiny_lm` makes a small Llama from a named size; `load_lm` loads a hub id, a local
  folder or a GGUF file; both return ordinary transformers causal LMs.
- `RewardModel` is a causal LM backbone with one of two heads (M2):
  `scalar`: Linear(hidden, 1) -> one logit z_t per position (the paper's);
  `token`:  the backbone keeps its LM head and f_t = log softmax(logits)[y_t] (ours, M9);
  `hybrid`: the token head's f_t plus a Linear(hidden, 1) read at the state before y_t (M2).
- log pi itself is computed in `minirl.logprobs` (`token_logprobs`, `lm_forward`), one place for all.
- `autocast` is the precision every forward pass runs in: weights, gradients and AdamW's moments
  stay fp32; under `bf16-mixed` the matmuls run in bf16 (docs/gpu.md).

Batches everywhere use one layout: prompts left-padded, responses right-padded,
`input_ids` [B, T]; per-token arrays are aligned with the token they score (column 0 = 0).
"""

from __future__ import annotations

import copy
import json
import os
import struct
from pathlib import Path

import torch
import transformers
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
from transformers.utils import logging as hf_logging

from minirl.config import TrainConfig, UserError
from minirl.logprobs import lm_forward, position_ids, token_logprobs

TINY_SIZES = {  # name: (hidden, layers, heads, mlp)
    "tiny": (128, 3, 4, 384),
    "small": (256, 4, 8, 768),  # 3.6M: a larger reward backbone (--reward-size; M9 trial 4: no better)
    "micro": (64, 2, 2, 128),  # for tests
}
hf_logging.disable_progress_bar()  # one progress bar per model load is noise here
SPECIALS = {"pad_token": "<pad>", "eos_token": "<eos>", "bos_token": "<bos>"}


# the `cache=` keyword of forward() and its output's `.cache` (older versions fail at the first sampled token)
if tuple(int(x) for x in transformers.__version__.split(".")[:2]) < (5, 24):
    raise ImportError(f"minirl needs transformers>=5.24 (found {transformers.__version__}): "
                      "pip install -U 'transformers>=5.24,<6'")


class ModelError(UserError):
    """A model that cannot be found or loaded: the CLI prints it as one line."""


def pick_device() -> tuple[torch.device, torch.dtype]:
    """CUDA where available, else the CPU; and the dtype weights are loaded in: fp32 on both, because bf16
    weights lose most small updates to rounding (at lr 1e-6 one AdamW step moves a weight of size 0.02 by
    about 1e-6, far below bf16's spacing of 1.2e-4 there). bf16 speed comes from `autocast` instead."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu"), torch.float32


def autocast(precision: str, device: torch.device | str) -> torch.autocast:
    """The context a forward pass runs in. `bf16-mixed` (what `auto` means on CUDA): matmuls in bf16 on bf16
    copies of the fp32 weights, softmax-like ops in fp32, the backward in the dtypes the forward chose, and the
    optimiser stepping the fp32 weights. `fp32` (what `auto` means on a CPU): a no-op.
    Wrap forward passes only, never an optimiser step: autocast keeps its bf16 copy of each weight until the
    outermost context exits, so a step inside one would leave later forwards on the old weights."""
    device_type = torch.device(device).type
    mixed = precision == "bf16-mixed" or (precision == "auto" and device_type == "cuda")
    return torch.autocast(device_type, dtype=torch.bfloat16, enabled=mixed)


# ---------------------------------------------------------------- tokenizer and tiny LM

def build_tokenizer(texts: list[str], vocab_size: int = 400) -> PreTrainedTokenizerFast:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIALS.values()),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIALS)


def build_tiny_lm(tokenizer: PreTrainedTokenizerFast, size: str = "tiny", seed: int = 0) -> LlamaForCausalLM:
    if size not in TINY_SIZES:
        raise ModelError(f"unknown tiny size {size!r}; choose from {', '.join(TINY_SIZES)}")
    hidden, layers, heads, mlp = TINY_SIZES[size]
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=layers,
                         num_attention_heads=heads, num_key_value_heads=heads, intermediate_size=mlp,
                         max_position_embeddings=512, tie_word_embeddings=True,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                         bos_token_id=tokenizer.bos_token_id)
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


def is_missing(name: str) -> bool:
    """A model named as a local path (a bare name, ./x, /x, a .gguf file) that does not exist; `org/name` that is
    no local path may still be a hub id."""
    return not Path(name).exists() and ("/" not in name or name.startswith((".", "/")))


def check_model_paths(cfg: TrainConfig) -> None:
    """Refuse, in one line, an `--init` or `--reward-init` named as a local path that does not exist, and a
    `--gguf-file` that is not inside a local `--init` folder."""
    for flag, name in (("init", cfg.init), ("reward-init", cfg.reward_init)):
        if name and is_missing(name):
            raise ModelError(f"--{flag} {name}: no such model folder or file")
    folder = Path(cfg.init).expanduser()
    if cfg.gguf_file and folder.suffix == ".gguf":  # load_lm would take the file --init names, not --gguf-file
        raise ModelError(f"--init {cfg.init} is a .gguf file already: give its folder with --gguf-file "
                         f"{cfg.gguf_file}, or leave --gguf-file out")
    if cfg.gguf_file and cfg.init and folder.is_dir():  # a model folder, or a run folder with policy/ (as load_lm)
        if not any((f / cfg.gguf_file).is_file() for f in (folder, folder / "policy")):
            raise ModelError(f"--gguf-file {cfg.gguf_file}: no such file in {folder}")


def load_lm(name: str, gguf_file: str | None = None, dtype: torch.dtype = torch.float32):
    """(model, tokenizer) from a run folder's `policy/`, a local model folder, a .gguf file
    or a hub id. A .gguf path is split into its folder and file name."""
    path = Path(name)
    if path.suffix == ".gguf":
        path, gguf_file = path.parent, path.name
    if (path / "policy").is_dir():  # a minirl run folder
        path = path / "policy"
    kwargs = {"gguf_file": gguf_file} if gguf_file else {}
    if is_missing(name):
        raise ModelError(f"{name}: no such model folder or file")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path), **kwargs)
        if not gguf_file:
            check_fits_in_memory(name, transformers.AutoConfig.from_pretrained(str(path)), dtype)
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype, **kwargs)
    except SafetensorError as e:  # a weights file cut short (a full disk, an interrupted copy) or overwritten
        files = sorted(path.glob("*.safetensors")) if path.is_dir() else []
        raise ModelError(f"{files[0] if len(files) == 1 else path}: truncated or corrupt safetensors ({e})") from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError, struct.error) as e:  # malformed, or no model
        raise ModelError(f"cannot load model {name!r} (offline, or not a model?): {reason(e)}") from None
    if gguf_file:  # GGUF weights are de-quantized on load: drop the marker so the model saves like any other
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
    if tokenizer.pad_token is None:  # many chat models have none; EOS masking copes (M4)
        tokenizer.pad_token = tokenizer.eos_token
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def check_fits_in_memory(name: str, config, dtype: torch.dtype) -> None:
    """Refuse, before it is built, a model whose weights alone outgrow this machine's memory: the process would be
    killed without a word (a config.json without sizes even builds transformers' default 7B Llama)."""
    sizes = [getattr(config, k, None) for k in ("hidden_size", "num_hidden_layers", "intermediate_size", "vocab_size")]
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, AttributeError, OSError):  # no way to know here (Windows): let it try
        return
    if None in sizes:
        return
    hidden, layers, mlp, vocab = sizes  # a layer: attention (q, o; k, v for the kv heads), a gated MLP 3 h m
    heads = getattr(config, "num_attention_heads", None) or 1
    kv = hidden * (getattr(config, "num_key_value_heads", None) or heads) // heads  # k and v width (grouped queries)
    embeddings = vocab * hidden * (1 if getattr(config, "tie_word_embeddings", False) else 2)
    need = (layers * (2 * hidden * (hidden + kv) + 3 * hidden * mlp) + embeddings) * torch.finfo(dtype).bits // 8
    if need > memory:
        raise ModelError(f"{name}: its weights need about {need / 2**30:.0f} GiB, more than this machine's "
                         f"{memory / 2**30:.0f} GiB of memory")


def reason(error: Exception) -> str:
    """An exception's first line, or its type when it has no message (a KeyError from a malformed JSON file)."""
    text = str(error).splitlines()[0] if str(error) else ""
    return f"{type(error).__name__} {text}" if isinstance(error, (KeyError, TypeError, AttributeError)) else text


def load_tokenizer(folder: str | Path):
    """The tokenizer saved in a model folder (a reward model's backbone/); a missing or malformed one is one
    ModelError naming the folder."""
    try:
        return AutoTokenizer.from_pretrained(str(folder))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise ModelError(f"{folder}: no readable tokenizer ({reason(e)})") from None


def check_same_tokenizer(policy_tokenizer, reward_tokenizer, where: str = "the reward model") -> None:
    """Rewards are paid per token of the policy's trace (M2), so both models must cut text into
    the same ids. Compares vocabularies, not embedding sizes: Qwen2.5-0.5B and -7B share a
    tokenizer but pad their embeddings differently. `where`: the reward model's origin, for the message."""
    if reward_tokenizer.get_vocab() != policy_tokenizer.get_vocab():
        raise ModelError(f"{where} and the policy have different tokenizers; rewards would not line up (M2)")


def add_lora(lm: nn.Module, rank: int) -> nn.Module:
    """Wrap `lm` with LoRA adapters on every linear layer (M4: the paper uses rank 128/32)."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise ModelError("LoRA needs the peft extra: pip install -e '.[peft]'") from None
    return get_peft_model(lm, LoraConfig(r=rank, lora_alpha=2 * rank, target_modules="all-linear",
                                         task_type="CAUSAL_LM"))


def save_lm(lm: nn.Module, tokenizer, folder: str | Path) -> None:
    """save_pretrained, with LoRA adapters merged so that any loader can read the folder."""
    if hasattr(lm, "merge_and_unload"):
        lm = copy.deepcopy(lm).merge_and_unload()
    lm.save_pretrained(folder)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)


def load_policy(cfg: TrainConfig, data: dict[str, list[dict]]):
    """(policy, tokenizer) to start a run from: `cfg.init` (run folder, model folder, .gguf file, hub id), or for
    the synthetic world a fresh tiny model with a tokenizer fitted on the world's text."""
    device, dtype = pick_device()
    torch.manual_seed(cfg.seed)
    if cfg.init:
        policy, tokenizer = load_lm(str(Path(cfg.init).expanduser()), cfg.gguf_file or None, dtype)
    elif cfg.data == "synthetic":
        texts = [t["question"] + "\n" + t["answer"] for t in data["corpus"][:5000] + data["demos"]]
        tokenizer = build_tokenizer(texts)
        policy = build_tiny_lm(tokenizer, cfg.size, cfg.seed)
    else:
        raise ModelError("give --init: a model to start from (hub id, local folder or .gguf file)")
    context = context_length(policy)
    if context and cfg.max_new_tokens >= context:  # sampling would run past the positions the model knows
        raise ModelError(f"--max-new-tokens {cfg.max_new_tokens}: the model's context holds {context} tokens, the "
                         "prompt included")
    if cfg.grad_checkpointing:  # transformers 5 renamed it "activation checkpointing"
        getattr(policy, "activation_checkpointing_enable", policy.gradient_checkpointing_enable)()
    if device.type == "cpu" and cfg.precision == "bf16-mixed":  # SPEED (docs/speed.md): the fused attention's bf16
        policy.set_attn_implementation("eager")  # backward is slow on a CPU; plain matmuls: tiny pretraining -32 %
    if cfg.lora_rank > 0:
        policy = add_lora(policy, cfg.lora_rank)
    return policy.to(device), tokenizer


def context_length(lm: nn.Module) -> int | None:
    """The positions the model was built for (None when its config does not say)."""
    return getattr(lm.config.get_text_config(), "max_position_embeddings", None)


def frozen_copy(model: nn.Module) -> nn.Module:
    """A copy that never trains: the KL anchor's reference policy (M4)."""
    ref = copy.deepcopy(model).eval()
    ref.requires_grad_(False)
    return ref


def hidden_size(lm: nn.Module) -> int:
    return lm.config.get_text_config().hidden_size


# ---------------------------------------------------------------- reward model (M2)

class RewardModel(nn.Module):
    """A causal LM backbone with a `scalar`, `token` or `hybrid` reward head (method.md M2)."""

    def __init__(self, lm: nn.Module, head: str = "token"):
        super().__init__()
        if head not in ("scalar", "token", "hybrid"):
            raise ModelError(f"unknown reward head {head!r}; choose 'scalar', 'token' or 'hybrid'")
        self.lm, self.head_kind = lm, head
        self.head = nn.Linear(hidden_size(lm), 1) if head != "token" else None
        if self.head is not None:
            nn.init.zeros_(self.head.weight)  # start uninformative: z_t = 0, h(s) = 0 (hybrid = the token head)
            nn.init.zeros_(self.head.bias)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The learned reward f_t (= z_t) for every token, [B, T], aligned with the token
        it scores: the value at column t sees only (x, y_<=t) (causal)."""
        if self.head_kind == "token":  # M2 token head: f_t = log pi_phi(y_t | x, y_<t)
            return token_logprobs(self.lm, input_ids, attention_mask)
        if self.head_kind == "hybrid":  # M2 hybrid head: f_t = log pi_phi(y_t | s_t) + h(s_t), no cap
            logp, _, h = lm_forward(self.lm, input_ids, attention_mask, value_head=self.head)
            return logp + h
        hidden = self.lm(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids(attention_mask),
                         output_hidden_states=True, logits_to_keep=1).hidden_states[-1]  # [B, T, H]
        return self.head(hidden.float()).squeeze(-1).float()  # [B, T], fp32 also under autocast

    def save(self, folder: str | Path, tokenizer=None) -> None:
        folder = Path(folder)
        save_lm(self.lm, tokenizer, folder / "backbone")
        if self.head is not None:
            save_file({k: v.contiguous() for k, v in self.head.state_dict().items()}, folder / "head.safetensors")
        (folder / "reward.json").write_text(json.dumps({"head": self.head_kind}))

    @staticmethod
    def saved_head(folder: str | Path) -> str:
        """The head kind a saved reward model folder holds (its reward.json), without loading any weights."""
        folder = Path(folder)
        for part in ("reward.json", "backbone"):
            if not (folder / part).exists():
                raise ModelError(f"{folder}: not a reward model folder (no {part})")
        try:
            return json.loads((folder / "reward.json").read_text())["head"]
        except (ValueError, KeyError, TypeError):
            raise ModelError(f"{folder / 'reward.json'}: not JSON naming the reward head") from None

    @classmethod
    def load(cls, folder: str | Path, dtype: torch.dtype = torch.float32) -> RewardModel:
        folder = Path(folder)
        head = cls.saved_head(folder)
        lm, _ = load_lm(str(folder / "backbone"), dtype=dtype)
        rm = cls(lm, head)
        if rm.head is not None:
            try:
                rm.head.load_state_dict(load_file(folder / "head.safetensors"))
            except (OSError, RuntimeError, SafetensorError) as e:
                raise ModelError(f"{folder / 'head.safetensors'}: missing, truncated or corrupt ({e})") from None
        return rm
