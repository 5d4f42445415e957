"""The learned reward as a component (minirl.reward): per-token rewards, trace scores, and TRL's GRPOTrainer
trained for two steps on a micro run's reward."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from minirl.data import SYSTEM, format_prompt
from minirl.localise import display_rewards
from minirl.models import ModelError
from minirl.rerank import aggregate, score_texts
from minirl.reward import LearnedReward, default_score_of, load_reward, question_of, trl_reward_func

QUESTIONS = ["Tom has 3 apples and buys 4 more. How many apples does he have?",
             "A box holds 6 pens. How many pens are in 2 boxes?", "Sam had 9 cards and gave away 5. How many are left?"]
RESPONSES = ["3 + 4 = 7\n#### 7", "6 * 2 = 12\n#### 12", "9 - 5 = 4\n#### 4"]


def test_token_rewards_are_what_inspect_shows(run_dir):
    reward = load_reward(run_dir)
    pairs = reward.token_rewards(QUESTIONS[0], RESPONSES[0])
    result = score_texts(reward.policy, reward.tokenizer, QUESTIONS[:1], RESPONSES[:1], reward.reward_model)[0]
    assert [t for t, _ in pairs] == result["tokens"] and "".join(result["tokens"][:-1]) == RESPONSES[0]
    assert [r for _, r in pairs] == pytest.approx(display_rewards(result, "token"))
    # run_dir's reward model is a copy of its policy: the token head's f - log pi starts at 0 (M2)
    assert [r for _, r in pairs] == pytest.approx([0.0] * len(pairs), abs=1e-5)


def test_scores_are_rerank_aggregates_batched_or_not(run_dir):
    reward = load_reward(run_dir)
    reward.batch_size = 2  # three traces: two batches, one of them short
    results = score_texts(reward.policy, reward.tokenizer, QUESTIONS, RESPONSES, reward.reward_model)
    for how in ("mean", "min", "discounted"):
        want = [aggregate(r["rewards"], r["tokens"], how) for r in results]
        assert reward.score(QUESTIONS, RESPONSES, how) == pytest.approx(want, abs=1e-5)
    assert reward.score(QUESTIONS, RESPONSES, "f-logpi") == pytest.approx([0.0] * 3, abs=1e-5)
    with pytest.raises(ValueError, match="unknown aggregate"):
        reward.score(QUESTIONS, RESPONSES, "median")


def test_the_default_score_follows_how_the_reward_was_trained(run_dir):
    assert default_score_of({"algo": "airl", "form": "airl"}) == "mean"  # beside its policy: mean f
    assert default_score_of({"algo": "reward", "form": "airl"}) == "f-logpi"  # alone: the discriminator's logit
    assert default_score_of({"algo": "reward", "form": "logit"}) == "mean"  # there f is the logit already
    assert default_score_of({}) == "mean"
    reward = load_reward(run_dir)
    assert reward.default_score == "mean"
    alone = replace(reward, default_score="f-logpi")
    assert alone.score(QUESTIONS, RESPONSES) == alone.score(QUESTIONS, RESPONSES, "f-logpi")
    assert reward.score(QUESTIONS, RESPONSES) == reward.score(QUESTIONS, RESPONSES, "mean")
    assert alone.score(QUESTIONS, RESPONSES) != pytest.approx(reward.score(QUESTIONS, RESPONSES))  # two scores


def test_a_run_without_reward_model_is_one_clear_error(run_dir, tmp_path):
    (tmp_path / "policy").symlink_to(run_dir / "policy")
    with pytest.raises(ModelError, match="no reward model"):
        load_reward(tmp_path)


def test_trl_reward_func_reads_plain_and_conversational_prompts(run_dir):
    fn = trl_reward_func(run_dir)
    want = load_reward(run_dir).score(QUESTIONS[:2], RESPONSES[:2])
    plain = fn([format_prompt(q, None) for q in QUESTIONS[:2]], RESPONSES[:2], question=QUESTIONS[:2])
    chat = fn([[{"role": "system", "content": "Be brief."}, {"role": "user", "content": q}] for q in QUESTIONS[:2]],
              [[{"role": "assistant", "content": r}] for r in RESPONSES[:2]], trainer_state=None)
    assert plain == pytest.approx(want, abs=1e-6) and chat == pytest.approx(want, abs=1e-6)
    assert fn.__name__ == "minirl_reward_mean"
    assert question_of("What is 2 + 2?") == "What is 2 + 2?"  # no question column: the prompt itself


@pytest.mark.parametrize("questions, responses, what", [
    ("abc", "xyz", "questions is of type str"),  # a lone string would be scored character by character
    (QUESTIONS[:1], RESPONSES[0], "responses is of type str"),
    ([None], RESPONSES[:1], "questions has an item of type NoneType"),
    (QUESTIONS[:1], [7], "responses has an item of type int"),
])
def test_score_refuses_what_is_not_lists_of_strings(run_dir, questions, responses, what):
    with pytest.raises(ValueError) as error:
        load_reward(run_dir).score(questions, responses)
    assert str(error.value) == f"questions and responses must be lists of strings, one per trace; {what}"


def test_token_rewards_refuses_what_is_not_a_string(run_dir):
    with pytest.raises(ValueError) as error:
        load_reward(run_dir).token_rewards(None, None)
    assert str(error.value) == "question and response must be strings, not NoneType and NoneType (`score` takes lists)"


def test_trl_reward_func_refuses_prompts_and_completions_it_cannot_read(run_dir):
    fn = trl_reward_func(run_dir)
    system_only = [{"role": "system", "content": "Be brief."}]
    for prompts, completions, kwargs, message in [
        ([system_only], RESPONSES[:1], {}, "a prompt must be a string or a list of messages with a user message "
                                           f"(the question); got {system_only!r}"),
        (QUESTIONS[:1], [[]], {}, "a completion must be a string or a list of messages, the last with a 'content'; "
                                  "got []"),
        (QUESTIONS[:2], RESPONSES[:2], {"question": QUESTIONS[:1]}, "2 prompts but a `question` column of 1"),
    ]:
        with pytest.raises(ValueError) as error:
            fn(prompts, completions, **kwargs)
        assert str(error.value) == message


@pytest.mark.parametrize("chat", [False, True], ids=["plain", "conversational"])
def test_grpo_trainer_takes_two_steps_on_the_learned_reward(run_dir, tmp_path, chat):
    """TRL's GRPOTrainer (micro policy, CPU) paid by the run's reward: plain prompts with a `question` column, or
    conversations (the run's tokenizer given a chat template) whose question is the user message."""
    pytest.importorskip("trl")
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from minirl.models import load_lm

    run = with_chat_template(run_dir, tmp_path / "run") if chat else run_dir
    model, tokenizer = load_lm(str(run / "policy"))
    rows = [{"prompt": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": q}]} if chat else
            {"prompt": format_prompt(q, tokenizer), "question": q} for q in QUESTIONS * 2]
    args = GRPOConfig(output_dir=str(tmp_path / "grpo"), max_steps=2, per_device_train_batch_size=4,
                      num_generations=2, max_completion_length=16, learning_rate=1e-3, use_cpu=True, bf16=False,
                      activation_checkpointing=False, report_to="none", save_strategy="no", logging_steps=1, seed=0)
    trainer = GRPOTrainer(model=model, reward_funcs=[trl_reward_func(run)], args=args,
                          train_dataset=Dataset.from_list(rows), processing_class=tokenizer)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer.train()
    logged = [entry["rewards/minirl_reward_mean/std"] for entry in trainer.state.log_history
              if "rewards/minirl_reward_mean/std" in entry]
    assert trainer.state.global_step == 2 and len(logged) == 2 and all(std > 0 for std in logged)
    assert any(not (before[k] == v).all() for k, v in model.state_dict().items())  # the policy moved


def with_chat_template(run_dir: Path, run: Path) -> Path:
    """A copy of the micro run whose tokenizer (policy and reward backbone) has a chat template."""
    from transformers import AutoTokenizer

    shutil.copytree(run_dir, run)
    tokenizer = AutoTokenizer.from_pretrained(str(run / "policy"))
    tokenizer.chat_template = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
                               "{% if add_generation_prompt %}<assistant>{% endif %}")
    for folder in (run / "policy", run / "reward" / "backbone"):
        tokenizer.save_pretrained(str(folder))
    return run


@pytest.mark.parametrize("batch_size", [0, -1, 2.5, True, None])
def test_a_batch_size_below_one_is_refused(run_dir, batch_size):
    reward = load_reward(run_dir)
    with pytest.raises(ValueError, match=f"batch_size must be a whole number of at least 1, not {batch_size!r}"):
        replace(reward, batch_size=batch_size)
    reward.batch_size = batch_size  # set after construction: refused when scoring, not a wrong number of scores
    with pytest.raises(ValueError, match="batch_size must be"):
        reward.score(QUESTIONS, RESPONSES)


def test_a_reward_built_from_paths_points_at_load_reward(run_dir):
    reward = load_reward(run_dir)
    with pytest.raises(ValueError, match=r"policy must be a loaded torch model, not str; .* load_reward\(path\)"):
        LearnedReward(str(run_dir), None, None)
    with pytest.raises(ValueError, match="tokenizer must be a loaded transformers tokenizer, not NoneType"):
        LearnedReward(reward.policy, None, reward.reward_model)
    with pytest.raises(ValueError, match="reward_model must be a loaded minirl RewardModel, not PosixPath"):
        LearnedReward(reward.policy, reward.tokenizer, run_dir / "reward")
