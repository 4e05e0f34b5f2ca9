"""plots/page.html: DVC's default plots page with vega, vega-lite and vega-embed inlined instead of loaded from a
CDN, so that `dvc plots show` and `dvc plots diff` draw on a machine without internet. .dvc/config names it
(plots.html_template, a path DVC resolves from .dvc/).

    python -m plots.offline_page check    # page.html holds exactly the files plots/vendor/SHA256SUMS lists
    python -m plots.offline_page update   # rebuild page.html, SHA256SUMS and the licences from npm (network)

Inlined, not linked: DVC copies the template's text into dvc_plots/index.html (or wherever -o points), so a
relative <script src> would resolve from that output folder and break for -o or for a page copied elsewhere.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PAGE = HERE / "page.html"
VENDOR = HERE / "vendor"
SUMS = VENDOR / "SHA256SUMS"

# (npm package, version, minified browser build inside the package), in load order: each is a UMD bundle that
# reads the previous one's global. The majors are those of DVC's own page (dvc_render.vega loads vega@5.20.2,
# vega-lite@5.2.0, vega-embed@6.18.2), so DVC's vega-lite v5 templates render as DVC means them; the versions are
# the newest of those majors because vega < 5.23 lets a crafted spec run script (CVE-2023-26486, CVE-2023-26487).
LIBRARIES = (
    ("vega", "5.33.1", "build/vega.min.js"),
    ("vega-lite", "5.23.0", "build/vega-lite.min.js"),
    ("vega-embed", "6.29.0", "build/vega-embed.min.js"),
)

# vega's npm tarball ships no LICENSE (nor do most of its sub-packages lately); vega-view comes from the same
# repository (vega/vega), is bundled into vega.min.js, and still carries that repository's licence text.
LICENSE_FROM = {"vega": "vega-view"}

# DVC fills a template with str.replace on these, everywhere in the text, inlined JavaScript included.
PLACEHOLDERS = ("{plot_divs}", "{scripts}", "{refresh_tag}")

# DVC's PAGE_HTML (dvc_render.html) without its scripts placeholder, which DVC fills with the CDN <script> tags.
# The charset is declared because the bundles hold non-ASCII characters and a file:// page has no HTTP header.
HEAD = """<!DOCTYPE html>
<html>
<head>
    <meta charset="utf-8">
    {refresh_tag}
    <title>DVC Plot</title>
"""
TAIL = """    <style>
        table {
            border-spacing: 15px;
        }
    </style>
</head>
<body>
    {plot_divs}
</body>
</html>
"""
SCRIPT = re.compile(r'<script data-package="([^"]+)" data-file="([^"]+)">(.*?)</script>', re.DOTALL)


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def sums_line(package: str, version: str, file: str, digest: str) -> str:
    """One `sha256sum` line, named as the file lies in the npm tarball extracted into a folder <package>@<version>,
    so `sha256sum -c` can check fresh downloads against it."""
    return f"{digest}  {package}@{version}/package/{file}\n"


def build_page(scripts: list[str], licences: dict[str, str], spdx: dict[str, str]) -> str:
    """The template text: `scripts` (one per LIBRARIES entry) inlined byte for byte, each licence's copyright
    line and SPDX id quoted in a comment (the full texts stay in plots/vendor/)."""
    for (package, _, _), script in zip(LIBRARIES, scripts):
        for bad in ("</script", "<!--", *PLACEHOLDERS):
            # The HTML parser would end the element early, or DVC would rewrite the code.
            if bad in script.lower():
                raise ValueError(f"{package}'s bundle contains {bad!r}: it cannot be inlined as is")
    credits = "\n".join(
        f"       {package}@{version} {file}: {licences[package].splitlines()[0].strip().rstrip('.')}, {spdx[package]}"
        for package, version, file in LIBRARIES
    )
    notice = (
        "    <!-- Offline DVC plots page, written by `python -m plots.offline_page update`: do not edit by hand.\n"
        "       Inlined unmodified from the npm registry (licence texts in the project's plots/vendor/):\n"
        f"{credits} -->\n"
    )
    inlined = "".join(
        f'    <script data-package="{package}@{version}" data-file="{file}">{script}</script>\n'
        for (package, version, file), script in zip(LIBRARIES, scripts)
    )
    return HEAD + notice + inlined + TAIL


def check() -> list[str]:
    """What is wrong with page.html against SHA256SUMS and LIBRARIES; empty when nothing is."""
    # Bytes, not read_text: newline translation would change the code the checksums are of.
    page = PAGE.read_bytes().decode("utf-8")
    expected = SUMS.read_bytes().decode("utf-8")
    found = SCRIPT.findall(page)
    listed = "".join(sums_line(*spec.split("@", 1), file, sha256(code)) for spec, file, code in found)
    wanted = [f"{package}@{version}" for package, version, _ in LIBRARIES]
    problems = []
    if [spec for spec, _, _ in found] != wanted:
        problems.append(f"page.html inlines {[spec for spec, _, _ in found]}, LIBRARIES says {wanted}")
    if listed != expected:
        problems.append(f"page.html's inlined code does not match {SUMS.relative_to(HERE.parent)}")
    for placeholder in ("{plot_divs}", "{refresh_tag}"):
        if page.count(placeholder) != 1:
            problems.append(f"page.html must hold {placeholder} exactly once")
    if "{scripts}" in page:
        problems.append("page.html holds DVC's scripts placeholder: DVC would add the CDN <script> tags")
    for package, _, _ in LIBRARIES:
        if not (VENDOR / f"LICENSE.{package}").is_file():
            problems.append(f"plots/vendor/LICENSE.{package} is missing")
    return problems


def npm_pack(spec: str, into: str) -> Path:
    """The registry tarball for `spec` (npm checks it against the registry's integrity hash)."""
    result = subprocess.run(["npm", "pack", spec, "--json", "--pack-destination", into],
                            check=True, capture_output=True, text=True)
    return Path(into) / json.loads(result.stdout)[0]["filename"]


def read_member(tarball: Path, name: str) -> str:
    # Read in memory: nothing from the tarball is written to disk, so its paths need no vetting.
    with tarfile.open(tarball) as tar:
        try:
            return tar.extractfile(f"package/{name}").read().decode("utf-8")
        except KeyError:
            raise SystemExit(f"{tarball.name} has no {name}: see LICENSE_FROM in {__file__}") from None


def update() -> None:
    """Fetch LIBRARIES from npm and rewrite page.html, SHA256SUMS and the LICENSE files."""
    scripts, licences, spdx = [], {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for package, version, file in LIBRARIES:
            tarball = npm_pack(f"{package}@{version}", tmp)
            scripts.append(read_member(tarball, file))
            meta = json.loads(read_member(tarball, "package.json"))
            spdx[package] = meta["license"]
            if package in LICENSE_FROM:
                source = LICENSE_FROM[package]
                tarball = npm_pack(f"{source}@{meta['dependencies'][source]}", tmp)
            licences[package] = read_member(tarball, "LICENSE")
    VENDOR.mkdir(exist_ok=True)
    for package, text in licences.items():
        (VENDOR / f"LICENSE.{package}").write_text(text, encoding="utf-8")
    SUMS.write_text("".join(sums_line(package, version, file, sha256(script))
                            for (package, version, file), script in zip(LIBRARIES, scripts)), encoding="utf-8")
    # newline="" keeps the bundles byte for byte on every platform, so their checksums hold.
    with PAGE.open("w", encoding="utf-8", newline="") as out:
        out.write(build_page(scripts, licences, spdx))


def main(argv: list[str]) -> int:
    if argv not in (["check"], ["update"]):
        print("usage: python -m plots.offline_page check|update", file=sys.stderr)
        return 2
    if argv == ["update"]:
        update()
    problems = check()
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
