"""What the scripts share: failing with one clear line on stderr and a JSON last line on stdout."""
from __future__ import annotations

import json
import sys


def fail(message: str, code: int = 2, **extra) -> None:
    """Print `error: message` on stderr and {"error": message, ...} as the last stdout line, then exit."""
    print(f"error: {message}", file=sys.stderr)
    print(json.dumps({"error": message, **extra}))
    sys.exit(code)
