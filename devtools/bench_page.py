"""The performance page's bench sections, generated from the results files of whole `make bench` runs.

A section of the page reads

    <!-- bench: bench/cpu.json -->
    …generated markdown…
    <!-- end bench -->

and holds exactly what `bench.markdown` renders from that file (path relative to the page), with the device,
the date and every target the run was held to, so a number on the page cannot drift from the run it came from.
A section whose file does not exist yet says so instead.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from devtools import bench
from pipeline.core.atomic import write_text
from pipeline.core.errors import PipelineError

SECTION = re.compile(r"(?P<open><!-- bench: (?P<source>\S+) -->\n).*?(?P<close><!-- end bench -->)", re.S)


def section_body(results_file: Path, shown_as: str) -> str:
    """The generated markdown for one results file (`shown_as`: its path as the page links it)."""
    if not results_file.is_file():
        return (f"Not measured yet: no single run has written `{shown_as}`. `make bench-page` after `make bench`\n"
                "on such a device fills this section (on a GPU, `bash devtools/gpu_session.sh` runs both and the\n"
                "rehearsal of every model).\n")
    results = json.loads(results_file.read_text())
    device = results["device"]
    seconds = results.get("seconds", {})
    missed = results.get("missed", [])
    lines = [f"Generated from [`{shown_as}`]({shown_as}), one `make bench` run on {device['name']} "
             f"({device['cpu_count']} CPU cores, torch {device['torch']}"
             + (f", {results['date']}" if results.get("date") else "") + ")"
             + (f" that took {seconds['total'] / 60:.1f} min" if "total" in seconds else "") + ". "
             + (f"Targets missed: {len(missed)} ({'; '.join(missed)})." if missed else "Every target met."), "",
             bench.markdown(results, results.get("targets", {})), ""]
    return "\n".join(lines)


def render(page_text: str, page_dir: Path) -> str:
    """`page_text` with every bench section regenerated from the file it names."""
    def replace(match: re.Match) -> str:
        source = match["source"]
        return match["open"] + section_body(page_dir / source, source) + match["close"]

    return SECTION.sub(replace, page_text)


def publish(results_file: Path, page: Path) -> Path:
    """Copy a run's results to `bench/<device type>.json` beside `page`, then regenerate the page's sections.
    Returns where the results went."""
    results = json.loads(results_file.read_text())
    kind = results["device"]["type"]
    target = page.parent / "bench" / f"{kind}.json"
    if f"<!-- bench: bench/{kind}.json -->" not in page.read_text():
        raise PipelineError(f"{page} has no section for bench/{kind}.json; add "
                            f"'<!-- bench: bench/{kind}.json -->' and '<!-- end bench -->' where it should go")
    write_text(target, results_file.read_text())
    write_text(page, render(page.read_text(), page.parent))
    return target
