"""`dvc plots show` and `dvc plots diff` draw every plot this project's dvc.yaml defines in a real headless Chromium
with the network cut, through the page template .dvc/config commits (plots/page.html, libraries inlined). The
control: DVC's default page, which loads the libraries from a CDN, draws none under the same conditions. The
validation chart draws only the epochs that were validated (.dvc/plots/linear_sparse.json), never a blank as 0."""

from __future__ import annotations

import csv
import html
import io
import json
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml
from configobj import ConfigObj
from conftest import dvc

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary (Debian: apt-get install chromium)")

# Headless as root in a container, nothing started in the background, and every request that would leave the
# machine fails: names resolve nowhere and anything proxied goes to the discard port, where nothing listens.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=127.0.0.1:9",
                  "--virtual-time-budget=15000"]

# Wraps vegaEmbed so that each view, once drawn, leaves what its data marks drew in a <pre> that --dump-dom brings
# back: every line vertex and point of role "mark" (legends and axes are other roles), its pixel position mapped
# back through the view's x and y scales, and the series (rev, filename) of the row it was drawn from.
OBSERVER = """<script>
(() => {
  const embed = window.vegaEmbed;
  window.vegaEmbed = (element, spec, options) => embed(element, spec, options).then((result) => {
    const view = result.view;
    const marks = [];
    const walk = (node) => {
      if (node.role === "mark" && (node.marktype === "line" || node.marktype === "symbol")) {
        marks.push({marktype: node.marktype, points: node.items.map((item) => ({
          rev: item.datum.rev, filename: item.datum.filename,
          x: view.scale("x").invert(item.x), y: view.scale("y").invert(item.y)}))});
      }
      for (const child of node.items || []) walk(child);
    };
    walk(view.scenegraph().root);
    const out = document.createElement("pre");
    out.className = "drawn-points";
    out.dataset.plot = element;
    out.textContent = JSON.stringify(marks);
    document.body.appendChild(out);
    return result;
  });
})();
</script>
"""
DRAWN_POINTS = re.compile(r'<pre class="drawn-points" data-plot="#([^"]+)">([^<]*)</pre>')
VALIDATION_PLOT = "Validation_mIoU_per_epoch"

CLASSES = ("background", "aeroplane", "bicycle", "bird")
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


def models() -> list[str]:
    return list(yaml.safe_load((REPO / "params.yaml").read_text())["models"])


def plots_defined() -> int:
    """How many plots dvc.yaml defines once its foreach stages are expanded over params.yaml's models."""
    definition = yaml.safe_load((REPO / "dvc.yaml").read_text())
    count = len(definition.get("plots") or [])
    for stage in definition["stages"].values():
        count += len(stage.get("do", stage).get("plots") or []) * (len(models()) if "foreach" in stage else 1)
    return count


def write_metrics(root: Path, shift: float) -> None:
    """Small made-up versions of what train and evaluate write, for every model; `shift` moves every value."""
    for rank, model in enumerate(models()):
        lines = ["epoch,loss,lr,val_miou,images_per_second"]
        for epoch in range(1, 7):
            # Blank on epochs without validation, as the train stage writes it.
            miou = f"{0.1 * epoch + 0.02 * rank + shift:.3f}" if epoch % 2 == 0 else ""
            lines.append(f"{epoch},{1.5 / epoch + shift:.4f},{0.01 * (1 - epoch / 7):.5f},{miou},{30 + rank}")
        (root / "metrics/train").mkdir(parents=True, exist_ok=True)
        (root / f"metrics/train/{model}.csv").write_text("\n".join(lines) + "\n")
        (root / "metrics" / model).mkdir(parents=True, exist_ok=True)
        per_class = [f"{name},{min(1.0, 0.5 + 0.1 * i + shift):.3f}" for i, name in enumerate(CLASSES)]
        (root / f"metrics/{model}/per_class.csv").write_text("\n".join(["class,iou", *per_class]) + "\n")
        confusion = [f"{truth},{prediction},{(1000 if truth == prediction else 10) + int(100 * shift) + rank}"
                     for truth in CLASSES for prediction in CLASSES]
        (root / f"metrics/{model}/confusion.csv").write_text("\n".join(["truth,prediction,pixels", *confusion]) + "\n")


class DrawnPlots(HTMLParser):
    """The id of the nearest element with an id around each drawn vega view: a <canvas> or <svg> of class "marks"
    (what vega-embed renders into) that vega gave a size."""

    def __init__(self) -> None:
        super().__init__()
        self.open_ids: list[str | None] = []
        self.drawn: list[str | None] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag in ("canvas", "svg") and "marks" in (attrs.get("class") or "").split():
            if float(attrs.get("width") or 0) > 0 and float(attrs.get("height") or 0) > 0:
                self.drawn.append(next((i for i in reversed(self.open_ids) if i), None))
        if tag not in VOID:
            self.open_ids.append(attrs.get("id"))

    def handle_endtag(self, tag):
        if tag not in VOID:
            self.open_ids.pop()


def rendered_dom(page: Path, profile: Path) -> str:
    """Open `page` from disk in headless Chromium without network; the document once its scripts have run."""
    result = subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom", page.as_uri()],
                            capture_output=True, text=True, timeout=90)
    assert result.returncode == 0 and "</html>" in result.stdout, result.stderr[-2000:]
    return result.stdout


def drawn_plots(page: Path, profile: Path) -> list[str | None]:
    """The ids of the plots `page` draws."""
    parser = DrawnPlots()
    parser.feed(rendered_dom(page, profile))
    return sorted(parser.drawn, key=str)


def drawn_points(page: Path, observed: Path, profile: Path) -> dict[str, list[dict]]:
    """What each plot of `page` drew (see OBSERVER), by plot id, from a copy of `page` at `observed` with the
    observer run after the inlined libraries (plots/offline_page.py tags them data-package) and before DVC's plots."""
    text = page.read_text(encoding="utf-8")
    end = text.index("</script>", text.rindex("<script data-package=")) + len("</script>")
    observed.write_text(text[:end] + OBSERVER + text[end:], encoding="utf-8")
    dom = rendered_dom(observed, profile)
    return {plot: json.loads(html.unescape(marks)) for plot, marks in DRAWN_POINTS.findall(dom)}


def validated_epochs(history: str) -> list[tuple[float, float]]:
    """(epoch, val_miou) of the rows of a train history CSV whose val_miou is not blank."""
    return [(float(row["epoch"]), float(row["val_miou"])) for row in csv.DictReader(io.StringIO(history))
            if row["val_miou"]]


def plot_ids(page: Path) -> list[str]:
    """The div of every plot DVC put on the page (its vega renderer calls vegaEmbed once per plot)."""
    return sorted(re.findall(r"vegaEmbed\('#([^']+)'", page.read_text(encoding="utf-8")))


@pytest.fixture(scope="module")
def pages(tmp_path_factory) -> dict[str, Path]:
    """A git + DVC repository with this project's plot definitions, template config and templates, and made-up
    metrics for every model; the pages of `dvc plots show`, `dvc plots diff` (HEAD against changed metrics) and,
    with the template config unset, `dvc plots show` on DVC's default page."""
    root = tmp_path_factory.mktemp("plots_repo")
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    dvc(root, "init", "-q")
    for name in ("dvc.yaml", "params.yaml", ".dvc/config"):
        shutil.copy(REPO / name, root / name)
    shutil.copytree(REPO / ".dvc/plots", root / ".dvc/plots", dirs_exist_ok=True)
    # Wherever the committed config points (DVC resolves it from .dvc/), the same place in the copy.
    template = (REPO / ".dvc" / ConfigObj(str(REPO / ".dvc/config"))["plots"]["html_template"]).resolve()
    (root / template.relative_to(REPO)).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(template, root / template.relative_to(REPO))
    write_metrics(root, shift=0.0)
    subprocess.run(["git", "add", "-A"], cwd=root, check=True)
    subprocess.run(["git", "-c", "user.name=test", "-c", "user.email=test@example.com", "commit", "-qm", "metrics"],
                   cwd=root, check=True)

    dvc(root, "plots", "show", "-o", "show")
    write_metrics(root, shift=0.05)
    dvc(root, "plots", "diff", "-o", "diff")
    dvc(root, "config", "--unset", "plots.html_template")
    dvc(root, "plots", "show", "-o", "cdn")
    return {name: root / name / "index.html" for name in ("show", "diff", "cdn")}


def test_committed_page_holds_exactly_the_checksummed_libraries():
    # Run as `make update-plot-libs` runs it: plots/ is a folder of the checkout, not an installed package.
    result = subprocess.run([sys.executable, "-m", "plots.offline_page", "check"], cwd=REPO,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.slow
@needs_chromium
@pytest.mark.parametrize("command", ["show", "diff"])
def test_every_plot_draws_without_network(pages, command, tmp_path):
    page = pages[command]
    text = page.read_text(encoding="utf-8")
    assert "<script src=" not in text, "the page still loads a script from elsewhere"
    if command == "diff":
        assert '"rev": "HEAD"' in text and '"rev": "workspace"' in text
    expected = plot_ids(page)
    assert len(expected) == plots_defined()
    assert drawn_plots(page, tmp_path / "profile") == expected


@pytest.mark.slow
@needs_chromium
@pytest.mark.parametrize("command", ["show", "diff"])
def test_validation_chart_draws_only_validated_epochs(pages, command, tmp_path):
    # Each rev on the page and the commit its histories were read from: show ran on a clean checkout of HEAD,
    # diff after the workspace's histories changed (None: the files on disk).
    source = {"show": {"workspace": "HEAD"}, "diff": {"HEAD": "HEAD", "workspace": None}}[command]
    root = pages[command].parents[1]
    expected = {}
    for rev, commit in source.items():
        for model in models():
            path = f"metrics/train/{model}.csv"
            history = (root / path).read_text() if commit is None else subprocess.run(
                ["git", "show", f"{commit}:{path}"], cwd=root, check=True, capture_output=True, text=True).stdout
            points = validated_epochs(history)
            assert 0 < len(points) < len(list(csv.DictReader(io.StringIO(history)))), "no blank cell to skip"
            expected[rev, Path(path).name] = [(round(x, 6), round(y, 6)) for x, y in points]

    marks = drawn_points(pages[command], tmp_path / "observed.html", tmp_path / "profile")[VALIDATION_PLOT]
    lines = [mark["points"] for mark in marks if mark["marktype"] == "line" and mark["points"]]
    points = [point for mark in marks for point in mark["points"]]
    assert {(point["rev"], point["filename"]) for point in points} == set(expected)
    for point in points:
        # The last validated epoch's dot as much as every vertex of the lines: nothing at a blank epoch, no 0.
        assert (round(point["x"], 6), round(point["y"], 6)) in expected[point["rev"], point["filename"]], point
    for line in lines:
        # Each series' line (DVC's template draws it twice: smoothed, and faint unsmoothed) joins all its points.
        drawn = sorted((round(point["x"], 6), round(point["y"], 6)) for point in line)
        assert drawn == expected[line[0]["rev"], line[0]["filename"]]
    assert len(lines) == 2 * len(expected)


@pytest.mark.slow
@needs_chromium
def test_control_dvc_default_page_draws_nothing_without_network(pages, tmp_path):
    page = pages["cdn"]
    assert "https://cdn.jsdelivr.net/npm/vega@5" in page.read_text(encoding="utf-8")
    assert len(plot_ids(page)) == plots_defined()
    assert drawn_plots(page, tmp_path / "profile") == []
