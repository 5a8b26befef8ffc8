"""Read a top-level JSON array element by element, recovering every complete element of a damaged file.

`json.load` rejects a whole file when its last record is cut off, which is how some dataset dumps ship (the
packaged ShareGPT file ends in the middle of a string). This reader decodes one element at a time with
`json.JSONDecoder.raw_decode`, reading the file in chunks so memory stays near one element, and:

* a file cut off inside an element yields every element before it and one failure for the cut-off one;
* a corrupt stretch in the middle yields one failure, then reading resumes at the next object that decodes and
  that the caller recognises as an element (`looks_like_element`), so one bad record costs one record. The
  recogniser must tell elements from the objects nested in them (a ShareGPT record has "conversations", its
  turns do not); without one, reading stops at the first failure.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TextIO

from chatforge.data.base import DataError

_DECODER = json.JSONDecoder()
_BETWEEN_ELEMENTS = " \t\r\n,"
# A decode error this close to the end of the buffer may just mean the chunk ended there (a literal like
# `false` cut after `fa` fails at its start), so the reader fetches more text before calling the element bad.
_END_SLACK = 8


@dataclass(frozen=True)
class ArrayElement:
    value: Any  # the decoded element; None when it could not be read
    error: str | None  # why it could not be read
    offset: int  # character offset of the element's start in the file, for messages


class _Window:
    """The part of the file currently in memory: `text` starts at character `base` of the file."""

    def __init__(self, stream: TextIO, chunk_chars: int) -> None:
        self.stream = stream
        self.chunk_chars = chunk_chars
        self.text = ""
        self.base = 0
        self.eof = False

    def fill(self) -> bool:
        """Append the next chunk; False once the file is exhausted."""
        if self.eof:
            return False
        piece = self.stream.read(self.chunk_chars)
        if not piece:
            self.eof = True
            return False
        self.text += piece
        return True

    def forget_before(self, pos: int) -> int:
        """Drop text before `pos` (already consumed); returns the new position of what was at `pos`."""
        self.base += pos
        self.text = self.text[pos:]
        return 0

    def ran_out(self, err: json.JSONDecodeError) -> bool:
        """Did decoding fail because the text in memory ended, rather than because the JSON is wrong?"""
        return err.msg.startswith("Unterminated string") or err.pos >= len(self.text) - _END_SLACK


def iter_json_array(
    stream: TextIO,
    *,
    looks_like_element: Callable[[Any], bool] | None = None,
    chunk_chars: int = 1 << 22,
    max_element_chars: int = 1 << 26,
) -> Iterator[ArrayElement]:
    """Yield each element of the JSON array in `stream`, or a failure for each element that cannot be read."""
    window = _Window(stream, chunk_chars)
    pos = _skip(window, 0, " \t\r\n\ufeff")
    if pos >= len(window.text) or window.text[pos] != "[":
        raise DataError("not a JSON array: the file does not start with '['")
    pos += 1
    while True:
        pos = _skip(window, window.forget_before(pos), _BETWEEN_ELEMENTS)
        if pos >= len(window.text) or window.text[pos] == "]":
            # The end of the array, or a file cut off between two elements: nothing is lost either way.
            return
        start = pos
        while True:
            try:
                value, end = _DECODER.raw_decode(window.text, start)
            except json.JSONDecodeError as err:
                too_big = len(window.text) - start >= max_element_chars
                if window.ran_out(err) and not too_big and window.fill():
                    continue
                yield ArrayElement(None, _failure(window, err, too_big, max_element_chars), window.base + start)
                if looks_like_element is None:
                    return
                resumed = _resync(window, start + 1, looks_like_element, max_element_chars)
                if resumed is None:
                    return
                pos = resumed
                break
            if end >= len(window.text) and not isinstance(value, (dict, list)) and window.fill():
                continue  # a number at the end of the chunk may have more digits in the next one
            yield ArrayElement(value, None, window.base + start)
            pos = end
            break


def _skip(window: _Window, pos: int, chars: str) -> int:
    """Advance past `chars`, reading more of the file as needed."""
    while True:
        while pos < len(window.text) and window.text[pos] in chars:
            pos += 1
        if pos < len(window.text) or not window.fill():
            return pos


def _failure(window: _Window, err: json.JSONDecodeError, too_big: bool, max_element_chars: int) -> str:
    if too_big:
        return f"element longer than {max_element_chars} characters"
    if window.ran_out(err) and window.eof:
        return "truncated: the file ends inside this element"
    return f"invalid JSON: {err.msg} at character {window.base + err.pos}"


def _resync(window: _Window, pos: int, looks_like_element: Callable[[Any], bool], max_element_chars: int) -> int | None:
    """Position of the next object from `pos` on that decodes and looks like an element; None at end of file.

    Objects nested inside the damaged element (its turns, say) decode too, so `looks_like_element` is what
    tells the start of the next real element apart from them.
    """
    while True:
        pos = window.text.find("{", pos)
        if pos < 0:
            pos = window.forget_before(len(window.text))
            if not window.fill():
                return None
            continue
        try:
            value, _ = _DECODER.raw_decode(window.text, pos)
        except json.JSONDecodeError as err:
            if window.ran_out(err) and len(window.text) - pos < max_element_chars and window.fill():
                continue
            pos += 1
            continue
        if looks_like_element(value):
            return pos
        pos += 1
