"""pipeline.ingest.archive on small archives, honest and hostile: VOC's tar (extract_segmentation) and a folders
dataset's tar, tar.gz or zip (extract_folders)."""

from __future__ import annotations

import io
import shutil
import stat
import subprocess
import tarfile
import zipfile

import numpy as np
import pytest
from PIL import Image

from pipeline.core.errors import PipelineError
from pipeline.core.labels import VOC_LABELS, flat_palette
from pipeline.core.params.data import DatasetParams
from pipeline.ingest.archive import extract_folders, extract_segmentation
from pipeline.ingest.layouts import extract_source

ROOT = "VOCdevkit/VOC2012"
TRAIN, VAL = ["2007_000032", "2007_000039"], ["2007_000033"]
UNLISTED = "2008_000008"  # a detection-only image: has a JPEG, is in no segmentation split


def jpeg(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((6, 8, 3), seed * 25, dtype=np.uint8)).save(buffer, format="JPEG")
    return buffer.getvalue()


def png(seed: int) -> bytes:
    label = Image.frombytes("P", (2, 2), bytes([0, seed, 255, seed]))
    label.putpalette(flat_palette(VOC_LABELS))
    buffer = io.BytesIO()
    label.save(buffer, format="PNG")
    return buffer.getvalue()


def voc_files(*, without: str | None = None) -> dict[str, bytes]:
    """Member name → content, like the real tar (minus a great many files), optionally without one member."""
    ids = TRAIN + VAL
    files = {
        f"{ROOT}/ImageSets/Segmentation/train.txt": "".join(f"{i}\n" for i in TRAIN).encode(),
        f"{ROOT}/ImageSets/Segmentation/val.txt": "".join(f"{i}\n" for i in VAL).encode(),
        f"{ROOT}/ImageSets/Segmentation/trainval.txt": "".join(f"{i}\n" for i in ids).encode(),
        f"{ROOT}/ImageSets/Main/train.txt": f"{UNLISTED}\n".encode(),
        f"{ROOT}/JPEGImages/{UNLISTED}.jpg": jpeg(9),
        f"{ROOT}/Annotations/{UNLISTED}.xml": b"<annotation/>",
    }
    for n, image_id in enumerate(ids, 1):
        files[f"{ROOT}/JPEGImages/{image_id}.jpg"] = jpeg(n)
        files[f"{ROOT}/SegmentationClass/{image_id}.png"] = png(n)
        files[f"{ROOT}/SegmentationObject/{image_id}.png"] = png(n)
        files[f"{ROOT}/Annotations/{image_id}.xml"] = b"<annotation/>"
    files.pop(without, None)
    return files


def write_tar(path, files: dict[str, bytes], extra: tarfile.TarInfo | None = None):
    """A tar with directory entries first, as in the real archive, then the files, then `extra` (if any) last,
    so that a member that fails the checks comes after everything that would be extracted."""
    with tarfile.open(path, "w") as tar:
        directories = sorted({"/".join(name.split("/")[:n]) for name in files for n in range(1, name.count("/") + 1)})
        for directory in directories:
            info = tarfile.TarInfo(directory)
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            tar.addfile(info)
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        if extra is not None:
            tar.addfile(extra, io.BytesIO(b"x" * extra.size) if extra.isfile() else None)
    return path


def all_files(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_extracts_only_what_segmentation_needs(tmp_path):
    files = voc_files()
    tar = write_tar(tmp_path / "voc.tar", files)
    counts = extract_segmentation(tar, tmp_path / "data" / "VOCdevkit", progress=False)

    wanted = sorted(name for name in files if name.startswith(
        (f"{ROOT}/ImageSets/Segmentation/", f"{ROOT}/SegmentationClass/")
    ) or name.startswith(f"{ROOT}/JPEGImages/2007_"))
    assert all_files(tmp_path / "data") == wanted
    for name in wanted:
        assert (tmp_path / "data" / name).read_bytes() == files[name]
    assert counts == {"train": 2, "val": 1, "trainval": 3, "images": 3, "labels": 3, "files": 9}
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["VOCdevkit"]  # no temporary dir left


def test_rerun_replaces_earlier_output(tmp_path):
    tar = write_tar(tmp_path / "voc.tar", voc_files())
    stale = tmp_path / "data" / ROOT / "JPEGImages" / "stale.jpg"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"old")
    extract_segmentation(tar, tmp_path / "data" / "VOCdevkit", progress=False)
    assert not stale.exists()
    assert (tmp_path / "data" / ROOT / "JPEGImages" / f"{TRAIN[0]}.jpg").exists()


def hostile(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    info.size = 4 if kind == tarfile.REGTYPE else 0
    info.devmajor, info.devminor = 1, 3
    return info


HOSTILE = {
    "dotdot": lambda tmp: hostile(f"{ROOT}/JPEGImages/../../../evil.txt"),
    "absolute": lambda tmp: hostile(str(tmp / "evil.txt")),
    "symlink": lambda tmp: hostile(f"{ROOT}/JPEGImages/link.jpg", tarfile.SYMTYPE, str(tmp / "evil.txt")),
    "hardlink": lambda tmp: hostile(f"{ROOT}/JPEGImages/hard.jpg", tarfile.LNKTYPE, f"{ROOT}/JPEGImages/{VAL[0]}.jpg"),
    "chardev": lambda tmp: hostile(f"{ROOT}/JPEGImages/null.jpg", tarfile.CHRTYPE),
    "fifo": lambda tmp: hostile(f"{ROOT}/SegmentationClass/pipe.png", tarfile.FIFOTYPE),
    "top level": lambda tmp: hostile("evil.txt"),
    "beside VOC2012": lambda tmp: hostile("VOCdevkit/VOC2007/evil.txt"),
    "oversized": lambda tmp: with_size(hostile(f"{ROOT}/JPEGImages/huge.jpg"), 17 * 2**20),
}


def with_size(info: tarfile.TarInfo, size: int) -> tarfile.TarInfo:
    info.size = size
    return info


@pytest.mark.parametrize("case", HOSTILE)
def test_hostile_member_is_refused_and_nothing_is_written(tmp_path, case):
    member = HOSTILE[case](tmp_path)
    tar = write_tar(tmp_path / "voc.tar", voc_files(), extra=member)
    with pytest.raises(PipelineError, match="refusing to extract member") as error:
        extract_segmentation(tar, tmp_path / "data" / "VOCdevkit", progress=False)
    assert repr(member.name) in str(error.value)
    assert "\n" not in str(error.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["voc.tar"]


@pytest.mark.skipif(shutil.which("tar") is None, reason="GNU tar writes the sparse member")
def test_a_sparse_member_is_refused_before_anything_is_written(tmp_path):
    """A GNU sparse member: 20 GiB declared, a few KB in the tar (Python's tarfile cannot write one; GNU tar can)."""
    tree = tmp_path / "tree"
    for name, data in voc_files().items():
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        (tree / name).write_bytes(data)
    with open(tree / ROOT / "JPEGImages" / f"{TRAIN[0]}.jpg", "r+b") as file:
        file.truncate(20 * 2**30)  # the rest of the JPEG becomes a hole
    tar = tmp_path / "voc.tar"
    subprocess.run(["tar", "--format=gnu", "--sparse", "-cf", str(tar), "-C", str(tree), "VOCdevkit"], check=True)
    assert tar.stat().st_size < 1_000_000
    with pytest.raises(PipelineError, match=r"refusing to extract member .*sparse file declaring 21474836480 bytes"):
        extract_segmentation(tar, tmp_path / "data" / "VOCdevkit", progress=False)
    assert not (tmp_path / "data").exists()


def test_truncated_tar_inside_a_member(tmp_path):
    tar = write_tar(tmp_path / "voc.tar", voc_files())
    with tarfile.open(tar) as archive:
        member = archive.getmember(f"{ROOT}/JPEGImages/{VAL[0]}.jpg")
    with open(tar, "r+b") as file:
        file.truncate(member.offset_data + member.size // 2)
    with pytest.raises(PipelineError, match=r"is truncated or corrupt \(.+\); delete it and rerun the download stage"):
        extract_segmentation(tar, tmp_path / "data" / "VOCdevkit", progress=False)
    assert not (tmp_path / "data" / "VOCdevkit").exists()


@pytest.mark.parametrize("into_header", [0, 100])
def test_truncated_tar_at_or_inside_a_header(tmp_path, into_header):
    """tarfile itself reads these as a complete, shorter archive."""
    tar = write_tar(tmp_path / "voc.tar", voc_files())
    with tarfile.open(tar) as archive:
        member = archive.getmember(f"{ROOT}/SegmentationClass/{VAL[0]}.png")
    with open(tar, "r+b") as file:
        file.truncate(member.offset + into_header)
    with pytest.raises(PipelineError, match="is truncated or corrupt .*end-of-archive"):
        extract_segmentation(tar, tmp_path / "data" / "VOCdevkit", progress=False)


def test_not_a_tar(tmp_path):
    tar = tmp_path / "voc.tar"
    tar.write_bytes(b"<html>404 not found</html>" * 100)
    with pytest.raises(PipelineError, match="is truncated or corrupt"):
        extract_segmentation(tar, tmp_path / "data" / "VOCdevkit", progress=False)


@pytest.mark.parametrize("missing", [
    f"{ROOT}/ImageSets/Segmentation/val.txt",
    f"{ROOT}/JPEGImages/{VAL[0]}.jpg",
    f"{ROOT}/SegmentationClass/{TRAIN[1]}.png",
])
def test_missing_split_file_or_listed_image(tmp_path, missing):
    tar = write_tar(tmp_path / "voc.tar", voc_files(without=missing))
    with pytest.raises(PipelineError, match=f"missing.*{missing}|{missing}.*missing"):
        extract_segmentation(tar, tmp_path / "data" / "VOCdevkit", progress=False)
    assert not (tmp_path / "data" / "VOCdevkit").exists()


def test_missing_tar(tmp_path):
    with pytest.raises(PipelineError, match="not found; run the download stage first"):
        extract_segmentation(tmp_path / "voc.tar", tmp_path / "data" / "VOCdevkit", progress=False)


# --- a folders dataset's tar, tar.gz or zip --------------------------------------------------------------------

FOLDERS_FILES = {"images/a.jpg": jpeg(1), "images/b.jpg": jpeg(2), "masks/a.png": png(1), "masks/b.png": png(2),
                 "splits/train.txt": b"a\n", "splits/val.txt": b"b\n"}


def write_zip(path, files: dict[str, bytes], link: str | None = None):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zip_file:
        for name, data in files.items():
            zip_file.writestr(name, data)
        if link is not None:  # a symbolic link, as `zip --symlinks` stores one: its mode in the external attributes
            info = zipfile.ZipInfo(link)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zip_file.writestr(info, "/etc/passwd")
    return path


def write_tgz(path, files: dict[str, bytes]):
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.mark.parametrize("pack, prefix", [(write_zip, ""), (write_zip, "plates/"), (write_tgz, ""),
                                          (write_tgz, "plates/"), (write_tar, "plates/")])
def test_a_folders_archive_is_unpacked_whole_from_its_root(tmp_path, pack, prefix):
    files = {f"{prefix}{name}": data for name, data in FOLDERS_FILES.items()}
    files["__MACOSX/plates/._a.jpg"] = b"resource fork"  # what macOS's archiver adds: skipped
    files[f"{prefix}images/._b.jpg"] = b"resource fork"
    archive = pack(tmp_path / "source.archive", files)  # the download stage's name: the format is read from content
    out = tmp_path / "data" / "source"
    counts = extract_folders(archive, out, images="images", masks="masks", progress=False)
    assert counts == {"files": 6, "images": 2, "masks": 2}
    assert all_files(out) == sorted(FOLDERS_FILES)
    assert (out / "masks/a.png").read_bytes() == FOLDERS_FILES["masks/a.png"]
    assert sorted(p.name for p in out.parent.iterdir()) == ["source"]  # no temporary directory left


def zip_with(tmp_path, **member) -> tuple:
    files = dict(FOLDERS_FILES)
    files.update(member.get("files", {}))
    return write_zip(tmp_path / "plates.zip", files, link=member.get("link"))


@pytest.mark.parametrize("member, problem", [
    ({"files": {"../../evil.txt": b"x"}}, r"'\.\.\./\.\./evil\.txt'|'\.\.' in its path"),
    ({"files": {"/etc/evil": b"x"}}, "absolute path"),
    ({"link": "images/c.jpg"}, "symbolic link"),
])
def test_a_hostile_zip_member_is_refused_and_nothing_is_written(tmp_path, member, problem):
    out = tmp_path / "data" / "source"
    (out / "images").mkdir(parents=True)
    (out / "images" / "kept.jpg").write_bytes(b"earlier")
    with pytest.raises(PipelineError, match=rf"plates\.zip: refusing to extract member .*{problem}"):
        extract_folders(zip_with(tmp_path, **member), out, images="images", masks="masks", progress=False)
    assert all_files(out) == ["images/kept.jpg"]  # the earlier tree, untouched
    assert sorted(p.name for p in out.parent.iterdir()) == ["source"]
    assert not (tmp_path / "evil.txt").exists()


def test_a_tgz_member_outside_the_root_is_refused(tmp_path):
    archive = write_tgz(tmp_path / "plates.tar.gz", {**FOLDERS_FILES, "../evil.txt": b"x"})
    with pytest.raises(PipelineError, match=r"refusing to extract member '\.\./evil\.txt' \('\.\.' in its path\)"):
        extract_folders(archive, tmp_path / "out", images="images", masks="masks", progress=False)
    assert not (tmp_path / "out").exists() and not (tmp_path / "evil.txt").exists()


def test_an_archive_without_the_folders_names_them(tmp_path):
    archive = write_zip(tmp_path / "plates.zip", {"photos/a.jpg": jpeg(1), "masks/a.png": png(1)})
    with pytest.raises(PipelineError, match=r"plates\.zip: no images/ and masks/ at its top or in its one top-level "
                                            r"folder \(dataset\.images, dataset\.masks\)"):
        extract_folders(archive, tmp_path / "out", images="images", masks="masks", progress=False)
    assert not (tmp_path / "out").exists()


def test_a_file_that_is_no_archive_or_a_truncated_one_is_one_line(tmp_path):
    (tmp_path / "page.html").write_bytes(b"<html>a mirror's error page</html>" * 50)
    with pytest.raises(PipelineError, match=r"page\.html: not a tar, tar\.gz or zip archive"):
        extract_folders(tmp_path / "page.html", tmp_path / "out", images="images", masks="masks", progress=False)
    whole = write_tgz(tmp_path / "whole.tar.gz", FOLDERS_FILES).read_bytes()
    (tmp_path / "cut.tar.gz").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(PipelineError, match=r"cut\.tar\.gz: .*(truncated|corrupt)"):
        extract_folders(tmp_path / "cut.tar.gz", tmp_path / "out", images="images", masks="masks", progress=False)
    assert not (tmp_path / "out").exists()


def test_the_voc_layout_from_a_compressed_archive_says_how_to_repack_it(tmp_path):
    archive = write_zip(tmp_path / "voc.zip", voc_files())
    with pytest.raises(PipelineError, match=r"voc\.zip: a zip archive; the voc layout is read from an uncompressed "
                                            r"tar like VOC's own"):
        extract_source(archive, tmp_path / "out", DatasetParams(), progress=False)
    tar = write_tar(tmp_path / "voc.tar", voc_files())
    counts = extract_source(tar, tmp_path / "out", DatasetParams(), progress=False)
    assert counts["labels"] == 3 and (tmp_path / "out/VOC2012/ImageSets/Segmentation/val.txt").is_file()
