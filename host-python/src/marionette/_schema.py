"""Tool arguments against their JSON Schema, with errors a model (or a
person) can act on: what is wrong and where.

The wording is the Rust host's (the ``jsonschema`` crate's, in
``host/src/schema.rs``), not Python jsonschema's: values are written as JSON
(``"x" is not of type "number" at /a``, not ``'x' is not of type
'number'``), so a script sees the same message whichever host runs it.
"""

from __future__ import annotations

import json
import re
from typing import Any, Dict, Iterable, List, Optional

import jsonschema

#: Most compiled validators kept at once.
CACHE_CAPACITY = 256

#: Most problems reported for one set of arguments: enough for a model to
#: fix its call, not a wall of text.
MAX_REPORTED = 5

#: Enum options written out before "or N other candidates".
_MAX_ENUM_OPTIONS = 3

#: The order the Rust crate lists several types in (its bit set's).
_TYPE_ORDER = ("null", "boolean", "integer", "number", "string", "array", "object")


class SchemaCache:
    """Compiled validators by schema text (a sandbox checks the same few
    tool schemas over and over)."""

    def __init__(self) -> None:
        self._validators: Dict[str, Any] = {}

    def check(self, schema: str, arguments: str) -> Optional[str]:
        """Checks ``arguments`` (JSON text) against ``schema`` (JSON text).

        Returns ``None`` when they conform, else each problem and its place
        (up to :data:`MAX_REPORTED`, joined with ``; ``), or why the
        arguments or the schema are unusable.
        """
        try:
            instance = json.loads(arguments)
        except ValueError as e:
            return f"the arguments are not valid JSON: {e}"
        validator = self._validators.get(schema)
        if validator is None:
            try:
                parsed = json.loads(schema)
            except ValueError as e:
                return f"the tool's schema is not valid JSON: {e}"
            try:
                cls = jsonschema.validators.validator_for(parsed)
                cls.check_schema(parsed)
            except jsonschema.SchemaError as e:
                return f"the tool's schema is invalid: {e.message}"
            validator = cls(parsed)
            if len(self._validators) >= CACHE_CAPACITY:
                self._validators.clear()
            self._validators[schema] = validator
        problems: List[str] = []
        for error in validator.iter_errors(instance):
            where = pointer(error.absolute_path)
            what = describe(error)
            problems.append(f"{what} at {where}" if where else what)
            if len(problems) == MAX_REPORTED:
                break
        return "; ".join(problems) if problems else None


def pointer(path: Iterable[Any]) -> str:
    """A JSON Pointer (RFC 6901) to the value at ``path``; ``""`` for the root."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in path)


def as_json(value: Any) -> str:
    """A value as the Rust host writes it: compact JSON, keys sorted."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=True)


def _count(n: Any, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def _number(n: Any) -> str:
    # The Rust crate keeps `multipleOf` as an f64: 2.0 is written 2.
    if isinstance(n, float) and n.is_integer():
        return str(int(n))
    return as_json(n)


def _enum(instance: Any, options: List[Any]) -> str:
    shown = [as_json(o) for o in options]
    if len(shown) <= _MAX_ENUM_OPTIONS:
        listed = shown[0] if len(shown) == 1 else ", ".join(shown[:-1]) + " or " + shown[-1]
    else:
        keep = _MAX_ENUM_OPTIONS - 1
        listed = ", ".join(shown[:keep]) + f" or {len(shown) - keep} other candidates"
    return f"{as_json(instance)} is not one of {listed}"


def _unexpected(kind: str, names: List[str]) -> str:
    listed = ", ".join(f"'{n}'" for n in names)
    return f"{kind} are not allowed ({listed} {'was' if len(names) == 1 else 'were'} unexpected)"


def _missing(error: Any) -> str:
    """The property a ``required`` error is about, as JSON."""
    instance = error.instance if isinstance(error.instance, dict) else {}
    for name in error.validator_value:
        if name not in instance and error.message == f"{name!r} is a required property":
            return as_json(name)
    return as_json(error.message.removesuffix(" is a required property"))


def describe(error: Any) -> str:
    """One ``jsonschema.ValidationError`` in the Rust host's words."""
    keyword, limit, instance = error.validator, error.validator_value, error.instance
    value = as_json(instance)
    if keyword == "type":
        types = limit if isinstance(limit, list) else [limit]
        if len(types) == 1:
            return f'{value} is not of type "{types[0]}"'
        ordered = [t for t in _TYPE_ORDER if t in types] + [t for t in types if t not in _TYPE_ORDER]
        return f"{value} is not of types " + ", ".join(f'"{t}"' for t in ordered)
    if keyword == "required":
        return f"{_missing(error)} is a required property"
    if keyword == "additionalProperties" and isinstance(instance, dict):
        schema = error.schema if isinstance(error.schema, dict) else {}
        known = schema.get("properties", {})
        patterns = list(schema.get("patternProperties", {}))
        extra = sorted(k for k in instance if k not in known and not any(re.search(p, k) for p in patterns))
        return _unexpected("Additional properties", extra)
    if keyword == "enum" and isinstance(limit, list):
        return _enum(instance, limit)
    if keyword == "const":
        return f"{as_json(limit)} was expected"
    if keyword == "minimum":
        return f"{value} is less than the minimum of {as_json(limit)}"
    if keyword == "maximum":
        return f"{value} is greater than the maximum of {as_json(limit)}"
    if keyword == "exclusiveMinimum":
        return f"{value} is less than or equal to the minimum of {as_json(limit)}"
    if keyword == "exclusiveMaximum":
        return f"{value} is greater than or equal to the maximum of {as_json(limit)}"
    if keyword == "minLength":
        return f"{value} is shorter than {_count(limit, 'character', 'characters')}"
    if keyword == "maxLength":
        return f"{value} is longer than {_count(limit, 'character', 'characters')}"
    if keyword == "minItems":
        return f"{value} has less than {_count(limit, 'item', 'items')}"
    if keyword == "maxItems":
        return f"{value} has more than {_count(limit, 'item', 'items')}"
    if keyword == "minProperties":
        return f"{value} has less than {_count(limit, 'property', 'properties')}"
    if keyword == "maxProperties":
        return f"{value} has more than {_count(limit, 'property', 'properties')}"
    if keyword == "pattern":
        return f'{value} does not match "{limit}"'
    if keyword == "multipleOf":
        return f"{value} is not a multiple of {_number(limit)}"
    if keyword == "uniqueItems":
        return f"{value} has non-unique elements"
    if keyword == "format":
        return f'{value} is not a "{limit}"'
    if keyword == "contains":
        return f"None of {value} are valid under the given schema"
    if keyword == "not":
        return f"{as_json(limit)} is not allowed for {value}"
    if keyword == "anyOf":
        return f"{value} is not valid under any of the schemas listed in the 'anyOf' keyword"
    if keyword == "oneOf":
        if "is valid under each of" in error.message:
            return f"{value} is valid under more than one of the schemas listed in the 'oneOf' keyword"
        return f"{value} is not valid under any of the schemas listed in the 'oneOf' keyword"
    if keyword is None or error.schema is False:
        return f"False schema does not allow {value}"
    # A keyword the Rust crate words some other way, or not at all: Python
    # jsonschema's own sentence, which still names what is wrong.
    return str(error.message)
