"""The long fuzz run: `make fuzz` (python -m tests.fuzz.run --runs 1000000).

Coverage-guided with atheris (libFuzzer) when it is installed (`pip install atheris`, the
`fuzz` extra): one process fuzzes every target of tests/fuzz/targets.py, the input's first byte
choosing the target, starting from each target's valid seeds; the decoder packages are
instrumented for coverage. Without atheris it falls back to the seeded mutation engine of the
short run. Either way an undocumented error stops the run, prints the input, and exits non-zero
(atheris also writes it to a crash-* file); the end prints how many inputs ran and how long it took.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import sys
import tempfile
import time
from pathlib import Path


def _engine_mutate(runs: int, seed: int) -> int:
    from tests.fuzz.mutate import mutate
    from tests.fuzz.targets import TARGETS

    rng = random.Random(seed)
    targets = list(TARGETS.values())
    seeds = {t.name: t.seeds() for t in targets}
    counts = dict.fromkeys(seeds, 0)
    began = time.monotonic()
    for i in range(runs):
        target = targets[i % len(targets)]
        corpus = seeds[target.name]
        data = rng.randbytes(rng.randrange(64)) if i % 10 == 0 else mutate(rng, rng.choice(corpus), corpus)
        try:
            target.run(data)
        except Exception as exc:
            print(f"FINDING in {target.name}: {type(exc).__name__}: {exc}\ninput: {data!r}")
            return 1
        counts[target.name] += 1
    took = time.monotonic() - began
    print(f"mutation engine: {runs} inputs in {took:.1f} s ({runs / took:.0f}/s), no undocumented error; "
          f"per target: {counts}")
    return 0


def _engine_atheris(runs: int, seed: int) -> int:
    import atheris

    with atheris.instrument_imports(include=["crypto", "gossip", "peer", "cbor2"]):
        from tests.fuzz.targets import TARGETS
    targets = list(TARGETS.values())
    corpus = Path(tempfile.mkdtemp(prefix="meshpay-fuzz-"))
    for i, target in enumerate(targets):
        for j, data in enumerate(target.seeds()):
            (corpus / f"{target.name}-{j}").write_bytes(bytes([i]) + data)

    def one_input(data: bytes) -> None:
        if data:
            targets[data[0] % len(targets)].run(data[1:])

    print(f"atheris: {runs} inputs over {len(targets)} targets ({', '.join(t.name for t in targets)}), "
          f"seed corpus in {corpus}", flush=True)
    atheris.Setup([sys.argv[0], f"-runs={runs}", f"-seed={seed}", "-max_len=20000", "-print_final_stats=1",
                   str(corpus)], one_input)
    atheris.Fuzz()  # exits the process; libFuzzer prints "Done N runs in S second(s)"
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=1_000_000, help="inputs to try (default 1,000,000)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--engine", choices=("auto", "atheris", "mutate"), default="auto")
    args = parser.parse_args()
    engine = args.engine
    if engine == "auto":
        engine = "mutate"
        with contextlib.suppress(ImportError):
            import atheris  # noqa: F401

            engine = "atheris"
    began = time.monotonic()
    code = _engine_atheris(args.runs, args.seed) if engine == "atheris" else _engine_mutate(args.runs, args.seed)
    print(f"fuzz run took {time.monotonic() - began:.1f} s")
    return code


if __name__ == "__main__":
    sys.exit(main())
