"""Tool-argument errors in the Rust host's words (host/src/schema.rs, the
``jsonschema`` crate's): values as JSON, the place as a JSON Pointer."""

from __future__ import annotations

import json
from typing import Any

import pytest

from marionette._schema import SchemaCache

SCHEMA = json.dumps(
    {
        "type": "object",
        "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
        "required": ["a", "b"],
    }
)


def check(schema: Any, arguments: Any) -> Any:
    return SchemaCache().check(json.dumps(schema), json.dumps(arguments))


def test_the_rust_hosts_own_examples() -> None:
    cache = SchemaCache()
    assert cache.check(SCHEMA, '{"a": 1, "b": 2}') is None
    assert cache.check(SCHEMA, '{"a": "x", "b": 2}') == '"x" is not of type "number" at /a'
    assert cache.check(SCHEMA, '{"a": 1}') == '"b" is a required property'
    assert "not valid JSON" in (cache.check(SCHEMA, "{nope") or "")
    assert "schema is invalid" in (cache.check('{"type": 12}', "{}") or "")


@pytest.mark.parametrize(
    ("schema", "arguments", "words"),
    [
        ({"type": ["string", "null"]}, 1, '1 is not of types "null", "string"'),
        ({"enum": ["a", "b"]}, "c", '"c" is not one of "a" or "b"'),
        ({"enum": [1, 2, 3, 4]}, 5, "5 is not one of 1, 2 or 2 other candidates"),
        ({"const": {"k": 1, "a": [1]}}, 2, '{"a":[1],"k":1} was expected'),
        ({"minimum": 3}, 1, "1 is less than the minimum of 3"),
        ({"exclusiveMaximum": 3}, 3, "3 is greater than or equal to the maximum of 3"),
        ({"maxLength": 1}, "ab", '"ab" is longer than 1 character'),
        ({"minItems": 2}, [1], "[1] has less than 2 items"),
        ({"maxProperties": 1}, {"a": 1, "b": 2}, '{"a":1,"b":2} has more than 1 property'),
        ({"pattern": "^x"}, "y", '"y" does not match "^x"'),
        ({"multipleOf": 2.0}, 3, "3 is not a multiple of 2"),
        ({"uniqueItems": True}, [1, 1], "[1,1] has non-unique elements"),
        ({"not": {"type": "string"}}, "s", '{"type":"string"} is not allowed for "s"'),
        (
            {"properties": {"a": {}}, "additionalProperties": False},
            {"y": 3, "a": 1, "x": 2},
            "Additional properties are not allowed ('x', 'y' were unexpected)",
        ),
        (
            {"anyOf": [{"type": "string"}, {"type": "null"}]},
            1,
            "1 is not valid under any of the schemas listed in the 'anyOf' keyword",
        ),
        (
            {"properties": {"a/b": {"properties": {"c~d": {"type": "string"}}}}},
            {"a/b": {"c~d": 1}},
            '1 is not of type "string" at /a~1b/c~0d',
        ),
    ],
)
def test_keywords_are_worded_as_the_rust_host_words_them(schema: Any, arguments: Any, words: str) -> None:
    assert check(schema, arguments) == words


def test_at_most_five_problems_each_with_its_place() -> None:
    schema = {"type": "array", "items": {"type": "string"}}
    problems = (check(schema, [1, 2, 3, 4, 5, 6, 7]) or "").split("; ")
    assert problems == [f'{n} is not of type "string" at /{n - 1}' for n in range(1, 6)]
