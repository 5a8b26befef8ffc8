"""Quieter transformers: its loading bars and advisory warnings drown a terminal chat and a run's log; errors show.

`quiet_transformers()` is for a whole process (a CLI command); `transformers_quietly()` for one block (loading a
model with a fresh score head, where the "newly initialised weights" report is expected, not news), restoring
whatever the caller had set.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator


def quiet_transformers() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


@contextlib.contextmanager
def transformers_quietly() -> Iterator[None]:
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
