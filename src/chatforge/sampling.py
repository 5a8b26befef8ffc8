"""Sampling for rating: K diverse responses per prompt from a policy, written as rating tasks.

This is step 2 of the recipe: for each prompt the current policy answers K times (4 to 9 in InstructGPT) at a
sampling temperature, and a rater (a person in the UI, or the simulated panel) ranks the answers. Identical
answers carry no preference, so duplicates are re-drawn a few times and a prompt with fewer than two distinct
answers is skipped (and counted).

Prompt sources are the SFT data sources by name (`behaviours`, `sharegpt`, `chitchat`), a JSONL file of
conversations, or a mix of them (`load_prompt_mix`: `behaviours=0.7,sharegpt=0.3`). Where a source has a reference answer it travels with the task (the
behaviour demonstration, ShareGPT's original ChatGPT answer, MT-Bench's reference) for the raters to compare with.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from chatforge.chat import Conversation, Message
from chatforge.data.comparisons import Response
from chatforge.data.tasks import RatingTask
from chatforge.generation import SamplingParams, TorchEngine


@dataclass(frozen=True)
class PromptItem:
    id: str
    context: tuple[Message, ...]  # ends with the user
    category: str | None = None
    reference: str | None = None
    source: str | None = None


def prompts_from_conversations(conversations: Iterable[Conversation]) -> Iterator[PromptItem]:
    """Cut each conversation before its last assistant reply; that reply becomes the reference answer."""
    for conv in conversations:
        messages = conv.messages
        reference = None
        if messages[-1].role == "assistant":
            reference = messages[-1].content
            messages = messages[:-1]
        if not messages or messages[-1].role != "user":
            continue
        category = conv.meta.get("category") if conv.meta else None
        yield PromptItem(conv.id or f"prompt-{len(messages)}", tuple(messages), category, reference, conv.source)


def load_prompts(source: str, *, seed: int = 0) -> list[PromptItem]:
    """Prompts from a named training source or a JSONL file (see the module docstring). Evaluation data (MT-Bench,
    the held-out harmful requests, held-out ShareGPT) is not a source here: prompts sampled for rating and RL are
    training data."""
    if source == "mtbench":
        raise ValueError("MT-Bench is evaluation data (chatforge eval); it is not used for rating or RL prompts")
    if source == "behaviours":
        from chatforge.data.behaviours import Behaviours

        return list(prompts_from_conversations(Behaviours("train", seed=seed)))
    path = Path(source)
    if path.suffix in (".jsonl", ".json") or path.exists():
        from chatforge.data.files import FileSource

        if not path.is_file():
            raise FileNotFoundError(f"prompt file {path} does not exist")
        return list(prompts_from_conversations(FileSource(path)))
    from chatforge.data.mixture import make_source

    return list(prompts_from_conversations(make_source(source, seed=seed)))


# Ordinary requests for rating and RL are single requests of moderate length: long multi-turn contexts cost the
# most compute and teach the least about how to answer.
MAX_PROMPT_CHARS = 800


def load_prompt_mix(spec: str, n: int, *, seed: int = 0) -> list[PromptItem]:
    """`n` prompts drawn from a mix of sources written like the SFT mixture (`behaviours=0.7,sharegpt=0.3`), in
    proportion to the weights, shuffled together (seeded). A source without enough prompts gives all it has."""
    from chatforge.data.filters import looks_english
    from chatforge.data.mixture import allocate, parse_mix

    entries = parse_mix(spec)
    total = sum(e.weight for e in entries)
    rng = random.Random(seed)
    chosen: list[PromptItem] = []
    for entry, count in zip(entries, allocate(n, [e.weight / total for e in entries]), strict=True):
        if entry.name == "behaviours":
            items = load_prompts(entry.name, seed=seed)
        else:  # ordinary requests: the first turn of a conversation, in English, its reply the reference
            from chatforge.data.mixture import make_source

            firsts = (
                Conversation(c.messages[:2], id=c.id, source=c.source, meta=c.meta)
                for c in make_source(entry.name, seed=seed)
                if len(c.messages) >= 2 and c.messages[0].role == "user" and c.messages[1].role == "assistant"
                and len(c.messages[0].content) <= MAX_PROMPT_CHARS and looks_english(c.messages[0].content)
            )
            items = list({i.context[0].content: i for i in prompts_from_conversations(firsts)}.values())
        rng.shuffle(items)
        chosen += items[:count]
    rng.shuffle(chosen)
    return chosen


@dataclass
class SamplingReport:
    tasks: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    redraws: int = 0

    def format(self) -> str:
        lines = [f"rating tasks written: {self.tasks} (duplicate answers re-drawn: {self.redraws})"]
        lines += [f"  skipped {n:5d}  {reason}" for reason, n in self.skipped.most_common()]
        return "\n".join(lines)


def sample_tasks(
    engine: TorchEngine,
    prompts: Iterable[PromptItem],
    *,
    k: int = 4,
    params: SamplingParams,
    model_name: str,
    batch_prompts: int = 4,
    max_prompt_tokens: int = 768,
    redraw_rounds: int = 2,
    report: SamplingReport | None = None,
) -> Iterator[RatingTask]:
    """Yield one rating task per prompt with `k` distinct sampled responses."""
    if not 2 <= k <= 9:
        raise ValueError(f"k must be between 2 and 9 (InstructGPT ranks 4 to 9), got {k}")
    report = report if report is not None else SamplingReport()
    rng = random.Random(params.seed)
    pending: list[tuple[PromptItem, list[int]]] = []

    def flush() -> Iterator[RatingTask]:
        answers: list[list[tuple[str, bool]]] = [[] for _ in pending]
        for round_ in range(redraw_rounds + 1):
            batch, owners = [], []
            for n, (_item, ids) in enumerate(pending):
                missing = k - len({text for text, _ in answers[n]})
                batch += [ids] * missing
                owners += [n] * missing
            if not batch:
                break
            if round_:
                report.redraws += len(batch)
            seeded = SamplingParams(
                max_new_tokens=params.max_new_tokens,
                temperature=params.temperature,
                top_p=params.top_p,
                top_k=params.top_k,
                stop=params.stop,
                seed=rng.randrange(2**31),
            )
            for owner, completion in zip(owners, engine.generate(batch, seeded), strict=True):
                text = completion.text.strip()
                if text and text not in {t for t, _ in answers[owner]}:
                    answers[owner].append((text, completion.finish_reason == "length"))
        for (item, _ids), got in zip(pending, answers, strict=True):
            if len(got) < 2:
                report.skipped["fewer than 2 distinct non-empty answers"] += 1
                continue
            report.tasks += 1
            yield RatingTask(
                id=item.id,
                context=item.context,
                responses=tuple(Response(text, model_name) for text, _ in got[:k]),
                category=item.category,
                reference=item.reference,
                truncated=tuple(cut for _, cut in got[:k]),
                meta={"source": item.source} if item.source else {},
            )
        pending.clear()

    for item in prompts:
        ids = engine.encode_chat(list(item.context))
        if len(ids) > max_prompt_tokens:
            report.skipped[f"prompt longer than {max_prompt_tokens} tokens"] += 1
            continue
        pending.append((item, ids))
        if len(pending) == batch_prompts:
            yield from flush()
    if pending:
        yield from flush()


def resolve_policy(path_or_name: str) -> str:
    """A run directory's chat checkpoint (`final/`), or the name/path as given."""
    path = Path(path_or_name)
    if (path / "final" / "config.json").is_file():
        return str(path / "final")
    return path_or_name

