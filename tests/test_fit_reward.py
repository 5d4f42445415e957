"""`minirl train --algo reward` (fit_reward.py): the cached top-layer reward equals the whole model's, the pool is
drawn once, the held-out figures by hand, and the run end to end with an interruption and --resume."""

import json
import math
import random

import pytest
import torch
from safetensors.torch import load_file

import minirl.pool
from minirl import fit_reward, runs
from minirl import traces as traces_module
from minirl.config import UsageError, from_preset
from minirl.data import DataError
from minirl.fit_reward import heldout_figures, labelled_tokens
from minirl.logprobs import token_logprobs
from minirl.models import RewardModel, build_tiny_lm, load_lm, save_lm
from minirl.perturb import PERTURBATIONS
from minirl.rollout import make_batch
from minirl.traces import Trace, cache_features, freeze_below, make_traces, top_layers, trace_logits
from minirl.train import train

SMALL = dict(size="micro", n_corpus=300, n_demos=40, eval_questions=6, final_questions=6, eval_samples=2,
             max_new_tokens=24, warmup_pool=6, disc_batch=4, steps=4, eval_every=2)


def tasks_of(n: int) -> list[dict]:
    return [{"question": f"Tom has {i} apples and buys 3 more. How many?", "answer": f"{i} + 3 = {i + 3}\n#### {i + 3}"}
            for i in range(1, n + 1)]


@pytest.mark.parametrize("head,form", [("token", "airl"), ("scalar", "logit"), ("scalar", "airl"), ("hybrid", "airl")])
@pytest.mark.parametrize("k", [1, 2])
def test_cached_top_layers_give_the_whole_models_logits(tok, head, form, k):
    policy = build_tiny_lm(tok, "micro", seed=0).eval()
    reward_model = RewardModel(build_tiny_lm(tok, "micro", seed=0), head)
    torch.manual_seed(1)
    with torch.no_grad():  # move the reward model away from the policy where it trains: the top layers, the head
        head = reward_model.head or torch.nn.Linear(1, 1)
        for p in (*reward_model.lm.model.layers[-k:].parameters(), *head.parameters()):
            p.add_(0.05 * torch.randn_like(p))
    traces = make_traces(tok, tasks_of(3), [], random.Random(0))
    cache_features(policy, traces, k, tok.pad_token_id, batch_size=2, precision="fp32")
    with torch.no_grad():
        logits, mask = trace_logits(reward_model, top_layers(reward_model.lm, k), traces, form, tok.pad_token_id)
        batch = make_batch([t.prompt_ids for t in traces], [t.response_ids for t in traces], tok.pad_token_id)
        whole = reward_model(batch.input_ids, batch.attention_mask)
        if form == "airl":
            whole = whole - token_logprobs(policy, batch.input_ids, batch.attention_mask)
    assert torch.equal(mask, batch.response_mask)
    assert torch.allclose(logits[mask.bool()], whole[mask.bool()], atol=1e-5)


@pytest.mark.parametrize("k", [1, 3])
def test_a_reward_backbone_of_its_own_is_cached_from_its_own_layers(tok, k):
    """--reward-init / --reward-size: the frozen part below the top `k` layers is the reward backbone's (here wider
    and deeper than the policy), while log pi stays the policy's."""
    policy = build_tiny_lm(tok, "micro", seed=0).eval()
    reward_model = RewardModel(build_tiny_lm(tok, "tiny", seed=1), "token").eval()
    traces = make_traces(tok, tasks_of(3), [], random.Random(0))
    cache_features(policy, traces, k, tok.pad_token_id, batch_size=2, precision="fp32", backbone=reward_model.lm)
    with torch.no_grad():
        logits, mask = trace_logits(reward_model, top_layers(reward_model.lm, k), traces, "airl", tok.pad_token_id)
        batch = make_batch([t.prompt_ids for t in traces], [t.response_ids for t in traces], tok.pad_token_id)
        whole = (reward_model(batch.input_ids, batch.attention_mask)
                 - token_logprobs(policy, batch.input_ids, batch.attention_mask))
    assert torch.allclose(logits[mask.bool()], whole[mask.bool()], atol=1e-5)


def test_features_are_cached_in_batches_of_similar_length(tok, monkeypatch):
    policy = build_tiny_lm(tok, "micro", seed=0).eval()
    tasks = [{"question": "How many?", "answer": " ".join(["1 + 1 = 2"] * n) + "\n#### 2"} for n in (5, 1, 4, 2, 3, 1)]
    traces = [t for t in make_traces(tok, tasks, [], random.Random(0)) if t.source == "expert"]
    lengths, real_make_batch = [], traces_module.make_batch
    monkeypatch.setattr(traces_module, "make_batch", lambda p, r, pad: lengths.append(
        [len(a) + len(b) for a, b in zip(p, r)]) or real_make_batch(p, r, pad))
    cache_features(policy, traces, 1, tok.pad_token_id, batch_size=2, precision="fp32")
    assert len(lengths) == 3 and all(max(a) <= min(b) for a, b in zip(lengths, lengths[1:]))
    assert all(t.hidden.shape[0] == len(t.prompt_ids) + len(t.response_ids) for t in traces)


def test_freeze_below_trains_the_top_layers_norm_and_head_only(tok):
    reward_model = RewardModel(build_tiny_lm(tok, "micro", seed=0), "scalar")
    trained = {id(p) for p in freeze_below(reward_model, 1)}
    names = {n for n, p in reward_model.named_parameters() if p.requires_grad}
    assert {id(p) for p in reward_model.parameters() if p.requires_grad} == trained
    assert names and all(n.startswith(("lm.model.layers.1.", "lm.model.norm", "head.")) for n in names)
    assert any(n.startswith("head.") for n in names) and any(n.startswith("lm.model.layers.1.") for n in names)


def test_perturbed_traces_carry_the_token_range_of_their_first_change(tok):
    traces = make_traces(tok, tasks_of(4), [], random.Random(0))
    perturbed = [t for t in traces if t.source == "perturbed"]
    assert len(perturbed) == 4 and [t.source for t in traces].count("expert") == 4
    for t in perturbed:
        expert = next(e for e in traces if e.source == "expert" and e.question == t.question)
        start, end = t.target
        assert 0 <= start < end < len(t.response_ids)  # never the EOS
        assert t.response_ids[:start] == expert.response_ids[:start]  # nothing before the change moved
        assert t.kind in PERTURBATIONS  # the rule that made it, for figures by kind
        tail = len(t.response_ids) - t.change_end  # `change` labels: [start, change_end) holds every difference
        assert end <= t.change_end < len(t.response_ids) and t.response_ids[-tail:] == expert.response_ids[-tail:]
        assert t.response_ids[t.change_end - 1] != expert.response_ids[len(expert.response_ids) - tail - 1]


def test_several_perturbed_copies_are_distinct_and_one_copy_draws_as_before(tok):
    one, again = (make_traces(tok, tasks_of(6), [], random.Random(3)) for _ in range(2))
    assert [t.response_ids for t in one] == [t.response_ids for t in again]
    three = make_traces(tok, tasks_of(6), [], random.Random(3), copies=3)
    for q in range(6):
        copies = [t.response_ids for t in three if t.source == "perturbed" and t.question == q]
        assert len(copies) >= 2 and len({tuple(c) for c in copies}) == len(copies)
    for t in three:  # each perturbed copy's lines tile its response before the EOS
        if t.source == "perturbed":
            assert t.steps[0][0] == 0 and t.steps[-1][1] == len(t.response_ids) - 1
            assert all(a[1] == b[0] for a, b in zip(t.steps, t.steps[1:]))


def test_a_perturbed_copy_is_labelled_from_its_first_change_on():
    traces = [Trace("expert", 0, [1, 2], [5, 6, 7]), Trace("perturbed", 0, [1, 2], [5, 9, 7, 8], target=(1, 2)),
              Trace("policy", 0, [1], [4, 4])]
    batch = make_batch([t.prompt_ids for t in traces], [t.response_ids for t in traces], pad_id=0)  # P 2, R 4
    mask = labelled_tokens(traces, batch.response_mask)
    assert mask.tolist() == [[0, 0, 1, 1, 1, 0], [0, 0, 0, 1, 1, 1], [0, 0, 1, 1, 0, 0]]
    assert batch.response_mask[1].tolist() == [0, 0, 1, 1, 1, 1]  # the batch's own mask is left alone
    traces[1].steps = [(0, 3), (3, 4)]  # the change (token 1) lies on the first line, tokens [0, 3)
    mask = labelled_tokens(traces, batch.response_mask, "line")
    assert mask.tolist() == [[0, 0, 1, 1, 1, 0], [0, 0, 0, 1, 1, 0], [0, 0, 1, 1, 0, 0]]
    traces[1].change_end = 3  # its change told as tokens [1, 3): labelled there only
    mask = labelled_tokens(traces, batch.response_mask, "change")
    assert mask.tolist() == [[0, 0, 1, 1, 1, 0], [0, 0, 0, 1, 1, 0], [0, 0, 1, 1, 0, 0]]
    traces[1].change_end = 2
    assert labelled_tokens(traces, batch.response_mask, "change")[1].tolist() == [0, 0, 0, 1, 0, 0]
    both = labelled_tokens(traces, batch.response_mask, "both")  # its changed token weighs as much as the 2 after it
    assert both.tolist() == [[0, 0, 1, 1, 1, 0], [0, 0, 0, 2, 1, 1], [0, 0, 1, 1, 0, 0]]
    traces[1].change_end, traces[1].target = 4, (1, 2)  # changed at tokens 1 and 3: `first` weighs token 1 only
    first = labelled_tokens(traces, batch.response_mask, "first")
    assert first.tolist() == [[0, 0, 1, 1, 1, 0], [0, 0, 0, 2, 1, 1], [0, 0, 1, 1, 0, 0]]
    assert labelled_tokens(traces, batch.response_mask, "both")[1].tolist() == [0, 0, 0, 1, 1, 1]  # all 3 changed


def test_heldout_figures_by_hand(monkeypatch):
    def trace(source, q, correct=None, target=None):  # a perturbed copy's lines: tokens [0, 1) and [1, 3)
        return Trace(source, q, [1], [2, 3, 4], correct, target, [(0, 1), (1, 3)] if target else None)

    def s(reward, logprob, reward_lowest=0, logprob_lowest=0, reward_line=None, logprob_line=None):
        # mean = min = given; last: +1 expert, -1 other; `line`: the first token of the lowest-mean line
        return {"reward_mean": reward, "logprob_mean": logprob, "reward_min": reward, "logprob_min": logprob,
                "reward_last": None, "logprob_last": 0.0, "reward_lowest": reward_lowest,
                "logprob_lowest": logprob_lowest, "reward_low5": None, "logprob_low5": logprob,
                "reward_line": reward_line, "logprob_line": logprob_line,
                **{f"f_{how}": 0.0 for how in ("mean", "min", "last", "low5", "lowest", "line")}}

    rows = [(trace("expert", 0), s(1.0, -1.0)), (trace("perturbed", 0, target=(1, 2)), s(0.0, -0.5, 1, 0, 0, 1)),
            (trace("policy", 0, False), s(0.5, -0.2)), (trace("policy", 0, False), s(2.0, -3.0)),
            (trace("policy", 0, True), s(9.0, 9.0)),  # right answers never count against the expert
            (trace("expert", 1), s(-1.0, -2.0)), (trace("perturbed", 1, target=(0, 2)), s(0.5, -1.5, 2, 1, 1, 0)),
            (trace("policy", 1, False), s(-2.0, -1.0))]
    scores = [{**sc, "reward_last": 1.0 if t.source == "expert" else -1.0,
               "reward_low5": 2.0 if t.source == "expert" else -2.0 * (t.question + 1)} for t, sc in rows]
    monkeypatch.setattr(fit_reward, "trace_scores", lambda *a: scores)
    figures = heldout_figures(None, None, None, [t for t, _ in rows], 0, intervals=True)
    # clean vs perturbed, pooled: experts (1, -1) vs perturbed (0, 0.5): 2 of 4 pairs -> 0.5; log-prob
    # experts (-1, -2) vs perturbed (-0.5, -1.5): 1 of 4 -> 0.25; the last token separates them: 1.0; a tie 0.5
    assert figures["clean_vs_perturbed_auroc_reward_mean"] == figures["clean_vs_perturbed_auroc_reward_min"] == 0.5
    assert figures["clean_vs_perturbed_auroc_logprob_mean"] == 0.25
    assert figures["clean_vs_perturbed_auroc_reward_last"] == 1.0
    assert figures["clean_vs_perturbed_auroc_logprob_last"] == 0.5
    # Hit@1: reward lowest tokens 1 (in [1, 2)) and 2 (not in [0, 2)); log-prob 0 (no) and 1 (yes)
    assert figures["hit1_reward_lowest"] == 0.5 and figures["hit1_logprob_lowest"] == 0.5
    # step Hit@1, the lowest token's line: reward tokens 1, 2 -> line [1, 3) both times, which overlaps [1, 2) and
    # [0, 2): 1.0; log-prob tokens 0 -> line [0, 1), not [1, 2); 1 -> [1, 3) overlaps [0, 2): 0.5. Chance 1/2 lines
    assert figures["step1_reward_lowest"] == 1.0 and figures["step1_logprob_lowest"] == 0.5
    assert figures["step1_chance"] == 0.5
    # step Hit@1, the lowest-mean line: reward lines [0, 1) (misses [1, 2)) and [1, 3) (overlaps [0, 2)): 0.5;
    # log-prob lines [1, 3) and [0, 1), both overlapping their change: 1.0
    assert figures["step1_reward_line"] == 0.5 and figures["step1_logprob_line"] == 1.0
    # expert over wrong: q0 reward 1 > 0.5 yes, 1 > 2 no -> 0.5; q1 -1 > -2 yes -> 1; mean 0.75.
    # log-prob: q0 -1 > -0.2 no, -1 > -3 yes -> 0.5; q1 -2 > -1 no -> 0; mean 0.25
    assert figures["expert_over_wrong_reward_mean"] == 0.75 and figures["expert_over_wrong_logprob_mean"] == 0.25
    # the soft minimum `low5`: experts 2, 2 over perturbed -2 (q0), -4 (q1): 1.0; and over every wrong answer: 1.0
    assert figures["clean_vs_perturbed_auroc_reward_low5"] == figures["expert_over_wrong_reward_low5"] == 1.0
    assert figures["clean_vs_perturbed_auroc_logprob_low5"] == 0.25  # as the log-prob's mean, which it equals here
    low, high = figures["expert_over_wrong_reward_mean_ci"]
    assert 0.5 <= low <= 0.75 <= high <= 1.0


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A micro base policy pretrained for 20 steps."""
    out = tmp_path_factory.mktemp("runs") / "base"
    train(from_preset("tiny", "pretrain", out=str(out), steps=20, prompts_per_iter=16, eval_every=20,
                      **{k: v for k, v in SMALL.items() if k not in ("steps", "eval_every")}))
    return out


def test_reward_run_end_to_end_resumes_where_an_uninterrupted_run_ends(base, tmp_path, monkeypatch):
    whole = train(from_preset("tiny", "reward", init=str(base), out=str(tmp_path / "whole"), train_layers=1, **SMALL))
    for key in ("clean_vs_perturbed_auroc_reward_last", "hit1_logprob_lowest", "expert_over_wrong_reward_mean_ci",
                "heldout_policy"):
        assert key in whole
    pool = (tmp_path / "whole" / "pool.jsonl").read_text().splitlines()
    assert len(pool) == 6 * 4 + 6 * 2  # 4 answers per training problem, eval_samples per held-out problem

    calls = []
    real_step = fit_reward.fit_step

    def crash_at_step_3(*args):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_step(*args)

    cut = tmp_path / "cut"
    monkeypatch.setattr(fit_reward, "fit_step", crash_at_step_3)
    with pytest.raises(KeyboardInterrupt):
        train(from_preset("tiny", "reward", init=str(base), out=str(cut), train_layers=1, **SMALL))
    monkeypatch.setattr(fit_reward, "fit_step", real_step)
    sampled = []
    monkeypatch.setattr(minirl.pool, "sample_answers", lambda *a, **k: sampled.append(1) or iter(()))
    resumed = train(from_preset("tiny", "reward", init=str(base), out=str(cut), train_layers=1, resume=True, **SMALL))
    assert not sampled  # the pool was read back, not drawn again
    assert resumed["clean_vs_perturbed_auroc_reward_mean"] == whole["clean_vs_perturbed_auroc_reward_mean"]
    a, b = (load_file(d / "reward" / "backbone" / "model.safetensors") for d in (tmp_path / "whole", cut))
    assert all(torch.equal(a[name], b[name]) for name in a)
    steps = [json.loads(x)["step"] for x in (cut / "metrics.jsonl").read_text().splitlines() if '"step"' in x]
    assert steps == [1, 2, 3, 4]


def test_every_perturbed_copy_of_a_chosen_expert_joins_its_step(base, tmp_path, monkeypatch):
    batches, real_step = [], fit_reward.fit_step
    monkeypatch.setattr(fit_reward, "fit_step", lambda cfg, rm, top, opt, batch, pad: batches.append(batch)
                        or real_step(cfg, rm, top, opt, batch, pad))
    train(from_preset("tiny", "reward", init=str(base), out=str(tmp_path / "r"), train_layers=1,
                      perturbed_per_expert=2, **{**SMALL, "steps": 2, "eval_every": 2}))
    assert len(batches) == 2
    for batch in batches:
        experts = [t.question for t in batch if t.source == "expert"]
        perturbed = [t.question for t in batch if t.source == "perturbed"]
        assert len(experts) == SMALL["disc_batch"] and set(perturbed) <= set(experts)
        assert len(perturbed) > len(experts)  # two copies of most experts (a copy can repeat one, or not spell)
        assert sum(t.source == "policy" for t in batch) > 0


def test_line_labels_reach_every_reward_step(base, tmp_path, monkeypatch):
    seen, real = [], fit_reward.labelled_tokens
    monkeypatch.setattr(fit_reward, "labelled_tokens", lambda traces, mask, labels="after", share=0.5:
                        seen.append((traces, mask, real(traces, mask, labels, share))) or seen[-1][2])
    train(from_preset("tiny", "reward", init=str(base), out=str(tmp_path / "r"), train_layers=1,
                      perturbed_labels="line", **{**SMALL, "steps": 2, "eval_every": 2}))
    copies = 0
    for traces, mask, labelled in seen:
        P = mask.shape[1] - max(len(t.response_ids) for t in traces)  # the first response column
        for row, t in enumerate(traces):
            if t.source == "perturbed":  # from its first change to the end of that change's line
                end = next(b for a, b in t.steps if a <= t.target[0] < b)
                assert labelled[row].nonzero().flatten().tolist() == list(range(P + t.target[0], P + end))
                copies += 1
    assert copies > 0


def test_train_layers_above_the_models_depth_is_one_line(base, tmp_path):
    with pytest.raises(UsageError, match="--train-layers 9: the model has 2 decoder layers"):
        train(from_preset("tiny", "reward", init=str(base), out=str(tmp_path / "r"), train_layers=9, **SMALL))
    assert not (tmp_path / "r").exists()  # refused before the run folder is made


def test_trace_scores_by_hand_and_the_eos_is_never_the_lowest_token(monkeypatch):
    trace = Trace("perturbed", 0, [1, 2], [5, 6, 7, 0], target=(1, 2), logp=torch.tensor([0, 0, -1, -3, -2, -0.5]))
    logits = torch.tensor([[0.0, 0.0, 1.0, -2.0, 0.5, -9.0]])  # [1, T]: prompt 2 tokens, response 4 (EOS last)
    mask = torch.tensor([[0, 0, 1, 1, 1, 1]])
    monkeypatch.setattr(fit_reward, "trace_logits", lambda *a: (logits, mask))
    cfg = from_preset("tiny", "reward")
    (scores,) = fit_reward.trace_scores(cfg, torch.nn.Linear(1, 1), None, [trace], 0)
    assert scores["reward_mean"] == (1 - 2 + 0.5 - 9) / 4 and scores["reward_min"] == -9.0
    assert scores["reward_last"] == -9.0 and scores["reward_lowest"] == 1  # -2, not the EOS's -9
    assert scores["reward_low5"] == scores["reward_mean"]  # the 5 lowest of 4 tokens: all of them
    assert scores["logprob_mean"] == (-1 - 3 - 2 - 0.5) / 4 and scores["logprob_lowest"] == 1
    # f = logit + log pi in the airl form: 0, -5, -1.5, -9.5
    assert scores["f_mean"] == (0 - 5 - 1.5 - 9.5) / 4 and scores["f_lowest"] == 1 and scores["f_last"] == -9.5


def test_the_lowest_mean_line_can_differ_from_the_lowest_tokens_line(monkeypatch):
    # lines [0, 1) and [1, 3) before the EOS; logits -1.5 | -2, 1 | EOS -9: the lowest token (1) is on the second
    # line, the lowest mean (-1.5 against -0.5) is the first; an expert carries no lines, so no `line`
    perturbed = Trace("perturbed", 0, [1], [5, 6, 7, 0], target=(0, 1), steps=[(0, 1), (1, 3)],
                      logp=torch.tensor([0.0, -1, -1, -1, -1]))
    expert = Trace("expert", 0, [1], [5, 6, 7, 0], logp=torch.tensor([0.0, -1, -1, -1, -1]))
    logits = torch.tensor([[0.0, -1.5, -2.0, 1.0, -9.0]] * 2)
    monkeypatch.setattr(fit_reward, "trace_logits", lambda *a: (logits, torch.tensor([[0, 1, 1, 1, 1]] * 2)))
    got, clean = fit_reward.trace_scores(from_preset("tiny", "reward"), torch.nn.Linear(1, 1), None,
                                         [perturbed, expert], 0)
    assert got["reward_lowest"] == 1 and got["reward_line"] == 0
    assert clean["reward_line"] is None


def pool_row(**changes) -> dict:
    """A pooled answer as `sample_pool` writes it, with `changes`."""
    return {"key": "k", "split": "test", "question": 0, "text": "#### 3", "correct": True,
            "prompt_ids": [1, 2], "response_ids": [3, 0], **changes}


def test_a_pool_line_cut_short_by_a_crash_is_dropped_and_the_file_repaired(tmp_path):
    path = tmp_path / "pool.jsonl"
    torn = "".join(json.dumps(pool_row(question=q)) + "\n" for q in (0, 1)) + '{"key": "k", "quest'  # torn last line
    path.write_text(torn)
    assert [r["question"] for r in minirl.pool.read_pool(path)] == [0, 1]
    assert path.read_text() == torn  # a reader (benchmarks/reward_heldout.py) leaves a finished run's file alone
    assert [r["question"] for r in minirl.pool.read_pool(path, repair=True)] == [0, 1]  # the writer, sample_pool
    assert path.read_text().endswith("}\n")  # the next append starts on a line of its own
    assert minirl.pool.read_pool(tmp_path / "missing.jsonl") == []


@pytest.mark.parametrize("row", [{"x": 1}, [1, 2], 7, pool_row(question="0"), pool_row(question=-1),
                                 pool_row(correct=None), pool_row(response_ids=["a"]), pool_row(text=None)])
def test_a_pool_line_of_json_that_is_no_pool_row_is_refused_in_one_line(tmp_path, row):
    path = tmp_path / "pool.jsonl"
    path.write_text(json.dumps(pool_row()) + "\n" + json.dumps(row) + "\n")
    with pytest.raises(DataError) as error:
        minirl.pool.read_pool(path, repair=True)
    assert str(error.value) == (f"{path}:2: not a pool row (an object with key, split, question, text, correct, "
                                "prompt_ids, response_ids, as minirl writes them); remove that line")
    assert path.read_text().count("\n") == 2  # refused, not repaired away


def test_reward_run_trains_a_backbone_of_its_own_end_to_end(base, tmp_path):
    """--algo reward --reward-init: a backbone wider than the policy (here a fresh tiny-size model with the world's
    tokenizer) is cached and trained on its own layers, and saved as the run's reward model."""
    _, tokenizer = load_lm(str(base))
    save_lm(build_tiny_lm(tokenizer, "tiny", seed=1), tokenizer, tmp_path / "wider")
    summary = train(from_preset("tiny", "reward", init=str(base), out=str(tmp_path / "r"),
                                reward_init=str(tmp_path / "wider"), train_layers=1, **SMALL))
    assert math.isfinite(summary["clean_vs_perturbed_auroc_reward_mean"])
    _, _, reward_model, _ = runs.load_run(tmp_path / "r")
    assert reward_model.lm.config.hidden_size == 128
    trained = load_file(tmp_path / "r/reward/backbone/model.safetensors")
    start = load_file(tmp_path / "wider/model.safetensors")
    changed = {name.split(".")[2] for name in start if name.startswith("model.layers.")
               and not torch.equal(trained[name], start[name])}
    assert changed == {"2"}  # only the top layer of three trained


@pytest.mark.parametrize("labels, share", [("change", 0.5), ("both", 0.5), ("first", 0.5), ("first", 0.75)])
def test_change_both_and_first_labels_reach_every_reward_step(base, tmp_path, monkeypatch, labels, share):
    seen, real = [], fit_reward.labelled_tokens
    monkeypatch.setattr(fit_reward, "labelled_tokens", lambda traces, mask, labels="after", share=0.5:
                        seen.append((traces, mask, real(traces, mask, labels, share))) or seen[-1][2])
    train(from_preset("tiny", "reward", init=str(base), out=str(tmp_path / "r"), train_layers=1,
                      perturbed_labels=labels, change_share=share, **{**SMALL, "steps": 2, "eval_every": 2}))
    copies = 0
    for traces, mask, labelled in seen:
        P = mask.shape[1] - max(len(t.response_ids) for t in traces)  # the first response column
        for row, t in enumerate(traces):
            if t.source != "perturbed":
                continue
            copies += 1
            on = labelled[row].nonzero().flatten().tolist()
            changed = list(range(P + t.target[0], P + (t.target[1] if labels == "first" else t.change_end)))
            if labels == "change":  # its changed tokens only
                assert on == changed
            else:  # to its end, the changed tokens (`first`: the first change's) carrying `share` of the weight
                assert on == list(range(P + t.target[0], P + len(t.response_ids)))
                rest = labelled[row].sum() - labelled[row, changed].sum()
                assert rest == 0 or labelled[row, changed].sum().item() == pytest.approx(
                    rest.item() * share / (1 - share))
    assert copies > 0
