"""What the scripts share: failing with one clear line on stderr and a JSON last line on stdout."""
from __future__ import annotations

import json
import sys


def fail(message: str, code: int = 2, **extra) -> None:
    """Print `error: message` on stderr and {"error": message, ...} as the last stdout line, then exit."""
    print(f"error: {message}", file=sys.stderr)
    print(json.dumps({"error": message, **extra}))
    sys.exit(code)


def parse_sets(items: list[str], settable: tuple[str, ...], defaults) -> dict:
    """`--set NAME=VALUE` items -> {NAME: value}, NAME one of `settable`, the value of the type of
    `defaults`' NAME (a config dataclass); a bool is true or false. Raises ValueError with the reason."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in settable:
            raise ValueError(f"--set takes NAME=VALUE with NAME one of {', '.join(settable)}, not {item!r}")
        kind = type(getattr(defaults, key))
        if kind is bool:
            if value.lower() not in ("true", "false"):
                raise ValueError(f"--set {key} takes true or false, not {value!r}")
            out[key] = value.lower() == "true"
            continue
        try:
            out[key] = kind(value)
        except ValueError:
            raise ValueError(f"--set {key} takes {kind.__name__} values, not {value!r}") from None
    return out
