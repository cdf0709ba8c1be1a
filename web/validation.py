"""Typed validation of request fields: every bad query argument, form field or JSON body field is
an ``Invalid`` error (answered 400) with the field's name (``{"error": {"code": "bad_value", "field": name, ...}}``),
never a 500 from the database or a Python conversion.

Integers are bounded to PostgreSQL's ``bigint`` (a larger id can match no row, and the driver
would fail on it); numbers must be finite. JSON fields take JSON types (``true`` is no integer,
``"3"`` is no number); query and form fields are text and are parsed.

:func:`check_name` is the one rule for collection names, used by the API, the dashboard and the
CLI.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from werkzeug.routing import IntegerConverter

from web.services.errors import Invalid

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
NAME_MAX_LENGTH = 200
_NAME_RE = re.compile(r"[^\W_][\w .\-]*")  # starts with a letter or digit; letters, digits, space, '.', '_', '-'
NAME_RULE = (f"a collection name has 1 to {NAME_MAX_LENGTH} letters, digits, spaces, '.', '_' or '-' and starts with a "
             "letter or digit (no control characters such as line breaks)")


def bad_value(field: str, message: str, code: str = "bad_value") -> Invalid:
    """The error (a 400) for one field: ``message`` should say what the field must be."""
    return Invalid(code, f"{field}: {message}", field=field)


# -- text (query strings and forms) ----------------------------------------------------------
def parse_int(raw: Any, field: str, *, minimum: int = INT64_MIN, maximum: int = INT64_MAX) -> int:
    """``raw`` (text or an int) as an integer in ``[minimum, maximum]``; else a 400 naming ``field``."""
    if isinstance(raw, bool) or not isinstance(raw, (int, str)):
        raise bad_value(field, f"must be an integer, not {_show(raw)}")
    try:
        value = int(raw.strip()) if isinstance(raw, str) else raw
    except ValueError:
        raise bad_value(field, f"must be an integer, not {_show(raw)}") from None
    if not minimum <= value <= maximum:
        raise bad_value(field, f"must be between {minimum} and {maximum}")
    return value


def parse_float(raw: Any, field: str) -> float:
    """``raw`` (text or a number) as a finite float; else a 400 naming ``field``."""
    if isinstance(raw, bool) or not isinstance(raw, (int, float, str)):
        raise bad_value(field, f"must be a number, not {_show(raw)}")
    try:
        value = float(raw)
    except (ValueError, OverflowError):
        raise bad_value(field, f"must be a number, not {_show(raw)}") from None
    if not math.isfinite(value):
        raise bad_value(field, "must be a finite number")
    return value


def int_arg(args: Mapping[str, Any], field: str, *, minimum: int = INT64_MIN, maximum: int = INT64_MAX) -> int | None:
    """Optional integer query/form argument (absent or empty: ``None``)."""
    raw = args.get(field)
    if raw is None or raw == "":
        return None
    return parse_int(raw, field, minimum=minimum, maximum=maximum)


def float_arg(args: Mapping[str, Any], field: str) -> float | None:
    """Optional finite-number query/form argument (absent or empty: ``None``)."""
    raw = args.get(field)
    if raw is None or raw == "":
        return None
    return parse_float(raw, field)


def choice_arg(args: Mapping[str, Any], field: str, choices: tuple[str, ...], default: str | None = None) -> str | None:
    """Optional query argument that must be one of ``choices``."""
    raw = args.get(field)
    if raw is None or raw == "":
        return default
    if raw not in choices:
        raise bad_value(field, f"must be one of {list(choices)}, not {_show(raw)}")
    return str(raw)


# -- JSON bodies --------------------------------------------------------------------------------
def json_int(data: Mapping[str, Any], field: str, *, required: bool = True, minimum: int = INT64_MIN,
             maximum: int = INT64_MAX) -> int | None:
    """A JSON integer field (``3``; not ``true``, ``"3"`` or ``3.5``)."""
    if field not in data or data[field] is None:
        if required:
            raise bad_value(field, "is required (an integer)", code="missing_field")
        return None
    value = data[field]
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad_value(field, f"must be an integer, not {_show(value)}")
    return parse_int(value, field, minimum=minimum, maximum=maximum)


def require_int(data: Mapping[str, Any], field: str, *, minimum: int = INT64_MIN, maximum: int = INT64_MAX) -> int:
    """A required JSON integer field (see :func:`json_int`)."""
    value = json_int(data, field, minimum=minimum, maximum=maximum)
    if value is None:  # json_int raises for a missing required field; this narrows the type
        raise bad_value(field, "is required (an integer)", code="missing_field")
    return value


def require_number(data: Mapping[str, Any], field: str) -> float:
    """A required finite JSON number field (see :func:`json_number`)."""
    value = json_number(data, field)
    if value is None:
        raise bad_value(field, "is required (a number)", code="missing_field")
    return value


def json_number(data: Mapping[str, Any], field: str, *, required: bool = True) -> float | None:
    """A JSON number field, finite (``1.5`` or ``2``; not ``"abc"``, ``null``, ``[1]`` or ``true``)."""
    if field not in data:
        if required:
            raise bad_value(field, "is required (a number)", code="missing_field")
        return None
    value = data[field]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise bad_value(field, f"must be a number, not {_show(value)}")
    return parse_float(value, field)


def json_str(data: Mapping[str, Any], field: str, *, required: bool = True, max_length: int = 1000) -> str | None:
    """A JSON string field of at most ``max_length`` characters."""
    if field not in data or data[field] is None:
        if required:
            raise bad_value(field, "is required (a string)", code="missing_field")
        return None
    value = data[field]
    if not isinstance(value, str):
        raise bad_value(field, f"must be a string, not {_show(value)}")
    if len(value) > max_length:
        raise bad_value(field, f"must have at most {max_length} characters")
    return value


def json_bool(data: Mapping[str, Any], field: str, *, default: bool = False) -> bool:
    """A JSON boolean field (absent or null: ``default``)."""
    value = data.get(field)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise bad_value(field, f"must be true or false, not {_show(value)}")
    return value


def json_object(data: Mapping[str, Any], field: str, *, required: bool = True) -> dict[str, Any] | None:
    """A JSON object field."""
    value = data.get(field)
    if value is None:
        if required:
            raise bad_value(field, "is required (an object)", code="missing_field")
        return None
    if not isinstance(value, dict):
        raise bad_value(field, f"must be an object, not {_show(value)}")
    return value


# -- names ----------------------------------------------------------------------------------------
def name_problem(name: str) -> str | None:
    """Why ``name`` (already stripped) is no valid collection name, or ``None`` when it is."""
    if not name or len(name) > NAME_MAX_LENGTH or not _NAME_RE.fullmatch(name):
        return NAME_RULE
    return None


def check_name(raw: Any, field: str = "name") -> str:
    """A collection name, stripped; a 400 naming ``field`` unless it follows :data:`NAME_RULE`."""
    if not isinstance(raw, str):
        raise bad_value(field, f"must be a string, not {_show(raw)}", code="bad_name")
    name = raw.strip()
    problem = name_problem(name)
    if problem is not None:
        raise bad_value(field, problem, code="bad_name")
    return name


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


class Int64Converter(IntegerConverter):
    """The ``<int:...>`` URL converter bounded to ``bigint``: a larger id is a 404, not a database error."""

    def __init__(self, map: Any, fixed_digits: int = 0, min: int | None = None, max: int | None = None,  # noqa: A002
                 signed: bool = False) -> None:
        super().__init__(map, fixed_digits, min, INT64_MAX if max is None else max, signed)
