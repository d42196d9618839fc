"""What the scripts share: failing with one clear line on stderr and a JSON last line on stdout."""
from __future__ import annotations

import json
import math
import sys


def fail(message: str, code: int = 2, **extra) -> None:
    """Print `error: message` on stderr and {"error": message, ...} as the last stdout line, then exit."""
    print(f"error: {message}", file=sys.stderr)
    print(json.dumps({"error": message, **extra}))
    sys.exit(code)


def field_type(cls, name: str) -> type | None:
    """A dataclass field's plain type where it is bool, int, float or str (Optional[X] gives X), else None.
    `cls` may be the dataclass or an instance of it (whose hints are its class's)."""
    import typing
    try:
        hint = typing.get_type_hints(cls if isinstance(cls, type) else type(cls)).get(name)
    except (NameError, TypeError):
        return None
    args = [a for a in typing.get_args(hint) if a is not type(None)] if typing.get_origin(hint) is typing.Union else [hint]
    return args[0] if len(args) == 1 and args[0] in (bool, int, float, str) else None


def _float_or_nan(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan


def typed_value(text: str, default, kind: type | None = None):
    """A NAME=VALUE's value, typed like the field's default: true/false for a bool, a whole number for an
    int ("2" or "2.0"), a float, a string. A field whose default is None takes null (or none) or a value of
    its declared type `kind` (`field_type`) where that is known, else JSON (numbers, true/false, null,
    lists) or the text, as a collection's default does. Raises ValueError with the reason."""
    if default is None and kind is not None:
        return None if text.lower() in ("null", "none") else typed_value(text, kind())
    if isinstance(default, bool):
        if text.lower() not in ("true", "false"):
            raise ValueError(f"takes true or false, not {text!r}")
        return text.lower() == "true"
    if isinstance(default, int):
        try:
            return int(text)  # exact, however large (a seed)
        except ValueError:
            number = _float_or_nan(text)  # "2.0", "1e3"
        if not math.isfinite(number) or number != int(number):
            raise ValueError(f"takes whole numbers, not {text!r}")
        return int(number)
    if isinstance(default, float):
        number = _float_or_nan(text)
        if math.isnan(number):
            raise ValueError(f"takes numbers, not {text!r}")
        return number
    if isinstance(default, str):
        return text
    try:  # a field whose default is None (train.lr_d, train.channels_last, ...) or a collection
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_sets(items: list[str], settable: tuple[str, ...], defaults) -> dict:
    """`--set NAME=VALUE` items -> {NAME: value}, NAME one of `settable`, the value typed like
    `defaults`' NAME (a config dataclass; `typed_value`). Raises ValueError with the reason."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in settable:
            raise ValueError(f"--set takes NAME=VALUE with NAME one of {', '.join(settable)}, not {item!r}")
        try:
            out[key] = typed_value(value, getattr(defaults, key), field_type(defaults, key))
        except ValueError as e:
            raise ValueError(f"--set {key} {e}") from None
    return out
