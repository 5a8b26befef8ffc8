"""JSON mode's grammar: what it accepts and refuses, the schema subset (anything else refused by name), and random
walks over the real SmolLM2 vocabulary that always end in JSON that parses and fits the schema."""

from __future__ import annotations

import json
import random
import re

import pytest

from chatforge.serve.json_mode import Grammar, JSONConstraint, UnsupportedSchema, Vocabulary

PERSON = {"type": "object", "additionalProperties": False, "required": ["name", "age", "tags"],
          "properties": {"name": {"type": "string"}, "age": {"type": "integer"}, "tags": {"type": "array",
                         "items": {"enum": ["a", "b c", 3, None]}}, "ok": {"type": ["boolean", "null"]}}}


@pytest.mark.parametrize("text", ['{}', '{"a": 1}', ' {"a": [1, -2.5e-3, "x", null, true, {"b": {}}]}',
                                  '{ "k" : "v\\n\\u00e9\\"" }', '{"a":0,"b":1E+9}'])
def test_json_object_accepts_json_objects(text):
    assert Grammar.json_object().accepts(text)
    json.loads(text)


@pytest.mark.parametrize("text", ['[]', '"x"', '{"a" 1}', '{"a": 01}', '{"a": tru}', '{"a":1,}', '{"a":1}x',
                                  '{"a": "\n"}', '{"a": 1.}', '{"a": -}', '{"a": "\\x"}', '{' + ' ' * 9 + '}'])
def test_json_object_refuses_what_is_not(text):
    assert not Grammar.json_object().accepts(text)


def test_a_schema_is_followed():
    g = Grammar.from_schema(PERSON)
    assert g.accepts('{"name": "Ann", "age": 7, "tags": ["a", 3, null]}')
    assert g.accepts('{"name":"","age":-1,"tags":[],"ok":null}')
    for bad in ('{"name": "Ann", "age": 7}',  # a required key missing
                '{"name": "Ann", "age": 7.5, "tags": []}',  # not an integer
                '{"name": "Ann", "age": 7, "tags": ["d"]}',  # not in the enum
                '{"name": "Ann", "age": 7, "tags": [], "x": 1}',  # no other keys
                '{"age": 7, "name": "Ann", "tags": []}'):  # declared order
        assert not g.accepts(bad), bad


def test_local_references_and_recursion():
    tree = {"$defs": {"node": {"type": "object", "required": ["kids"],
                               "properties": {"kids": {"type": "array", "items": {"$ref": "#/$defs/node"}}}}},
            "$ref": "#/$defs/node"}
    g = Grammar.from_schema(tree)
    assert g.accepts('{"kids": [{"kids": []}, {"kids": [{"kids": []}]}]}')
    assert not g.accepts('{"kids": [{}]}')


@pytest.mark.parametrize(("schema", "named"), [
    ({"type": "string", "pattern": "a+"}, "keyword 'pattern'"),
    ({"anyOf": [{"type": "string"}]}, "keyword 'anyOf'"),
    ({"type": "object", "properties": {"x": {"type": "string", "maxLength": 3}}}, "schema.properties.x: keyword 'maxLength'"),
    ({"$ref": "#/elsewhere"}, "'$ref'"),
    ({"type": "date"}, "'type' must be one of"),
    ({"type": "object", "properties": {"a": {}}, "required": ["b"]}, "'required'"),
])
def test_what_cannot_be_enforced_is_refused_by_name(schema, named):
    with pytest.raises(UnsupportedSchema, match=re.escape(named)):
        Grammar.from_schema(schema)


@pytest.fixture(scope="module")
def vocabulary(smol_tokenizer):
    return Vocabulary(smol_tokenizer, len(smol_tokenizer), frozenset({smol_tokenizer.eos_token_id}))


@pytest.mark.parametrize("schema", [None, PERSON])
def test_random_walks_over_the_vocabulary_end_in_valid_json(vocabulary, schema):
    """Any sequence of allowed tokens is a JSON prefix; one that ends is a whole document of the schema."""
    rng = random.Random(0)
    stop = next(iter(vocabulary.stop_ids))
    finished = 0
    for _ in range(12):
        c = JSONConstraint(vocabulary, vocabulary.grammar(schema))
        text = ""
        for _ in range(300):
            allowed = c.mask().nonzero()[:, 0].tolist()
            assert allowed
            # end as soon as allowed, and lean to closing tokens so that walks finish
            closing = [t for t in rng.sample(allowed, min(len(allowed), 400)) if set(vocabulary.text_of.get(t, "")) & set('"}]')]
            if stop in allowed:
                token = stop
            elif closing and rng.random() < 0.5:
                token = rng.choice(closing)
            else:
                token = min(rng.sample(allowed, min(len(allowed), 40)), key=lambda t: len(vocabulary.text_of.get(t, "")))
            c.advance(token)
            if token == stop:
                break
            text += vocabulary.text_of[token]
        else:
            continue
        finished += 1
        document = json.loads(text)
        assert isinstance(document, dict)
        if schema is PERSON:
            assert list(document)[:3] == ["name", "age", "tags"] and isinstance(document["age"], int)
            assert all(t in ("a", "b c", 3, None) for t in document["tags"])
    assert finished >= 6
