"""JSON mode by constrained decoding: at every step only the tokens that keep the reply a prefix of valid JSON (of
a given JSON Schema, for ``response_format: json_schema``) may be sampled, and the reply may end only when the JSON
is complete. A reply cut by ``max_tokens`` (finish_reason "length") can still be unfinished, as with OpenAI.

The grammar is a character-level pushdown automaton over an immutable stack of frames (so a state is hashable and
the allowed-token mask of a state is computed once and cached). A mask is found by walking the vocabulary in sorted
order, so a prefix rejected once rejects every token that starts with it; inside a plain string the state does not
change, and the tokens without a quote, backslash or control character are allowed as a block.

The JSON Schema subset (anything else is refused by name, never ignored): ``type`` (one or a list), ``properties``,
``required``, ``additionalProperties`` (false, true or a schema), ``items``, ``enum``, ``const``, local ``$ref``
(``#/$defs/...``, ``#/definitions/...``), and the annotations ``title``, ``description``, ``default``,
``examples``, ``$schema``, ``$id``, ``$comment``, ``$defs``, ``definitions``. Objects with ``properties`` are
written with the declared keys in declared order (required ones always, optional ones may be left out) and no
others; enum and const values are written compactly. Whitespace runs are at most `MAX_WS` characters and numbers
at most 15 digits per part, so a reply cannot run on in padding. Tokens that decode to part of a character are not
used (any character can still be written as a ``\\uXXXX`` escape).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from typing import Any

import torch

MAX_WS = 8
MAX_DIGITS = 15
_WS = " \t\n\r"
_ANNOTATIONS = {"title", "description", "default", "examples", "$schema", "$id", "$comment", "$defs", "definitions"}
_KEYWORDS = {"type", "properties", "required", "additionalProperties", "items", "enum", "const", "$ref"}
_TYPES = ("object", "array", "string", "number", "integer", "boolean", "null")


class UnsupportedSchema(ValueError):
    """A schema keyword or value this decoder cannot enforce; ``where`` is its JSON path."""

    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"{where}: {message}")
        self.where = where


@dataclass(frozen=True)
class _Node:
    kinds: frozenset[str]
    props: tuple[tuple[str, int], ...] = ()  # (escaped key text, node id), in declared order
    required: frozenset[int] = frozenset()  # indexes into props
    extra: int | None = 0  # node id of additional properties' values (objects without props); None: no others
    items: int = 0
    literals: tuple[str, ...] | None = None  # enum / const, as compact JSON texts


@dataclass
class Grammar:
    """A compiled schema: node 0 is "any JSON value"; ``root`` the document's."""

    nodes: list[_Node] = field(default_factory=lambda: [_Node(frozenset(_TYPES))])
    root: int = 0

    @classmethod
    def json_object(cls) -> Grammar:
        """``response_format: json_object``: any JSON object."""
        g = cls()
        g.root = g._add(_Node(frozenset({"object"})))
        return g

    @classmethod
    def from_schema(cls, schema: Any, where: str = "schema") -> Grammar:
        g = cls()
        refs: dict[str, int] = {}
        g.root = g._compile(schema, schema, where, refs)
        return g

    def _add(self, node: _Node) -> int:
        self.nodes.append(node)
        return len(self.nodes) - 1

    def _compile(self, schema: Any, root: Any, where: str, refs: dict[str, int]) -> int:
        if schema is True or schema == {}:
            return 0
        if where.count(".") > 64:
            raise UnsupportedSchema(where[:80] + "...", "the schema is nested more than 64 levels deep")
        if not isinstance(schema, dict):
            raise UnsupportedSchema(where, f"a schema must be an object or true, got {schema!r:.40}")
        unknown = sorted(set(schema) - _KEYWORDS - _ANNOTATIONS)
        if unknown:
            raise UnsupportedSchema(where, f"keyword '{unknown[0]}' is not supported by constrained decoding")
        if "$ref" in schema:
            ref = schema["$ref"]
            if len(schema.keys() - _ANNOTATIONS) > 1:
                raise UnsupportedSchema(where, "'$ref' beside other keywords is not supported")
            if ref not in refs:
                parts = ref.split("/") if isinstance(ref, str) else []
                if len(parts) != 3 or parts[0] != "#" or parts[1] not in ("$defs", "definitions") or \
                        not isinstance(root.get(parts[1]), dict) or parts[2] not in root[parts[1]]:
                    raise UnsupportedSchema(where, f"'$ref' {ref!r:.60} does not name a local #/$defs/ entry")
                refs[ref] = len(self.nodes)
                self.nodes.append(self.nodes[0])  # a placeholder, so a recursive reference finds its id
                self.nodes[refs[ref]] = self.nodes[self._compile(root[parts[1]][parts[2]], root, ref, refs)]
            return refs[ref]
        if "const" in schema or "enum" in schema:
            values = [schema["const"]] if "const" in schema else schema["enum"]
            if not isinstance(values, list) or not values:
                raise UnsupportedSchema(where, "'enum' must be a non-empty list")
            texts = tuple(dict.fromkeys(json.dumps(v, separators=(",", ":"), ensure_ascii=True) for v in values))
            return self._add(_Node(frozenset(), literals=texts))
        kinds = schema.get("type", list(_TYPES))
        kinds = [kinds] if isinstance(kinds, str) else kinds
        if not isinstance(kinds, list) or not kinds or any(k not in _TYPES for k in kinds):
            raise UnsupportedSchema(where, f"'type' must be one of {', '.join(_TYPES)} (or a list of them)")
        node_id = self._add(_Node(frozenset(kinds)))  # reserved before the children, which may refer back
        props: list[tuple[str, int]] = []
        properties = schema.get("properties", {})
        if not isinstance(properties, dict):
            raise UnsupportedSchema(where, "'properties' must be an object")
        for name, sub in properties.items():
            props.append((json.dumps(name, ensure_ascii=True)[1:-1], self._compile(sub, root, f"{where}.properties.{name}", refs)))
        required = schema.get("required", [])
        if not isinstance(required, list) or any(r not in properties for r in required):
            raise UnsupportedSchema(where, "'required' must list names declared in 'properties'")
        extra_schema = schema.get("additionalProperties", True)
        extra: int | None
        if props:
            extra = None  # objects with properties are written with exactly those keys
        elif extra_schema is False:
            extra = None
        else:
            extra = self._compile(extra_schema, root, f"{where}.additionalProperties", refs)
        items = self._compile(schema.get("items", True), root, f"{where}.items", refs)
        self.nodes[node_id] = _Node(frozenset(kinds), tuple(props), frozenset(i for i, (n, _) in enumerate(properties.items())
                                                                               if n in required), extra, items)
        return node_id

    # ---- the automaton ---------------------------------------------------------------------------------------

    def start(self) -> tuple[Any, ...]:
        return (("V", self.root, 0),)

    def feed(self, stack: tuple[Any, ...], ch: str) -> tuple[Any, ...] | None:
        """The state after ``ch``, or None when ``ch`` cannot come next."""
        if not stack:
            return None
        top, rest = stack[-1], stack[:-1]
        kind = top[0]
        if kind == "V":
            return self._value(rest, top, ch)
        if kind == "STR":
            return self._string(rest, top, ch)
        if kind == "LIT":
            _, options, prefix = top
            grown = prefix + ch
            if any(o.startswith(grown) for o in options):
                return (*rest, ("LIT", options, grown))
            return self.feed(self._done(rest), ch) if prefix in options else None
        if kind == "NUM":
            return self._number(rest, top, ch)
        if kind == "OBJ":
            return self._object(rest, top, ch)
        return self._array(rest, top, ch)

    def can_end(self, stack: tuple[Any, ...]) -> bool:
        while stack:
            top = stack[-1]
            if (top[0] == "LIT" and top[2] in top[1]) or (top[0] == "NUM" and top[2] in ("zero", "int", "frac", "exp")):
                stack = self._done(stack[:-1])
            else:
                return False
        return True

    def _done(self, rest: tuple[Any, ...]) -> tuple[Any, ...]:
        """A value just completed: its container moves on."""
        if not rest:
            return ()
        parent = rest[-1]
        if parent[0] == "OBJ":  # ("OBJ", node, phase, next, current, ws)
            return (*rest[:-1], ("OBJ", parent[1], "value_done", parent[4] + 1, -1, 0))
        return (*rest[:-1], ("ARR", parent[1], "value_done", 0))

    def _value(self, rest: tuple[Any, ...], top: tuple[Any, ...], ch: str) -> tuple[Any, ...] | None:
        _, node_id, ws = top
        if ch in _WS:
            return (*rest, ("V", node_id, ws + 1)) if ws < MAX_WS else None
        node = self.nodes[node_id]
        if node.literals is not None:
            return self.feed((*rest, ("LIT", node.literals, "")), ch)
        kinds = node.kinds
        if ch == "{" and "object" in kinds:
            return (*rest, ("OBJ", node_id, "first", 0, -1, 0))
        if ch == "[" and "array" in kinds:
            return (*rest, ("ARR", node_id, "first", 0))
        if ch == '"' and "string" in kinds:
            return (*rest, ("STR", "value", 0, ()))
        if (ch == "-" or ch.isdigit()) and kinds & {"number", "integer"}:
            return self._number(rest, ("NUM", "number" not in kinds, "start", 0), ch)
        words = tuple(w for k, ws_ in (("boolean", ("true", "false")), ("null", ("null",))) if k in kinds for w in ws_)
        if words:
            return self.feed((*rest, ("LIT", words, "")), ch)
        return None

    def _string(self, rest: tuple[Any, ...], top: tuple[Any, ...], ch: str) -> tuple[Any, ...] | None:
        _, role, esc, keys = top  # role: value | key (any key) | fixed (keys: candidate (text, index) pairs)
        if role == "fixed":
            prefix = esc
            if ch == '"':
                match = [i for text, i in keys if text == prefix]
                if not match:
                    return None
                obj = rest[-1]
                return (*rest[:-1], ("OBJ", obj[1], "key_done", obj[3], match[0], 0))
            grown = prefix + ch
            return (*rest, ("STR", "fixed", grown, keys)) if any(t.startswith(grown) for t, _ in keys) else None
        if esc == 0:
            if ch == '"':
                if role == "key":
                    obj = rest[-1]
                    return (*rest[:-1], ("OBJ", obj[1], "key_done", obj[3], -2, 0))
                return self._done(rest)
            if ch == "\\":
                return (*rest, ("STR", role, 1, keys))
            return None if ord(ch) < 0x20 else (*rest, top)
        if esc == 1:
            if ch in '"\\/bfnrt':
                return (*rest, ("STR", role, 0, keys))
            return (*rest, ("STR", role, 2, keys)) if ch == "u" else None
        if ch not in "0123456789abcdefABCDEF":
            return None
        return (*rest, ("STR", role, 0 if esc == 5 else esc + 1, keys))

    def _number(self, rest: tuple[Any, ...], top: tuple[Any, ...], ch: str) -> tuple[Any, ...] | None:
        _, integer, phase, digits = top
        nxt: tuple[str, int] | None = None
        if ch.isdigit() and ch.isascii():
            if phase in ("start", "sign"):
                nxt = ("zero", 1) if ch == "0" else ("int", 1)
            elif phase in ("int", "frac", "exp") and digits < (3 if phase == "exp" else MAX_DIGITS):
                nxt = (phase, digits + 1)
            elif phase == "dot":
                nxt = ("frac", 1)
            elif phase in ("e", "esign"):
                nxt = ("exp", 1)
        elif ch == "-" and phase == "start":
            nxt = ("sign", 0)
        elif ch == "." and phase in ("zero", "int") and not integer:
            nxt = ("dot", 0)
        elif ch in "eE" and phase in ("zero", "int", "frac") and not integer:
            nxt = ("e", 0)
        elif ch in "+-" and phase == "e":
            nxt = ("esign", 0)
        if nxt is not None:
            return (*rest, ("NUM", integer, *nxt))
        if phase in ("zero", "int", "frac", "exp"):
            return self.feed(self._done(rest), ch)
        return None

    def _keys(self, node: _Node, nxt: int) -> tuple[tuple[str, int], ...]:
        """The properties that may come next: from ``nxt`` up to and including the first required one."""
        out = []
        for i in range(nxt, len(node.props)):
            out.append((node.props[i][0], i))
            if i in node.required:
                break
        return tuple(out)

    def _object(self, rest: tuple[Any, ...], top: tuple[Any, ...], ch: str) -> tuple[Any, ...] | None:
        _, node_id, phase, nxt, cur, ws = top
        node = self.nodes[node_id]
        if ch in _WS and phase != "value":
            return (*rest, ("OBJ", node_id, phase, nxt, cur, ws + 1)) if ws < MAX_WS else None
        free = not node.props
        may_close = free or not any(i in node.required for i in range(nxt, len(node.props)))
        if phase in ("first", "value_done") and ch == "}" and may_close:
            return self._done(rest)
        if phase in ("first", "comma") and ch == '"':
            here = (*rest, ("OBJ", node_id, "key", nxt, cur, 0))
            if free:
                return (*here, ("STR", "key", 0, ())) if node.extra is not None else None
            keys = self._keys(node, nxt)
            return (*here, ("STR", "fixed", "", keys)) if keys else None
        if phase == "value_done" and ch == ",":
            if not free and not self._keys(node, nxt):
                return None
            return (*rest, ("OBJ", node_id, "comma", nxt, cur, 0))
        if phase == "key_done" and ch == ":":
            value = node.props[cur][1] if cur >= 0 else (node.extra or 0)
            return (*rest, ("OBJ", node_id, "value", cur if cur >= 0 else nxt, cur, 0), ("V", value, 0))
        return None

    def _array(self, rest: tuple[Any, ...], top: tuple[Any, ...], ch: str) -> tuple[Any, ...] | None:
        _, node_id, phase, ws = top
        if ch in _WS and phase != "value":
            return (*rest, ("ARR", node_id, phase, ws + 1)) if ws < MAX_WS else None
        if phase in ("first", "value_done") and ch == "]":
            return self._done(rest)
        if phase == "value_done" and ch == ",":
            return (*rest, ("ARR", node_id, "comma", 0))
        if phase in ("first", "comma"):
            return self.feed((*rest, ("ARR", node_id, "value", 0), ("V", self.nodes[node_id].items, 0)), ch)
        return None

    def accepts(self, text: str) -> bool:
        """Whether ``text`` is a complete document of this grammar (for tests and checks)."""
        state: tuple[Any, ...] | None = self.start()
        for ch in text:
            state = self.feed(state, ch) if state is not None else None
        return state is not None and self.can_end(state)


# ---- tokens ----------------------------------------------------------------------------------------------------


def _plain(text: str) -> bool:
    """Text that leaves a JSON string's state as it is: no quote, backslash or control character."""
    return not any(c in '"\\' or ord(c) < 0x20 for c in text)


class Vocabulary:
    """A tokenizer's tokens as text, sorted, with the masks each grammar state allows (cached per grammar)."""

    def __init__(self, tokenizer: Any, size: int, stop_ids: frozenset[int]) -> None:
        self.size, self.stop_ids = size, stop_ids
        # each token's text as it reads after another token (a SentencePiece word-start token keeps its space)
        anchor = tokenizer.encode("a", add_special_tokens=False)
        base = tokenizer.decode(anchor, skip_special_tokens=True)
        n = min(size, len(tokenizer))
        texts = tokenizer.batch_decode([[*anchor, i] for i in range(n)], skip_special_tokens=True)
        self.text_of: dict[int, str] = {}
        for i, text in enumerate(texts):
            text = text[len(base):] if text.startswith(base) else ""
            if text and "\ufffd" not in text:  # special tokens decode to nothing; parts of a character are left out
                self.text_of[i] = text
        usable = sorted((t, i) for i, t in self.text_of.items())
        self.all = ([t for t, _ in usable], [i for _, i in usable])
        special = [(t, i) for t, i in usable if not _plain(t)]
        self.in_string = ([t for t, _ in special], [i for _, i in special])
        self.plain = torch.zeros(size, dtype=torch.bool)
        self.plain[[i for t, i in usable if _plain(t)]] = True
        self._masks: dict[int, dict[tuple[Any, ...], torch.Tensor]] = {}
        self._grammars: dict[str, Grammar] = {}
        self._lock = threading.Lock()  # routes compile grammars while the scheduler thread asks for masks

    def grammar(self, schema: dict[str, Any] | None) -> Grammar:
        """The compiled grammar of ``schema`` (None: any JSON object), cached so its masks are reused."""
        key = json.dumps(schema, sort_keys=True)
        with self._lock:
            if key in self._grammars:
                return self._grammars[key]
        grammar = Grammar.json_object() if schema is None else Grammar.from_schema(schema)
        with self._lock:
            if len(self._grammars) >= 64:
                self._grammars.clear()
                self._masks.clear()
            return self._grammars.setdefault(key, grammar)

    def mask(self, grammar: Grammar, state: tuple[Any, ...]) -> torch.Tensor:
        """[size] True where the token may come next in ``state``."""
        with self._lock:
            found = self._masks.get(id(grammar), {}).get(state)
        if found is None:
            found = self._compute(grammar, state)
            with self._lock:
                masks = self._masks.setdefault(id(grammar), {})
                if len(masks) >= 2048:
                    masks.clear()
                masks[state] = found
        return found

    def _compute(self, grammar: Grammar, state: tuple[Any, ...]) -> torch.Tensor:
        allowed = torch.zeros(self.size, dtype=torch.bool)
        if grammar.can_end(state):
            allowed[[i for i in self.stop_ids if i < self.size]] = True
        top = state[-1] if state else None
        texts, ids = self.all
        if top is not None and top[0] == "STR" and top[1] != "fixed" and top[2] == 0:
            allowed |= self.plain  # inside a string: the plain tokens stay in it
            texts, ids = self.in_string
        # Walk the sorted texts, keeping the state after each prefix of the current one: a rejected prefix skips
        # every later text that starts with it.
        states = [state]
        prev = ""
        i = 0
        while i < len(texts):
            text = texts[i]
            k, limit = 0, min(len(prev), len(text), len(states) - 1)
            while k < limit and prev[k] == text[k]:
                k += 1
            del states[k + 1:]
            rejected = False
            for j in range(k, len(text)):
                nxt = grammar.feed(states[-1], text[j])
                if nxt is None:
                    bad = text[: j + 1]
                    i += 1
                    while i < len(texts) and texts[i].startswith(bad):  # sorted: they come together
                        i += 1
                    prev = text[:j]
                    rejected = True
                    break
                states.append(nxt)
            if not rejected:
                allowed[ids[i]] = True
                prev = text
                i += 1
        return allowed


class JSONConstraint:
    """One reply's place in its grammar: ``mask()`` the tokens allowed next, ``advance(token)`` after sampling."""

    def __init__(self, vocabulary: Vocabulary, grammar: Grammar) -> None:
        self.vocabulary, self.grammar = vocabulary, grammar
        self.state: tuple[Any, ...] | None = grammar.start()

    def mask(self) -> torch.Tensor:
        assert self.state is not None
        allowed = self.vocabulary.mask(self.grammar, self.state)
        if not bool(allowed.any()):  # no token spells what must come next: let the reply end rather than loop
            allowed = torch.zeros_like(allowed)
            allowed[[i for i in self.vocabulary.stop_ids if i < self.vocabulary.size]] = True
        return allowed

    def advance(self, token_id: int) -> None:
        if token_id in self.vocabulary.stop_ids or self.state is None:
            self.state = None
            return
        state: tuple[Any, ...] | None = self.state
        for ch in self.vocabulary.text_of.get(token_id, ""):
            state = self.grammar.feed(state, ch) if state is not None else None
        self.state = state
