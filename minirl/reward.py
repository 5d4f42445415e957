"""The learned reward as a component: score any (question, response) with a trained run's reward model (M2, M5).

    reward = load_reward("runs/airl-tiny-s0")
    reward.token_rewards(question, response)  # [(token, reward), ...]: what `minirl inspect` colours
    reward.score(questions, responses)        # one number per trace: what `minirl rerank` ranks by
    trl_reward_func("runs/airl-tiny-s0")      # the same scores as a reward function for TRL's GRPOTrainer

Both views reuse the code the CLI runs: `rerank.score_texts` scores teacher-forced text, `localise.display_rewards`
gives the per-token reward shown to users (for the `token` head f_t - log pi(y_t), the discriminator's logit, M2),
and `rerank.question_scores` turns per-token rewards into one score by the names `minirl rerank` prints. A response
is scored as complete: an EOS is appended, as for every trace in minirl.

Nothing here imports TRL: `trl_reward_func` only has the signature TRL calls. It hands TRL one number per completion,
so GRPO there sees an outcome-level reward from a frozen reward model; minirl's own PPO (`minirl train --algo airl`)
keeps the reward dense, per token, and the discriminator training (docs/scaling_out.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from torch import nn
from transformers import PreTrainedTokenizerBase

from minirl import folders, runs
from minirl.localise import display_rewards
from minirl.models import ModelError, RewardModel
from minirl.rerank import AGGREGATORS, question_scores, score_texts

SCORES = (*AGGREGATORS, "f-logpi")  # the names `score` accepts: how `minirl rerank` names its rows


@dataclass
class LearnedReward:
    """A run's reward model with the policy and tokenizer it was trained against (the `token` head's reward, and
    `f-logpi`, subtract that policy's log-prob: M2)."""

    policy: nn.Module
    tokenizer: object  # a transformers tokenizer
    reward_model: RewardModel
    batch_size: int = 8  # responses scored per forward pass
    default_score: str = "mean"  # what `score` ranks by unless told: `default_score_of` the run

    def __post_init__(self) -> None:
        """Loaded models, not a run's path (`load_reward(path)` loads a run folder), and a usable batch size."""
        for name, kind, what in (("policy", nn.Module, "torch model"), ("tokenizer", PreTrainedTokenizerBase,
                                 "transformers tokenizer"), ("reward_model", RewardModel, "minirl RewardModel")):
            value = getattr(self, name)
            if not isinstance(value, kind):
                raise ValueError(f"{name} must be a loaded {what}, not {type(value).__name__}; a run folder's reward "
                                 "is load_reward(path)")
        check_batch_size(self.batch_size)

    def token_rewards(self, question: str, response: str) -> list[tuple[str, float]]:
        """Each response token (decoded alone, the final EOS included) with its reward as `minirl inspect` shows it:
        f_t - log pi(y_t) for the `token` head, z_t for the `scalar` head."""
        if not isinstance(question, str) or not isinstance(response, str):
            raise ValueError(f"question and response must be strings, not {type(question).__name__} and "
                             f"{type(response).__name__} (`score` takes lists)")
        result = score_texts(self.policy, self.tokenizer, [question], [response], self.reward_model)[0]
        return list(zip(result["tokens"], display_rewards(result, self.reward_model.head_kind), strict=True))

    def score_name(self, aggregate: str) -> str:
        """`aggregate` itself, or this reward's `default_score` for `auto`; an unknown name is a ValueError."""
        aggregate = self.default_score if aggregate == "auto" else aggregate
        if aggregate not in SCORES:
            raise ValueError(f"unknown aggregate {aggregate!r}; choose from {', '.join(SCORES)}")
        return aggregate

    def score(self, questions: list[str], responses: list[str], aggregate: str = "auto") -> list[float]:
        """One score per (question, response), as `minirl rerank` ranks: an aggregate of the learned reward f_t
        (`mean`, `sum`, `min`, `last`, `discounted`, M5) or `f-logpi`, mean f - mean log pi; `auto` is the run's
        `default_score`."""
        aggregate = self.score_name(aggregate)
        check_batch_size(self.batch_size)  # again: it may have been set since
        check_texts(questions, responses)
        if len(questions) != len(responses):
            raise ValueError(f"{len(questions)} questions but {len(responses)} responses")
        scores = []
        for start in range(0, len(questions), self.batch_size):
            chunk = slice(start, start + self.batch_size)
            results = score_texts(self.policy, self.tokenizer, questions[chunk], responses[chunk], self.reward_model)
            samples = [{"rewards": r["rewards"], "tokens": r["tokens"],
                        "logprob": sum(r["logprobs"]) / len(r["logprobs"])} for r in results]
            scores += question_scores({"samples": samples}, aggregate)
        return scores


def check_batch_size(batch_size: int) -> None:
    """Responses scored per forward pass: a whole number, at least 1."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a whole number of at least 1, not {batch_size!r}")


def check_texts(questions: list[str], responses: list[str]) -> None:
    """`score`'s inputs are lists of strings: a lone string would be scored character by character."""
    for name, texts in (("questions", questions), ("responses", responses)):
        if not isinstance(texts, (list, tuple)):
            raise ValueError(f"questions and responses must be lists of strings, one per trace; {name} is of type "
                             f"{type(texts).__name__}")
        wrong = [type(t).__name__ for t in texts if not isinstance(t, str)]
        if wrong:
            raise ValueError(f"questions and responses must be lists of strings, one per trace; {name} has an item "
                             f"of type {wrong[0]}")
        for i, text in enumerate(texts):
            if name == "questions" and not text.strip():  # an empty response is scored: its EOS alone (TRL has them)
                raise ValueError(f"{name}[{i}] is empty: a trace is scored as the answer to a question")
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as e:  # a lone surrogate: no tokenizer can read it
                raise ValueError(f"{name}[{i}] is not valid Unicode text (character {e.start})") from None


def load_reward(run: str | Path, reward_from: str | Path | None = None) -> LearnedReward:
    """The learned reward of a run folder: its reward/ model, scored against its policy/ and tokenizer (or the
    reward model of `reward_from`, another run with the same tokenizer, as `minirl rerank --reward-from`)."""
    policy, tokenizer, reward_model, _ = runs.load_run(run, reward_from)
    if reward_model is None:
        raise ModelError(f"{run}: no reward model in this run (no reward/ inside); train it with --algo airl")
    return LearnedReward(policy, tokenizer, reward_model.eval(), default_score=run_default_score(run, reward_from))


def run_default_score(run: str | Path, reward_from: str | Path | None = None) -> str:
    """`default_score_of` the run that trained the reward (`reward_from`, else `run`); `mean` without its config."""
    folder = Path(reward_from or run)
    return default_score_of(folders.saved_config(folder) if (folder / "config.json").is_file() else {})


def default_score_of(config: dict) -> str:
    """What a reward ranks by unless told (M2, M5). A reward trained alone against a fixed policy (`--algo reward`)
    is the discriminator's logit f - log pi: the contrast it learned (SmolLM2, 100 held-out GSM8K problems: expert
    above SmolLM2's own wrong answer 0.99 by f - log pi, 0.55 by f, 0.49 by log-prob; lab notes). A reward trained
    beside its policy (AIRL) is ranked by mean f: there the policy has moved towards the reward, so on its samples
    f - log pi tends to 0 (D -> 1/2) and loses the signal (tiny preset, seed 0, 400 demos, best-of-8 on 200
    questions: mean f 0.865, f - log pi 0.760, log-prob 0.845)."""
    return "f-logpi" if config.get("form", "airl") == "airl" and config.get("algo") == "reward" else "mean"


# ---------------------------------------------------------------- TRL (`pip install -e '.[trl]'`)


def trl_reward_func(run: str | Path, aggregate: str = "auto", reward_from: str | Path | None = None) -> Callable:
    """A reward function for TRL's GRPOTrainer (`reward_funcs=[...]`): (prompts, completions, **kwargs) ->
    one float per completion, `LearnedReward.score` of (question, completion).

    TRL passes prompts and completions as plain strings or, for conversational data, as lists of {"role",
    "content"} messages. The reward model was trained on minirl's own prompt (`data.format_prompt`), so the
    question is recovered and formatted again: the last user message of a conversational prompt; for a plain
    prompt the dataset's `question` column when it has one (TRL passes every column through), else the prompt."""
    reward = load_reward(run, reward_from)
    aggregate = reward.score_name(aggregate)

    def learned_reward(prompts: list, completions: list, **kwargs) -> list[float]:
        columns = kwargs.get("question") or [None] * len(prompts)
        if len(columns) != len(prompts):
            raise ValueError(f"{len(prompts)} prompts but a `question` column of {len(columns)}")
        questions = [question_of(p, column) for p, column in zip(prompts, columns)]
        responses = [response_of(c) for c in completions]
        return reward.score(questions, responses, aggregate)

    learned_reward.__name__ = f"minirl_reward_{aggregate.replace('-', '_')}"  # TRL logs rewards/<name>/mean
    return learned_reward


def question_of(prompt: str | list[dict], column: str | None = None) -> str:
    """The question inside a TRL prompt: the last user message of a conversation, else the `question` column,
    else the prompt text itself; a prompt without any is a ValueError."""
    if isinstance(prompt, str):
        return column if column is not None else prompt
    messages = prompt if isinstance(prompt, list) else []
    users = [m.get("content") for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    if not users:
        raise ValueError(f"a prompt must be a string or a list of messages with a user message (the question); "
                         f"got {prompt!r}")
    return users[-1]


def response_of(completion: str | list[dict]) -> str:
    """The text of a TRL completion: the string itself, or the content of a conversation's last message."""
    if isinstance(completion, str):
        return completion
    last = completion[-1] if isinstance(completion, list) and completion else None
    if not isinstance(last, dict) or "content" not in last:
        raise ValueError(f"a completion must be a string or a list of messages, the last with a 'content'; "
                         f"got {completion!r}")
    return last["content"]
