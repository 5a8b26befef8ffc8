"""The SFT mixture: conversations drawn from several sources in given proportions, filtered, with a report.

A mix is written `sharegpt=0.6,chitchat=0.2,behaviours=0.2`: source names with positive weights, normalised to
shares (so `sharegpt=3,chitchat=1` is 75/25). Names are the packaged sources (`sharegpt`, `chitchat`,
`behaviours`, and the eval-only `mtbench`), or files: `file:PATH` (or a bare path ending in .jsonl, .json or
.parquet), `edits:PATH` for edited answers, `hf:NAME` for a Hugging Face dataset.

Building the mixture:

1. Each source's conversations are shuffled with a seed derived from the mixture seed and the source's name (so
   adding a source does not change what is drawn from the others).
2. With a `size`, each source gets a quota of `size * share`, rounded so the quotas add up to `size`
   (largest remainders). Candidates are examined in shuffled order until the quota is filled, each one dropped
   if it is *invalid* (not a training example: it must end with an assistant reply), a *duplicate* of one
   already kept (normalised text, across all sources), not English (*language*, see `filters.py`), or, after
   the tokenizer's chat template, *too long* (over `max_tokens`) or *too short* (under `min_assistant_tokens`
   of assistant tokens). Token lengths come from `chat.encode_conversation`, exactly what SFT trains on.
3. If a source runs out before its quota, the other sources are cut back (*trimmed*) so the proportions
   still hold, and the report says so. Without a `size`, every candidate is examined and the mixture is the
   largest one the sources can fill in proportion.
4. The kept conversations are interleaved in a seeded random order.

Proportions therefore match the weights to within one conversation per source.
"""

from __future__ import annotations

import json
import math
import random
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chatforge.chat import Conversation, ConversationError, encode_conversation, validate_messages
from chatforge.data.base import DataError, Source, SourceStats
from chatforge.data.behaviours import Behaviours
from chatforge.data.chitchat import ChitChat
from chatforge.data.edits import Edits
from chatforge.data.files import SUFFIXES, FileSource, HFDataset
from chatforge.data.filters import conversation_looks_english, duplicate_key
from chatforge.data.mtbench import MTBench
from chatforge.data.sharegpt import ShareGPT

DROP_REASONS = ("invalid", "duplicate", "language", "too_long", "too_short")
EXAMPLE_SPEC = "sharegpt=0.6,chitchat=0.2,behaviours=0.2"

# Packaged sources by name; each factory takes the mixture seed.
PACKAGED_SOURCES: dict[str, Callable[[int], Source]] = {
    "sharegpt": lambda seed: ShareGPT(),
    "chitchat": lambda seed: ChitChat(),
    "behaviours": lambda seed: Behaviours("train", seed=seed),
    "mtbench": lambda seed: MTBench(),
}
# Sources named by a prefix and a path or id.
PREFIXED_SOURCES: dict[str, Callable[[str], Source]] = {
    "file": lambda path: FileSource(path),
    "edits": lambda path: Edits(path),
    "hf": lambda name: HFDataset(name),
}


class MixSpecError(DataError):
    """A mix spec that cannot be used; the message says which part and why."""


# --------------------------------------------------------------------------------------------------------------
# Mix specs
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MixEntry:
    name: str
    weight: float


def known_sources_text() -> str:
    names = ", ".join(sorted(PACKAGED_SOURCES))
    return f"{names}, or file:PATH (.jsonl/.json/.parquet), edits:PATH, hf:NAME"


def check_source_name(name: str) -> None:
    """Raise MixSpecError unless `name` is a packaged source, a prefixed source, or a data file path."""
    if name in PACKAGED_SOURCES:
        return
    prefix, sep, rest = name.partition(":")
    if sep and prefix in PREFIXED_SOURCES:
        if not rest:
            raise MixSpecError(f"source {name!r} needs a path or name after '{prefix}:'")
        return
    if name.lower().endswith(SUFFIXES):
        return
    raise MixSpecError(f"unknown source {name!r} in the mix spec; known sources: {known_sources_text()}")


def parse_mix(spec: str) -> list[MixEntry]:
    """Parse `name=weight,name=weight,...`, checking every name and weight. A single bare name is that source
    alone (`sharegpt` means `sharegpt=1`)."""
    if not spec or not spec.strip():
        raise MixSpecError(f"the mix spec is empty; write it like {EXAMPLE_SPEC!r}")
    if "=" not in spec and "," not in spec:
        spec = f"{spec.strip()}=1"
    entries: list[MixEntry] = []
    for raw in spec.split(","):
        item = raw.strip()
        if not item:
            raise MixSpecError(f"empty item in the mix spec {spec!r} (a doubled or trailing comma?)")
        name, sep, weight_text = item.rpartition("=")
        name, weight_text = name.strip(), weight_text.strip()
        if not sep or not name:
            raise MixSpecError(f"mix spec item {item!r} is not name=weight (e.g. 'sharegpt=0.6')")
        try:
            weight = float(weight_text)
        except ValueError:
            raise MixSpecError(f"the weight of {name!r} is not a number: {weight_text!r}") from None
        if not math.isfinite(weight) or weight <= 0:
            raise MixSpecError(f"the weight of {name!r} must be a positive number, not {weight_text}")
        check_source_name(name)
        if any(entry.name == name for entry in entries):
            raise MixSpecError(f"source {name!r} appears twice in the mix spec")
        entries.append(MixEntry(name, weight))
    return entries


def make_source(name: str, *, seed: int = 0) -> Source:
    """The source a mix-spec name refers to."""
    check_source_name(name)
    if name in PACKAGED_SOURCES:
        return PACKAGED_SOURCES[name](seed)
    prefix, sep, rest = name.partition(":")
    if sep and prefix in PREFIXED_SOURCES:
        return PREFIXED_SOURCES[prefix](rest)
    return FileSource(name)


def allocate(total: int, shares: Sequence[float]) -> list[int]:
    """Split `total` into integer parts proportional to `shares` that add up to `total` (largest remainders)."""
    exact = [total * share for share in shares]
    parts = [math.floor(x) for x in exact]
    by_remainder = sorted(range(len(shares)), key=lambda i: (exact[i] - parts[i], -i), reverse=True)
    for i in by_remainder[: total - sum(parts)]:
        parts[i] += 1
    return parts


# --------------------------------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------------------------------


@dataclass
class SourceReport:
    name: str
    weight: float
    share: float  # requested share of the output
    quota: int | None  # requested number of conversations (None when the mixture had no size)
    available: int = 0  # conversations the source yielded
    examined: int = 0  # of those, how many were drawn and checked
    kept: int = 0  # in the output
    dropped: Counter[str] = field(default_factory=Counter)  # by DROP_REASONS
    trimmed: int = 0  # passed every filter but cut so that proportions hold
    reading: SourceStats = field(default_factory=SourceStats)  # what reading the source skipped and repaired

    def to_dict(self, total: int) -> dict[str, Any]:
        return {
            "name": self.name,
            "weight": self.weight,
            "share": self.share,
            "actual_share": self.kept / total if total else 0.0,
            "quota": self.quota,
            "available": self.available,
            "examined": self.examined,
            "kept": self.kept,
            "dropped": {reason: self.dropped.get(reason, 0) for reason in DROP_REASONS},
            "trimmed": self.trimmed,
            "reading": self.reading.to_dict(),
        }


@dataclass
class MixReport:
    sources: list[SourceReport]
    size: int
    requested_size: int | None
    seed: int
    max_tokens: int | None
    min_assistant_tokens: int
    language: str | None
    tokenizer: str | None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "size": self.size,
            "requested_size": self.requested_size,
            "seed": self.seed,
            "filters": {
                "max_tokens": self.max_tokens,
                "min_assistant_tokens": self.min_assistant_tokens,
                "language": self.language,
                "tokenizer": self.tokenizer,
            },
            "sources": [s.to_dict(self.size) for s in self.sources],
            "notes": list(self.notes),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False)

    def write_json(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_json() + "\n", encoding="utf-8")
        return path

    def format(self) -> str:
        """A plain-text table for the terminal."""
        requested = f" (requested {self.requested_size})" if self.requested_size is not None else ""
        length = "not checked (no tokenizer)" if self.tokenizer is None else (
            f"at most {self.max_tokens} tokens, at least {self.min_assistant_tokens} assistant tokens "
            f"({self.tokenizer})"
        )
        lines = [
            f"mixture: {self.size} conversations{requested}, seed {self.seed}",
            f"filters: length {length}; language {self.language or 'any'}; duplicates by normalised text",
            "",
        ]
        header = ["source", "weight", "share", "actual", "kept", "quota", "examined", *DROP_REASONS, "trimmed"]
        rows = [header]
        for s in self.sources:
            actual = s.kept / self.size if self.size else 0.0
            rows.append(
                [
                    s.name,
                    f"{s.weight:g}",
                    f"{s.share:.1%}",
                    f"{actual:.1%}",
                    str(s.kept),
                    "-" if s.quota is None else str(s.quota),
                    str(s.examined),
                    *(str(s.dropped.get(reason, 0)) for reason in DROP_REASONS),
                    str(s.trimmed),
                ]
            )
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        for row in rows:
            cells = [row[0].ljust(widths[0])] + [cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True)]
            lines.append("  ".join(cells).rstrip())
        for s in self.sources:
            lines.append("")
            lines.append(f"reading {s.name}:")
            lines.append(s.reading.format())
        if self.notes:
            lines.append("")
            lines.extend(f"note: {note}" for note in self.notes)
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format()


@dataclass
class MixResult:
    conversations: list[Conversation]
    report: MixReport


# --------------------------------------------------------------------------------------------------------------
# The mixture
# --------------------------------------------------------------------------------------------------------------


class Mixture:
    """Sources with weights, and the filters every drawn conversation must pass. `build()` does the work."""

    def __init__(
        self,
        sources: str | Mapping[str, float] | Sequence[tuple[str | Source, float]],
        *,
        tokenizer: Any = None,
        size: int | None = None,
        max_tokens: int | None = 2048,
        min_assistant_tokens: int = 1,
        language: str | None = "en",
        seed: int = 0,
        allow_eval: bool = False,
    ) -> None:
        if isinstance(sources, str):
            pairs: list[tuple[str | Source, float]] = [(e.name, e.weight) for e in parse_mix(sources)]
        elif isinstance(sources, Mapping):
            pairs = list(sources.items())
        else:
            pairs = list(sources)
        if not pairs:
            raise MixSpecError("a mixture needs at least one source")
        if size is not None and size < 0:
            raise ValueError(f"size must be a non-negative number of conversations, not {size}")
        if language not in (None, "en"):
            raise ValueError(f"language {language!r} is not supported: the only language filter is 'en' (or None)")
        self.entries: list[tuple[str, Source, float]] = []
        for item, weight in pairs:
            source = make_source(item, seed=seed) if isinstance(item, str) else item
            name = item if isinstance(item, str) else source.name
            if not (isinstance(weight, (int, float)) and math.isfinite(weight) and weight > 0):
                raise MixSpecError(f"the weight of {name!r} must be a positive number, not {weight!r}")
            if any(name == existing for existing, _, _ in self.entries):
                raise MixSpecError(f"source {name!r} appears twice in the mixture")
            if source.eval_only and not allow_eval:
                raise MixSpecError(
                    f"{name!r} is an evaluation set; training on it would spoil the evaluation "
                    "(pass allow_eval=True if that is really meant)"
                )
            self.entries.append((name, source, float(weight)))
        self.tokenizer = tokenizer
        self.size = size
        self.max_tokens = max_tokens
        self.min_assistant_tokens = min_assistant_tokens
        self.language = language
        self.seed = seed

    def build(self) -> MixResult:
        total_weight = sum(weight for _, _, weight in self.entries)
        shares = [weight / total_weight for _, _, weight in self.entries]
        quotas = allocate(self.size, shares) if self.size is not None else [None] * len(shares)
        seen: set[str] = set()
        kept: list[list[Conversation]] = []
        reports: list[SourceReport] = []
        for (name, source, weight), share, quota in zip(self.entries, shares, quotas, strict=True):
            source_report = SourceReport(name, weight, share, quota)
            kept.append(self._draw(source, quota, seen, source_report))
            reports.append(source_report)

        size, notes = self._proportional_size(shares, [len(k) for k in kept], reports)
        final_counts = allocate(size, shares)
        conversations: list[Conversation] = []
        for source_report, drawn, count in zip(reports, kept, final_counts, strict=True):
            source_report.trimmed = len(drawn) - count
            source_report.kept = count
            conversations.extend(drawn[:count])
        random.Random(self.seed).shuffle(conversations)
        mix_report = MixReport(
            sources=reports,
            size=len(conversations),
            requested_size=self.size,
            seed=self.seed,
            max_tokens=self.max_tokens if self.tokenizer is not None else None,
            min_assistant_tokens=self.min_assistant_tokens,
            language=self.language,
            tokenizer=_tokenizer_name(self.tokenizer),
            notes=notes,
        )
        return MixResult(conversations, mix_report)

    def _draw(self, source: Source, quota: int | None, seen: set[str], report: SourceReport) -> list[Conversation]:
        """Up to `quota` conversations of one source that pass every filter, in seeded random order."""
        candidates = list(source)
        report.reading = source.stats
        report.available = len(candidates)
        random.Random(f"{self.seed}/{report.name}").shuffle(candidates)
        drawn: list[Conversation] = []
        for conversation in candidates:
            if quota is not None and len(drawn) >= quota:
                break
            report.examined += 1
            key = duplicate_key(conversation.messages)
            reason = self.drop_reason(conversation, key, seen)
            if reason is not None:
                report.dropped[reason] += 1
                continue
            seen.add(key)
            drawn.append(conversation)
        return drawn

    def drop_reason(self, conversation: Conversation, key: str, seen: set[str]) -> str | None:
        """Why a conversation cannot go into the mixture, or None; cheap checks first."""
        try:
            validate_messages(conversation.messages, last="assistant")
        except ConversationError:
            return "invalid"
        if key in seen:
            return "duplicate"
        if self.language == "en" and not conversation_looks_english(conversation.messages):
            return "language"
        # Every valid reply has at least one assistant token, so with no maximum and a minimum of one there is
        # nothing to measure, and tokenizing a whole large source would be wasted time.
        if self.tokenizer is not None and (self.max_tokens is not None or self.min_assistant_tokens > 1):
            try:
                encoded = encode_conversation(self.tokenizer, conversation)
            except (ConversationError, ValueError):
                return "invalid"
            if self.max_tokens is not None and len(encoded) > self.max_tokens:
                return "too_long"
            if sum(encoded.assistant_mask) < self.min_assistant_tokens:
                return "too_short"
        return None

    def _proportional_size(
        self, shares: list[float], drawn: list[int], reports: list[SourceReport]
    ) -> tuple[int, list[str]]:
        """The largest output size whose quotas every source's drawn conversations can fill (at most the
        requested size)."""
        # A source's quota is at least floor(size * share), so no size from (n + 1) / share on can fit it.
        upper = min(math.floor((n + 1) / share) for n, share in zip(drawn, shares, strict=True))
        size = min(upper, self.size) if self.size is not None else upper
        while size > 0 and any(q > n for q, n in zip(allocate(size, shares), drawn, strict=True)):
            size -= 1
        notes = []
        if self.size is not None and size < self.size:
            short = [r.name for r, q, n in zip(reports, allocate(self.size, shares), drawn, strict=True) if n < q]
            notes.append(
                f"{', '.join(short)} could not fill the requested share, so the mixture has {size} conversations "
                f"instead of {self.size}: the other sources were trimmed to keep the proportions"
            )
        return size, notes


def _tokenizer_name(tokenizer: Any) -> str | None:
    if tokenizer is None:
        return None
    return str(getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__)
