"""Run every benchmark: ``python -m bench`` (``make bench``), or one: ``python -m bench.<name>``.

Each benchmark is a module in this folder with a ``main()``; it prints its figures beside a baseline measured
in the same run, as a ratio. Benchmarks are discovered, so adding one needs no change here.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
import time
from pathlib import Path


def main() -> int:
    wanted = set(sys.argv[1:])
    names = sorted(
        m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)]) if not m.name.startswith("_")
    )
    failed = 0
    for name in names:
        if wanted and name not in wanted:
            continue
        module = importlib.import_module(f"bench.{name}")
        if not hasattr(module, "main"):
            continue
        print(f"\n=== bench.{name} ===", flush=True)
        started = time.perf_counter()
        try:
            module.main()
        except Exception as exc:  # keep going: one broken benchmark should not hide the others
            failed += 1
            print(f"bench.{name} failed: {exc!r}")
        print(f"(bench.{name}: {time.perf_counter() - started:.1f}s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
