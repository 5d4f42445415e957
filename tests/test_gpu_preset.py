"""The GPU preset's code path, checked on the CPU (issue: real models on GSM8K).

`--preset gsm8k-qwen0.5b` is meant for a CUDA card and a hub model; here a micro model of the
same architecture (Qwen2: grouped-query attention, tied embeddings) with a chat template is
saved to a local folder and stands in for Qwen2.5-0.5B-Instruct. Everything the preset turns
on runs: a separate reward backbone (`reward_init`), the KL anchor, group sizes, GSM8K-format
files, the chat template. What it cannot check is CUDA: `tutorial/gpu_check.py` does, and runs here at toy sizes
on the CPU (bf16-mixed included) so that it cannot rot.
"""

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM
from typer.testing import CliRunner

from minirl.airl import make_reward_model
from minirl.cli import app
from minirl.config import from_preset
from minirl.data import format_prompt, synthetic_tasks
from minirl.models import ModelError, build_tokenizer, load_lm, save_lm
from minirl.train import train

CHAT_TEMPLATE = (  # the shape of Qwen2.5's template, without its tool-calling branches
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def save_qwen_micro(folder, texts: list[str], vocab_size: int = 400, padded_rows: int = 0) -> None:
    """A random two-layer Qwen2 with a chat template and a tokenizer fitted on `texts`; its
    embedding may have `padded_rows` unused rows, as Qwen2.5's do."""
    tokenizer = build_tokenizer(texts, vocab_size)
    tokenizer.chat_template = CHAT_TEMPLATE
    config = Qwen2Config(vocab_size=len(tokenizer) + padded_rows, hidden_size=32, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, intermediate_size=64,
                         max_position_embeddings=512, tie_word_embeddings=True, pad_token_id=tokenizer.pad_token_id,
                         eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id)
    save_lm(Qwen2ForCausalLM(config), tokenizer, folder)


def write_gsm8k_files(folder) -> list[str]:
    """train.jsonl and test.jsonl in GSM8K's format, from the synthetic world; returns the texts."""
    tasks = synthetic_tasks(0, n_demos=40, n_corpus=60)
    for name, part in (("train", tasks["demos"] + tasks["rl"]), ("test", tasks["test"][:8])):
        rows = [{"question": t["question"], "answer": t["answer"]} for t in part]
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return [t["question"] + "\n" + t["answer"] for t in tasks["rl"]]


def preset_config(tmp_path, **kw):
    kw = {"reward_init": str(tmp_path / "qwen-micro"), **kw}
    return from_preset("gsm8k-qwen0.5b", "airl", init=str(tmp_path / "qwen-micro"), data=str(tmp_path / "train.jsonl"),
                       test_data=str(tmp_path / "test.jsonl"), out=str(tmp_path / "run"), steps=2, eval_every=2,
                       disc_warmup=1, warmup_pool=2, prompts_per_iter=2, samples_per_prompt=2, minibatch_size=2,
                       disc_batch=2, eval_questions=2, final_questions=4, eval_samples=2, eval_batch=4,
                       max_new_tokens=24, n_demos=20, **kw)


def test_gpu_preset_trains_and_reranks_a_chat_model_from_a_local_folder(tmp_path):
    save_qwen_micro(tmp_path / "qwen-micro", write_gsm8k_files(tmp_path))
    cfg = preset_config(tmp_path)
    assert cfg.kl_beta > 0 and cfg.top_p == 0.95  # the preset's own settings survive the overrides
    summary = train(cfg)
    iterations = [json.loads(x) for x in (tmp_path / "run/metrics.jsonl").read_text().splitlines() if '"iter"' in x]
    assert [m["iter"] for m in iterations] == [1, 2]
    assert all(abs(m["ratio_first"] - 1) < 1e-4 for m in iterations)  # sampling and training agree (M4)
    assert all("kl_ref" in m for m in iterations)  # the frozen reference is in the loop
    assert "reward_auroc" in summary

    policy, reloaded = load_lm(str(tmp_path / "run"))
    assert isinstance(policy, Qwen2ForCausalLM)
    assert format_prompt("How many?", reloaded).startswith("<|im_start|>system\n")  # the template travels

    result = CliRunner().invoke(app, ["rerank", "--run", str(tmp_path / "run"), "--n", "2", "--questions", "2",
                                      "--data", str(tmp_path / "test.jsonl"), "--out", str(tmp_path / "r.json")])
    assert result.exit_code == 0, result.output
    assert {"random", "majority", "logprob", "mean", "oracle"} <= set(json.loads((tmp_path / "r.json").read_text()))


def test_a_reward_backbone_must_share_the_policy_tokenizer(tmp_path):
    texts = write_gsm8k_files(tmp_path)
    save_qwen_micro(tmp_path / "qwen-micro", texts)
    save_qwen_micro(tmp_path / "padded", texts, padded_rows=16)  # same tokenizer, larger embedding
    save_qwen_micro(tmp_path / "other", texts, vocab_size=380)  # another vocabulary
    policy, tokenizer = load_lm(str(tmp_path / "qwen-micro"))
    reward_model = make_reward_model(preset_config(tmp_path, reward_init=str(tmp_path / "padded")), policy,
                                          tokenizer)
    assert reward_model.lm.config.vocab_size == policy.config.vocab_size + 16
    with pytest.raises(ModelError, match="different tokenizers"):
        make_reward_model(preset_config(tmp_path, reward_init=str(tmp_path / "other")), policy, tokenizer)


def test_the_gpu_check_runs_every_part_at_toy_sizes_and_prints_one_json_line(tmp_path, capfd):
    if torch.cuda.is_available():
        pytest.skip("CUDA is visible: run tutorial/gpu_check.py itself")
    spec = importlib.util.spec_from_file_location("gpu_check", Path(__file__).parents[1] / "tutorial/gpu_check.py")
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    result = gpu_check.main(["--device", "cpu", "--out", str(tmp_path)])
    out = capfd.readouterr().out
    assert len(out.splitlines()) == 1 and json.loads(out)["mode"] == "toy", out[:500]  # training output: stderr
    assert {"base", "reward_alone", "airl"} <= set(result["tiny"])
    for part, precision in (("preset", "bf16-mixed"), ("preset_fp32", "fp32")):
        figures = result[part]
        assert figures["precision"] == precision and figures["finite"]
        assert len(figures["s_sample"]) == 2 and min(figures["sampler_tokens_per_s"]) > 0
        assert all(abs(r - 1) < 1e-2 for r in figures["ratio_first"])  # scoring and update agree (measured 1.0000)
    assert gpu_check.main(["--out", str(tmp_path)])["error"].startswith("no CUDA device")
