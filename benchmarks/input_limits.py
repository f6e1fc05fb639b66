"""Input hardening, measured (issue 12): the scrubber's email finder against the pattern it replaced
on growing adversarial texts, a whole scrub() on 1 MB adversarial texts, and the import reader on
a .gz of blank lines.

    python benchmarks/input_limits.py [--reference-max 50000]

Prints tables; the old pattern is only run up to ``--reference-max`` characters (it is quadratic:
200,000 characters took 55 s in the issue's probe).
"""

from __future__ import annotations

import argparse
import gzip
import io
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.datasets.readers import iter_lines, open_stream  # noqa: E402
from app.prompts.scrub import EMAIL_REFERENCE, _email_spans, scrub  # noqa: E402


def timed(fn, *args) -> float:
    started = time.perf_counter()
    fn(*args)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference-max", type=int, default=50_000)
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")

    print("\nemail finding: the old pattern on 'a.' * n/2 (every position starts a match attempt that scans to")
    print("the run's end), the linear finder on the same and on its own worst case, 'a.a@' * n/4 (an '@' every 4)")
    print(f"{'chars':>10} | {'old, a. run (s)':>15} | {'linear, a. run (s)':>18} | {'linear, a.a@ (s)':>16}")
    for n in (6_250, 12_500, 25_000, 50_000, 100_000, 1_000_000):
        text = "a." * (n // 2)
        old = f"{timed(lambda t: list(EMAIL_REFERENCE.finditer(t)), text):15.3f}" if n <= args.reference_max else f"{'(skipped)':>15}"
        print(f"{n:>10,} | {old} | {timed(_email_spans, text):18.3f} | {timed(_email_spans, 'a.a@' * (n // 4)):16.3f}")

    print("\nwhole scrub() on 1 MB adversarial texts")
    mb = 1_000_000
    cases = {
        "a. run": "a." * (mb // 2), "a.a@ repeated": "a.a@" * (mb // 4), "a@a. repeated": "a@a." * (mb // 4),
        "ssn + 100 spaces": ("ssn " + " " * 100) * (mb // 104), "emails": "bob.smith@example.com " * (mb // 22),
        "'1 ' repeated": "1 " * (mb // 2),
    }
    print(f"{'text':>18} | {'seconds':>8}")
    for name, text in cases.items():
        print(f"{name:>18} | {timed(scrub, text):8.2f}")

    print("\nimport reader: a .gz of newlines (the issue: a 200 KB .gz of newlines took 212 s)")
    print(f"{'decompressed':>12} | {'.gz size':>9} | {'seconds':>8}")
    piece = gzip.compress(b"\n" * 2**24, compresslevel=9)
    for mib in (64, 256, 512):
        data = piece * (mib // 16)

        def read_all(d=data):
            stream = open_stream(io.BytesIO(d), "x.jsonl.gz")
            for _ in iter_lines(stream):
                pass

        print(f"{mib:>8} MiB | {len(data) / 1024:>6.0f} KB | {timed(read_all):8.2f}")


if __name__ == "__main__":
    main()
