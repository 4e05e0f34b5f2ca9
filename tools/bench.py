"""Benchmark the hot paths (prepare, the DataLoader, a training step, evaluation) on generated data, compare them
side by side with what a user would otherwise run (torchvision's loader, a plain fp32 step, torchmetrics); fail on
a regression.

    python -m tools.bench [--out bench/results.json] [--device auto]

Not a DVC stage: timings differ between machines and runs. Prints one markdown table per section, writes every
number to `--out` (the ratios under `comparisons`), and exits 2 when a measurement misses its target in
`devtools.bench.TARGETS` (one line each). About 2 minutes on an idle 2-core CPU; other processes using the
CPU slow it down and fail targets. On a GPU roughly 10 minutes (an estimate from its parts: the evaluation
comparison alone meets ~150 new image sizes per model, some with autotuning, and three models are compiled).
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

from devtools import bench
from pipeline.core.atomic import write_json
from pipeline.core.cli import run_stage
from pipeline.core.errors import PipelineError
from pipeline.core.runtime import resolve_device

log = logging.getLogger("tools.bench")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench/results.json")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    args = parser.parse_args()
    device = resolve_device(args.device)
    targets = bench.targets_for(device)
    with tempfile.TemporaryDirectory(prefix="voc-bench-") as workdir:
        results = bench.run(Path(workdir), device)
    missed = bench.check(results, targets)
    write_json(args.out, {**results, "targets": targets, "missed": missed})
    print(bench.markdown(results, targets))
    log.info("results written to %s", args.out)
    if missed:
        for line in missed:
            print(f"target missed: {line}", file=sys.stderr)
        raise PipelineError(f"{len(missed)} of {len(targets)} benchmark targets missed (listed above; other processes "
                            f"using the CPU or GPU slow every number down, so rerun on an idle machine first); "
                            f"see {args.out}")


if __name__ == "__main__":
    run_stage(main)
