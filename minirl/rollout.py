"""Rollouts: batches of prompts and responses, and KV-cache sampling (method.md M4).

Every batch in minirl has one layout (`Batch`): prompts left-padded to a common length,
responses right-padded after them, `input_ids` [B, T]. `sample` is the lesson on KV-cache
decoding: one forward pass over the prompts, then one token at a time with the cache.
`sample_answers` samples N answers for a list of questions in memory-sized chunks; the
discriminator warm-up, evaluation, reranking and localisation all go through it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from minirl.config import NumericalError
from minirl.data import DataError, format_prompt
from minirl.logprobs import position_ids
from minirl.models import context_length


@dataclass
class Batch:
    """Prompts left-padded to `prompt_len`, responses right-padded after them."""

    input_ids: torch.Tensor  # [B, T] long
    attention_mask: torch.Tensor  # [B, T] 1 on real tokens
    response_mask: torch.Tensor  # [B, T] 1 on response tokens up to and including the first EOS
    prompt_len: int

    def to(self, device: torch.device) -> Batch:
        return Batch(self.input_ids.to(device), self.attention_mask.to(device), self.response_mask.to(device),
                     self.prompt_len)

    def select(self, index: torch.Tensor | list[int]) -> Batch:
        index = torch.as_tensor(index, device=self.input_ids.device)
        return Batch(self.input_ids[index], self.attention_mask[index], self.response_mask[index], self.prompt_len)

    def token_ids(self) -> list[tuple[list[int], list[int]]]:
        """(prompt ids, response ids) of every row with the padding dropped: exactly the tokens sampled (a
        truncated response has no EOS), ready for `make_batch`."""
        ids, attn, resp = self.input_ids.cpu(), self.attention_mask.cpu().bool(), self.response_mask.cpu().bool()
        P = self.prompt_len
        return [(row[:P][a[:P]].tolist(), row[P:][r[P:]].tolist()) for row, a, r in zip(ids, attn, resp)]

    def texts(self, tokenizer) -> list[str]:
        """The response text of each row (EOS and padding dropped)."""
        rows = [ids[m.bool()] for ids, m in zip(self.input_ids.cpu(), self.response_mask.cpu())]
        return [tokenizer.decode(r, skip_special_tokens=True) for r in rows]


def in_chunks(fn, batch: Batch, size: int):
    """fn(sub_batch, rows) over chunks of `size` rows, outputs concatenated along rows: scoring a
    whole rollout at once would hold [B, T, vocab] logits, too much for a 150k vocabulary."""
    outs = [fn(batch.select(rows), rows) for rows in torch.arange(len(batch.input_ids)).split(size)]
    if isinstance(outs[0], tuple):
        return tuple(None if parts[0] is None else torch.cat(parts) for parts in zip(*outs))
    return torch.cat(outs)


def micro_batches(rows: torch.Tensor, size: int) -> tuple[torch.Tensor, ...]:
    """`rows` (indices) in chunks of `size` (0: one chunk): the pieces of one optimiser step whose gradients are
    accumulated, so that the step's batch does not depend on how many rows fit in memory at once."""
    return rows.split(size) if size > 0 else (rows,)


def first_eos_mask(tokens: torch.Tensor, eos_id: int) -> torch.Tensor:
    """1 on every token up to and including the first EOS of each row, 0 after it, [B, R].
    Counting EOS *before* each position means a pad token equal to EOS hides nothing (M4)."""
    is_eos = (tokens == eos_id).long()
    return ((is_eos.cumsum(-1) - is_eos) == 0).long()


def make_batch(prompt_ids: list[list[int]], response_ids: list[list[int]], pad_id: int) -> Batch:
    P = max(len(p) for p in prompt_ids)
    R = max((len(r) for r in response_ids), default=0)
    rows, attn, resp = [], [], []
    for p, r in zip(prompt_ids, response_ids):
        rows.append([pad_id] * (P - len(p)) + p + r + [pad_id] * (R - len(r)))
        attn.append([0] * (P - len(p)) + [1] * (len(p) + len(r)) + [0] * (R - len(r)))
        resp.append([0] * P + [1] * len(r) + [0] * (R - len(r)))
    return Batch(torch.tensor(rows), torch.tensor(attn), torch.tensor(resp), P)


def text_ids(tokenizer, prompt: str, response: str | None = None) -> tuple[list[int], list[int]]:
    """(prompt ids, response ids) of a text pair, tokenized separately and EOS appended to the (complete)
    response, exactly as sampling produces them: the two paths see the same token ids."""
    prompt_ids = tokenizer(prompt, add_special_tokens=False).input_ids
    if response is None:
        return prompt_ids, []
    return prompt_ids, tokenizer(response, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]


def encode(tokenizer, prompts: list[str], responses: list[str] | None = None) -> Batch:
    """A batch of prompts and, when given, complete responses (see `text_ids`)."""
    pairs = [text_ids(tokenizer, p, None if responses is None else responses[i]) for i, p in enumerate(prompts)]
    return make_batch([p for p, _ in pairs], [r for _, r in pairs], tokenizer.pad_token_id)


def top_p_sample(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Sample from the smallest set of tokens whose probability reaches top_p. [B, V] -> [B]"""
    probs = torch.softmax(logits, dim=-1)
    if top_p < 1.0:
        sorted_p, order = probs.sort(dim=-1, descending=True)
        drop = sorted_p.cumsum(-1) - sorted_p > top_p  # keep the token that crosses top_p
        sorted_p = sorted_p.masked_fill(drop, 0.0)
        return order.gather(-1, torch.multinomial(sorted_p, 1)).squeeze(-1)
    return torch.multinomial(probs, 1).squeeze(-1)


@torch.no_grad()
def sample(lm: nn.Module, tokenizer, prompts: list[str], max_new_tokens: int,
           temperature: float = 1.0, top_p: float = 1.0, n: int = 1) -> Batch:
    """Batched sampling with the KV cache; temperature 0 means greedy. `n` samples of each prompt, neighbours in
    the batch ([len(prompts) * n] rows). One forward pass over the prompts fills the cache (the prefill), then
    one token at a time: each step feeds only the new token and reuses every earlier token's keys and values."""
    device = next(lm.parameters()).device
    batch = encode(tokenizer, prompts).to(device)
    out = lm(input_ids=batch.input_ids, attention_mask=batch.attention_mask,  # the prefill, once per prompt
             position_ids=position_ids(batch.attention_mask), use_cache=True, logits_to_keep=1)
    cache, logits = out.cache, out.logits[:, -1]  # logits: [P, V]
    if n > 1:  # the n samples of a prompt share its prefill: the cache is copied, not recomputed (speed only)
        cache.batch_repeat_interleave(n)
        logits, batch = logits.repeat_interleave(n, 0), batch.select(torch.arange(len(prompts)).repeat_interleave(n))
    mask, pos = batch.attention_mask, position_ids(batch.attention_mask)[:, -1:]
    finished = torch.zeros(len(mask), dtype=torch.bool, device=device)
    new_tokens = []
    for step in range(max_new_tokens):
        logits = logits.float() / (temperature if temperature > 0 else 1.0)  # [B, V]
        if not (logits < float("inf")).all():  # NaN or +inf (-inf masks a token): diverged weights, say so
            raise NumericalError("the policy's next-token logits are NaN or infinite")
        token = logits.argmax(-1) if temperature == 0 else top_p_sample(logits, top_p)
        token = token.masked_fill(finished, tokenizer.pad_token_id)
        mask = torch.cat([mask, (~finished).long()[:, None]], dim=1)  # the EOS itself is attended
        finished |= token == tokenizer.eos_token_id
        new_tokens.append(token)
        if finished.all() or step == max_new_tokens - 1:
            break
        pos = pos + 1
        out = lm(input_ids=token[:, None], attention_mask=mask, position_ids=pos, cache=cache, use_cache=True,
                 logits_to_keep=1)
        cache, logits = out.cache, out.logits[:, -1]
    response = torch.stack(new_tokens, dim=1)  # [B, R]
    response_mask = first_eos_mask(response, tokenizer.eos_token_id)
    return Batch(torch.cat([batch.input_ids, response], 1), torch.cat([batch.attention_mask, response_mask], 1),
                 F.pad(response_mask, (batch.prompt_len, 0)), batch.prompt_len)


def sample_answers(lm: nn.Module, tokenizer, questions: list[str], n: int, max_new_tokens: int,
                   temperature: float = 1.0, top_p: float = 1.0, batch_size: int = 256,
                   progress: bool = False) -> Iterator[tuple[list[int], Batch]]:
    """`n` samples of every question, about `batch_size` sequences at a time (whole questions: a question's samples
    are neighbours and share its prefill). Yields (question index of each row, sampled batch)."""
    per_chunk = max(batch_size // n, 1)  # questions per sampled batch
    with tqdm(total=len(questions) * n, desc="sampling", unit="sample", disable=not progress, leave=False) as bar:
        for start in range(0, len(questions), per_chunk):  # the bar is cleared on an error too, before its one line
            chunk = list(range(start, min(start + per_chunk, len(questions))))
            prompts = [format_prompt(questions[i], tokenizer) for i in chunk]
            yield [i for i in chunk for _ in range(n)], sample(lm, tokenizer, prompts, max_new_tokens, temperature,
                                                               top_p, n=n)
            bar.update(len(chunk) * n)


def check_fits_context(lm: nn.Module, tokenizer, texts: list[str], extra: int, what: str) -> None:
    """Refuse, in one line, a text (a prompt, or a prompt and its answer) that with `extra` more tokens (the ones
    to sample) outgrows the model's context: positions it never saw, and minutes of quadratic attention."""
    if not (limit := context_length(lm)) or not texts:
        return
    lengths = [len(ids) for ids in tokenizer(texts)["input_ids"]]
    if (n := max(lengths)) + extra > limit:
        raise DataError(f"{what} of {n} tokens{f' and {extra} to sample' if extra else ''} outgrows the model's "
                        f"context of {limit}")


def check_data_fits(lm: nn.Module, tokenizer, data: dict[str, list[dict]], max_new_tokens: int, where: str) -> None:
    """Every question of every part (with `max_new_tokens` to sample) and every demonstration (question and answer,
    trained on whole) must fit the model's context: `check_fits_context`."""
    prompts = {t["question"]: format_prompt(t["question"], tokenizer) for part in data.values() for t in part}
    check_fits_context(lm, tokenizer, list(prompts.values()), max_new_tokens, f"{where}: a question")
    check_fits_context(lm, tokenizer, [prompts[t["question"]] + t["answer"] for t in data["demos"]], 0,
                       f"{where}: a demonstration")
