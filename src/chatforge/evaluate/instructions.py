"""Instruction following with verifiable constraints, IFEval-style (Zhou et al. 2023), checked by code.

A general capability guard: does a model still do what ordinary requests ask after RLHF? Each prompt is an
everyday task with one to three constraints a program can check ("answer in all lowercase letters", "exactly 3
bullet points", "finish with the phrase ...", "wrap the whole reply in JSON"). The checks are IFEval's own
verifiers, from the `if-verifiable` package, used unchanged; the 66 prompts are ours
(`data/instructions.jsonl`, IFEval's record format: key, prompt, instruction_id_list, kwargs), written for small
chat models, since IFEval's own prompts come from a dataset hub this machine cannot reach and mostly ask for
300+ word essays no 135M model can write in a CPU budget.

Scores, as IFEval defines them:

* prompt-level strict: the share of prompts whose reply follows *every* instruction;
* instruction-level strict: the share of all instructions followed;
* loose: the same, but an instruction counts as followed if any of eight lightly cleaned variants of the reply
  follows it (markdown asterisks removed, first line removed, last line removed, and the combinations), which
  forgives "Sure, here you go:" openings and closing remarks.

Each comes with a Wilson interval (`chatforge.evaluate.stats`); `compare` runs the exact McNemar test on the
prompt-level verdicts of two reports on the same prompts.

Rules beyond IFEval, and why:

* An empty or looping reply fails every instruction, strict and loose. IFEval's verifiers check form only, and
  several pass the empty string or a loop ("no commas", "fewer than 15 words", "do not say X"; a loop of
  lowercase words is "all lowercase"). IFEval itself fails only the empty reply.
* The prompts are written so that generic non-answers fail at prompt level: every prompt whose constraints a
  refusal, "ok" or an echo of the prompt could satisfy also asks for something only an attempt at the task gives
  (a keyword, a length, bullet points, a closing phrase); a test holds every prompt to that.
* `language:response_language` and the lowercase / capital checks call `langdetect`, which is random unless
  seeded: we seed it (0), so a reply is always scored the same way.

Verifiers not used: `length_constraints:number_sentences` and `change_case:capital_word_frequency` need nltk's
punkt data, which the package does not ship and which cannot be downloaded offline (they raise LookupError);
IFBench's verifiers download nltk data when their module is imported. Loading a prompt set that asks for one of
them fails with a clear error.

Limits: the guard measures whether the form of a reply follows the request, not whether its content is good or
true; 66 prompts give intervals about +-11 points, enough to catch a collapse (the "I can't" policy),
not a 3-point drift.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from chatforge.chat import Conversation
from chatforge.evaluate.answering import greedy_completions, write_json
from chatforge.evaluate.judges import is_loop as is_degenerate
from chatforge.evaluate.stats import McNemar, Proportion, mcnemar, pass_rate
from chatforge.generation import TorchEngine

PROMPTS_FILE = Path(__file__).parent / "data" / "instructions.jsonl"
DEFAULT_MAX_NEW_TOKENS = 192
# IFEval verifiers that need nltk data (punkt) the package does not ship; they fail offline.
NEEDS_NLTK_DATA = frozenset({"length_constraints:number_sentences", "change_case:capital_word_frequency"})


class InstructionError(ValueError):
    """A prompt set or a saved report that cannot be scored as it is."""


@dataclass(frozen=True)
class _Verifiers:
    registry: dict[str, Callable[[str], Any]]  # instruction id -> checker class
    loose_variants: Callable[[str], list[str]]


@cache
def _verifiers() -> _Verifiers:
    """IFEval's checker registry and its loose-scoring transformations, from the installed `if-verifiable`.

    The package's own ``__init__`` imports `datasets` for a hub loader we never call; we run only its IFEval
    modules: the package object is created without running ``__init__``, the two modules are imported, and the
    bare package is taken out of ``sys.modules`` again so that a later ``import if_verifiable`` gets the real one.
    """
    found = importlib.util.find_spec("if_verifiable")
    if found is None:
        raise InstructionError(
            "the instruction-following guard needs IFEval's verifiers: pip install --no-deps if-verifiable==0.1.2 "
            "nltk langdetect immutabledict"
        )
    import langdetect

    langdetect.DetectorFactory.seed = 0  # langdetect samples; seeded, the same reply always gets the same verdict
    loaded_before = "if_verifiable" in sys.modules
    if not loaded_before:
        sys.modules["if_verifiable"] = importlib.util.module_from_spec(found)
    try:
        registry = importlib.import_module("if_verifiable.ifeval.instructions_registry")
        common = importlib.import_module("if_verifiable.common")
    finally:
        if not loaded_before:
            del sys.modules["if_verifiable"]
    usable = {k: v for k, v in registry.INSTRUCTION_DICT.items() if k not in NEEDS_NLTK_DATA}
    return _Verifiers(usable, common.get_loose_transformations)


def instruction_ids() -> list[str]:
    """The IFEval instruction ids this guard can check offline."""
    return sorted(_verifiers().registry)


def _same(given: Any, used: Any) -> bool:
    """Whether a checker kept the argument it was given (checkers normalise: sort keyword lists, strip and
    lowercase words; an invalid or missing value is silently replaced by a random one, which we must refuse)."""
    if isinstance(given, list):
        return isinstance(used, list | tuple) and sorted(map(str.lower, given)) == sorted(map(str.lower, used))
    if isinstance(given, str):
        return isinstance(used, str) and given.strip().lower() == used.strip().lower()
    return bool(given == used)


def _checker(instruction_id: str, kwargs: dict[str, Any]) -> Any:
    """A built IFEval checker, refusing arguments it would not use as given."""
    registry = _verifiers().registry
    if instruction_id not in registry:
        why = "needs nltk data this machine does not have" if instruction_id in NEEDS_NLTK_DATA else "is not an IFEval id"
        raise InstructionError(f"instruction {instruction_id!r} {why}; usable: {', '.join(sorted(registry))}")
    checker = registry[instruction_id](instruction_id)
    expected = set(checker.get_instruction_args_keys())
    if set(kwargs) != expected:
        raise InstructionError(
            f"instruction {instruction_id!r} takes exactly the arguments {sorted(expected)}, got {sorted(kwargs)}"
        )
    if any(v is None for v in kwargs.values()):
        raise InstructionError(f"instruction {instruction_id!r}: arguments must not be null ({kwargs})")
    try:
        checker.build_description(**kwargs)
    except (TypeError, ValueError) as err:
        raise InstructionError(f"instruction {instruction_id!r}: {err}") from None
    used = checker.get_instruction_args() or {}
    for name, value in kwargs.items():
        if not _same(value, used.get(name)):
            raise InstructionError(f"instruction {instruction_id!r}: argument {name}={value!r} is not valid")
    return checker


@dataclass(frozen=True)
class InstructionPrompt:
    key: str
    prompt: str
    instruction_ids: tuple[str, ...]
    kwargs: tuple[dict[str, Any], ...]

    def conversation(self) -> Conversation:
        return Conversation.from_messages(
            [{"role": "user", "content": self.prompt}], id=self.key, source="instructions"
        )


def parse_prompt(record: Any, where: str = "record") -> InstructionPrompt:
    """One IFEval-format record, with every instruction built once to check its arguments."""
    if not isinstance(record, dict):
        raise InstructionError(f"{where}: expected a JSON object, got {type(record).__name__}")
    missing = [k for k in ("key", "prompt", "instruction_id_list", "kwargs") if k not in record]
    if missing:
        raise InstructionError(f"{where}: missing {', '.join(missing)}")
    ids, kwargs = record["instruction_id_list"], record["kwargs"]
    if not (isinstance(ids, list) and ids and all(isinstance(i, str) for i in ids)):
        raise InstructionError(f"{where}: instruction_id_list must be a non-empty list of ids")
    if not (isinstance(kwargs, list) and len(kwargs) == len(ids) and all(isinstance(k, dict) for k in kwargs)):
        raise InstructionError(f"{where}: kwargs must be a list of objects, one per instruction ({len(ids)})")
    if not isinstance(record["prompt"], str) or not record["prompt"].strip():
        raise InstructionError(f"{where}: prompt must be a non-empty string")
    if len(set(ids)) != len(ids):
        raise InstructionError(f"{where}: an instruction id appears twice")
    try:
        for instruction_id, args in zip(ids, kwargs, strict=True):
            _checker(instruction_id, args)
    except InstructionError as err:
        raise InstructionError(f"{where}: {err}") from None
    return InstructionPrompt(str(record["key"]), record["prompt"], tuple(ids), tuple(dict(k) for k in kwargs))


def load_prompts(path: str | Path = PROMPTS_FILE) -> list[InstructionPrompt]:
    """The prompt set (default: the packaged one), validated."""
    prompts: list[InstructionPrompt] = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise InstructionError(f"{path}:{number}: not valid JSON ({err.msg})") from None
            prompts.append(parse_prompt(record, f"{path}:{number}"))
    keys = [p.key for p in prompts]
    duplicates = sorted({k for k in keys if keys.count(k) > 1})
    if duplicates:
        raise InstructionError(f"{path}: duplicate keys {', '.join(duplicates)}")
    if not prompts:
        raise InstructionError(f"{path}: no prompts")
    return prompts


@dataclass(frozen=True)
class Verdict:
    instruction_id: str
    strict: bool
    loose: bool


def check(prompt: InstructionPrompt, reply: str) -> list[Verdict]:
    """Strict and loose verdicts for each of the prompt's instructions on one reply."""
    if is_degenerate(reply):
        return [Verdict(i, False, False) for i in prompt.instruction_ids]
    variants = [v for v in _verifiers().loose_variants(reply) if v.strip()]
    verdicts = []
    for instruction_id, kwargs in zip(prompt.instruction_ids, prompt.kwargs, strict=True):
        checker = _checker(instruction_id, kwargs)
        strict = bool(checker.check_following(reply))
        loose = strict or any(bool(checker.check_following(v)) for v in variants)
        verdicts.append(Verdict(instruction_id, strict, loose))
    return verdicts


@dataclass
class PromptResult:
    key: str
    prompt: str
    reply: str
    finish_reason: str | None  # "length": the reply was cut at max_new_tokens
    verdicts: list[Verdict]

    @property
    def strict(self) -> bool:
        return all(v.strict for v in self.verdicts)

    @property
    def loose(self) -> bool:
        return all(v.loose for v in self.verdicts)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "strict": self.strict, "loose": self.loose}


@dataclass
class InstructionsReport:
    model: str
    max_new_tokens: int
    results: list[PromptResult] = field(default_factory=list)

    def metrics(self) -> dict[str, Proportion]:
        """The four IFEval accuracies with Wilson intervals."""
        verdicts = [v for r in self.results for v in r.verdicts]
        return {
            "prompt_strict": pass_rate([r.strict for r in self.results]),
            "prompt_loose": pass_rate([r.loose for r in self.results]),
            "instruction_strict": pass_rate([v.strict for v in verdicts]),
            "instruction_loose": pass_rate([v.loose for v in verdicts]),
        }

    def per_instruction(self) -> dict[str, Proportion]:
        """Strict pass rate of each instruction id."""
        by_id: dict[str, list[bool]] = defaultdict(list)
        for r in self.results:
            for v in r.verdicts:
                by_id[v.instruction_id].append(v.strict)
        return {i: pass_rate(passes) for i, passes in sorted(by_id.items())}

    def format(self) -> str:
        truncated = sum(r.finish_reason == "length" for r in self.results)
        lines = [
            f"instruction following for {self.model}: {len(self.results)} prompts, greedy, "
            f"max_new_tokens={self.max_new_tokens} ({truncated} replies cut at the limit)"
        ]
        for name, value in self.metrics().items():
            lines.append(f"  {name:20} {value.format()}")
        lines.append("  per instruction (strict):")
        for name, value in self.per_instruction().items():
            lines.append(f"    {name:46} {value.format()}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "max_new_tokens": self.max_new_tokens,
            "metrics": {k: v.to_dict() for k, v in self.metrics().items()},
            "per_instruction": {k: v.to_dict() for k, v in self.per_instruction().items()},
            "results": [r.to_dict() for r in self.results],
        }

    def write_json(self, path: str | Path) -> None:
        write_json(path, self.to_dict())


def score(prompt: InstructionPrompt, reply: str, finish_reason: str | None = None) -> PromptResult:
    return PromptResult(prompt.key, prompt.prompt, reply, finish_reason, check(prompt, reply))


def evaluate_instructions(
    engine: TorchEngine,
    prompts: Sequence[InstructionPrompt] | None = None,
    *,
    model_name: str = "model",
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    batch_size: int = 16,
    on_batch: Callable[[int, int], None] | None = None,
) -> InstructionsReport:
    """Answer each prompt once, greedily, and check every reply (default prompts: the packaged set).
    ``on_batch(done, total)`` is told after each batch (for progress)."""
    prompts = load_prompts() if prompts is None else list(prompts)
    report = InstructionsReport(model_name, max_new_tokens)
    completions = greedy_completions(
        engine, [p.conversation() for p in prompts], max_new_tokens=max_new_tokens, batch_size=batch_size, on_batch=on_batch
    )
    for prompt, completion in zip(prompts, completions, strict=True):
        report.results.append(score(prompt, completion.text, completion.finish_reason))
    return report


def rescore(path: str | Path, prompts: Sequence[InstructionPrompt] | None = None) -> InstructionsReport:
    """Check the replies saved in a report JSON again (no generation), against the prompts they answered."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        by_key = {p.key: p for p in (load_prompts() if prompts is None else prompts)}
        report = InstructionsReport(str(data["model"]), int(data["max_new_tokens"]))
        for r in data["results"]:
            if r["key"] not in by_key:
                raise InstructionError(f"{path}: reply to prompt {r['key']!r}, which is not in the prompt set")
            report.results.append(score(by_key[r["key"]], str(r["reply"]), r.get("finish_reason")))
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as err:
        raise InstructionError(f"{path}: not an instruction-following report ({err})") from None
    return report


def compare(a: InstructionsReport, b: InstructionsReport, *, seed: int = 0) -> McNemar:
    """Prompt-level strict verdicts of B against A on the prompts both answered (exact McNemar test and a paired
    bootstrap interval of the difference)."""
    a_by_key = {r.key: r.strict for r in a.results}
    b_by_key = {r.key: r.strict for r in b.results}
    shared = [k for k in a_by_key if k in b_by_key]
    if not shared:
        raise InstructionError("the two reports share no prompts")
    return mcnemar([a_by_key[k] for k in shared], [b_by_key[k] for k in shared], seed=seed)
