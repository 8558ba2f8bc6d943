"""Progress bars for the CLI's long operations (target builds, evaluations).

Drawn on stderr only for a person watching it (a terminal), and cleared when done, so that nothing of a bar is left
in front of the next output in the same terminal; piped or captured, nothing is written at all.
"""

from __future__ import annotations

import sys
from typing import Any

from tqdm import tqdm


def progress_bar(total: int | None, desc: str, unit: str = "it", enabled: bool = True, **options: Any) -> tqdm:
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, leave=False, dynamic_ncols=True,
                disable=not (enabled and sys.stderr.isatty()), **options)
