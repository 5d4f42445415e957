"""Step 01 - the data: a miniature world whose base policy will be *confidently* wrong (method.md M1, M3, M9).

Run:  python tutorial/01_data.py          (a second; no model is trained)

What it prints, top to bottom:
  1. one word problem, its expert solution (M1) and the misconceived solutions a student holding each
     misconception would write: the wording cues ("half as many", "gives away") that trigger them;
  2. the sizes of the world's three disjoint parts: demonstrations, pretraining corpus, held-out test;
  3. the perturbed experts (M3): each rule of `perturb.PERTURBATIONS` applied once, the changed span marked;
  4. answer extraction: how a solution's final number is read and checked;
  5. the same on a real GSM8K problem, when MINIRL_GSM8K_DIR names a folder holding its test.jsonl.
"""

from __future__ import annotations

import random

from _common import GSM8K_DIR, pick

from minirl import data, perturb
from minirl.config import from_preset
from minirl.world import MISCONCEPTIONS, make_world


def marked(text: str, span: tuple[int, int]) -> str:
    """The line of `text` holding `span`, with the span between [[ ]], so the change stands out."""
    start = text.rfind("\n", 0, span[0]) + 1
    end = text.find("\n", span[1])
    end = len(text) if end < 0 else end
    return text[start: span[0]] + "[[" + text[span[0]: span[1]] + "]]" + text[span[1]: end]


# ---------------------------------------------------------------- 1. one problem, three solutions
# The world is drawn from one seed. Each template (half_total, three_step, ...) is a chain of 2-4 steps in
# GSM8K's format, `a op b = <<a op b=r>>r`, ending in `#### answer`. Its `cues` name the misconceptions its
# wording can trigger: the pretraining corpus applies each with probability `misconception_rate`, so a model
# trained on it learns "half as many -> multiply" as a *habit* tied to the words, not as a slip (M9).
rate = from_preset("tiny", "pretrain").misconception_rate  # the rate step 02 trains with
world = make_world(seed=0, n_demos=pick(400, 40), n_corpus=pick(20000, 300), n_test=500, misconception_rate=rate)
problem = next(p for p in world.test if p.kind == "three_step")  # the template with the most cues
print("== one problem of kind", problem.kind)
print(problem.question)
print("cues:", ", ".join(problem.cues), f"(all misconceptions: {', '.join(MISCONCEPTIONS)})")
print("\n-- expert solution (what a demonstration looks like, M1):")
print(problem.solution())
for cue in problem.cues:  # one misconception at a time; a wrong value flows into the later steps
    wrong = problem.solution(held={cue})
    print(f"\n-- misconceived solution, holding {cue!r}: answer {data.extract_answer(wrong):g} "
          f"instead of {problem.answer}")
    print(wrong)

# ---------------------------------------------------------------- 2. the three parts
# Disjoint by construction (no question appears twice). The corpus is what the base policy is pretrained on
# (step 02); the demonstrations are the only thing the reward model learns from (M1); test is held out.
print("\n== the world's three parts")
print(f"demonstrations (clean expert solutions): {len(world.demos)}")
print(f"pretraining corpus (misconceptions applied at rate {rate}): {len(world.corpus)}")
print(f"held-out test problems: {len(world.test)}")
shown = sum(sol != p.solution() for p, sol in world.corpus)
print(f"corpus solutions that hold at least one misconception: {shown} of {len(world.corpus)}")

# ---------------------------------------------------------------- 3. perturbed experts (M3)
# Hard negatives for the discriminator: an expert trace changed by one rule. The span of the first change is
# ground truth for error localisation (M7, step 06): "is the lowest-reward token inside it?"
print("\n== perturbed experts (M3): [[ ]] marks the first changed span")
expert = problem.solution()
rng = random.Random(0)
for kind in perturb.PERTURBATIONS:
    got = perturb.perturb(expert, rng, kind)
    if got is None:  # a rule may not apply (e.g. no operator between two digits)
        print(f"{kind:>9}: does not apply to this trace")
        continue
    text, span, _ = got
    print(f"{kind:>9}: {marked(expert, span)}")
    print(f"{'':>9}  {marked(text, span)}   answer now {data.extract_answer(text):g}")

# ---------------------------------------------------------------- 4. answer extraction
# Correctness is used only for evaluation (M1): the one number after the last `####`, else the last number in the text;
# anything unclear (`#### 7,2`, `#### 1/2`, an empty `####`) reads as None, which is never correct.
print("\n== answer extraction (data.extract_answer, data.is_correct)")
for text in ["Together they have 8+3 = <<8+3=11>>11 shells.\n#### 11", "so the answer is 1,234 apples", "#### $40.",
             "no number here"]:
    print(f"{text!r:>62} -> {data.extract_answer(text)}   correct vs 11: {data.is_correct(text, '#### 11')}")

# ---------------------------------------------------------------- 5. GSM8K
# The real data has the same format, so every later step would run on it unchanged (step 07).
print("\n== GSM8K")
if GSM8K_DIR is None or not (GSM8K_DIR / "test.jsonl").is_file():
    print("skipped: set MINIRL_GSM8K_DIR to a folder holding GSM8K's test.jsonl (offline), or run "
          "data.load_gsm8k('test') to download the split from the hub")
else:
    tasks = data.load_gsm8k(str(GSM8K_DIR / "test.jsonl"))
    task = tasks[1]
    print(f"{len(tasks)} test problems; problem 1:")
    print(task["question"])
    print(task["answer"])
    print("extracted answer:", data.extract_answer(task["answer"]))
    text, span, kind = perturb.perturb(task["answer"], random.Random(1))
    print(f"perturbed ({kind}): {marked(text, span)}")
