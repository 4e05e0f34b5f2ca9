"""Safe, selective extraction of the VOC 2012 tar: only what semantic segmentation needs.

Of the 2 GB archive that is `ImageSets/Segmentation`, `SegmentationClass` and the JPEGs of the 2,913 ids the
segmentation splits list (of 17,125). Every member is checked before anything is written, and the result
appears whole or not at all.
"""

from __future__ import annotations

import logging
import os
import tarfile
from pathlib import Path, PurePosixPath

from pipeline.atomic import atomic_dir
from pipeline.errors import PipelineError
from pipeline.progress import Progress
from pipeline.voc import ARCHIVE_ROOT, SPLITS

log = logging.getLogger(__name__)

TOP = ARCHIVE_ROOT.split("/")[0]  # "VOCdevkit": the directory extracted as devkit_dir
SPLIT_DIR = f"{ARCHIVE_ROOT}/ImageSets/Segmentation"
LABEL_DIR = f"{ARCHIVE_ROOT}/SegmentationClass"
IMAGE_DIR = f"{ARCHIVE_ROOT}/JPEGImages"
# Every file in the VOC tar is far smaller (JPEGs of at most 500×500 are under 1 MB): a member declaring more is a
# decompression bomb of another kind, refused before a byte is written.
MAX_MEMBER_BYTES = 16 * 2**20


def extract_segmentation(tar_path: str | os.PathLike, devkit_dir: str | os.PathLike, *, progress: bool = True) -> dict:
    """Extract the segmentation subset of the VOC tar as `devkit_dir` (the tar's `VOCdevkit`, holding `VOC2012`),
    replacing any earlier copy. Returns counts: ids per split file, and images, labels and files written."""
    tar_path, devkit_dir = Path(tar_path), Path(devkit_dir)
    if not tar_path.is_file():
        raise PipelineError(f"{tar_path}: not found; run the download stage first")
    try:
        # "r:" (no compression) keeps the file seekable, so reading every header skips over the image data
        # instead of decompressing 2 GB.
        with tarfile.open(tar_path, "r:") as tar:
            listed = tar.getmembers()
            for member in listed:
                _check_safe(tar_path, member)
            _check_complete(tar_path, listed)
            members = {member.name: member for member in listed}
            ids = {name: _read_ids(tar, member) for name, member in members.items()
                   if name.startswith(f"{SPLIT_DIR}/") and name.endswith(".txt") and member.isfile()}
            _check_splits(tar_path, ids)
            wanted = _select(tar_path, members, ids)
            with atomic_dir(devkit_dir) as tmp:
                bar = Progress(len(wanted), desc=f"extract {tar_path.name}", unit="files", enabled=progress,
                               logger=log)
                try:
                    for member in wanted:
                        # Names lose their "VOCdevkit/" prefix because `tmp` stands in for devkit_dir.
                        # The "data" filter re-checks what `_check_safe` already enforced, as a second line.
                        tar.extract(member.replace(name=member.name[len(TOP) + 1:], deep=False), tmp,
                                    filter="data")
                        bar.update(1)
                finally:
                    bar.close()
    except (tarfile.ReadError, EOFError, UnicodeDecodeError) as error:
        raise _corrupt(tar_path, str(error) or type(error).__name__) from None
    except tarfile.FilterError as error:
        raise _unsafe(tar_path, error.tarinfo.name, str(error)) from None
    except OSError as error:
        raise PipelineError(f"cannot extract {tar_path} into {devkit_dir}: {error.strerror or error}") from None

    names = [member.name for member in wanted]
    counts = {PurePosixPath(name).stem: len(split) for name, split in sorted(ids.items())}
    counts["images"] = sum(name.startswith(f"{IMAGE_DIR}/") for name in names)
    counts["labels"] = sum(name.startswith(f"{LABEL_DIR}/") for name in names)
    counts["files"] = len(names)
    log.info("extracted %d files into %s: %s", len(wanted), devkit_dir, counts)
    return counts


def _corrupt(tar_path: Path, why: str) -> PipelineError:
    return PipelineError(f"{tar_path} is truncated or corrupt ({why}); delete it and rerun the download stage")


def _check_complete(tar_path: Path, members: list[tarfile.TarInfo]) -> None:
    """tarfile notices a file that ends inside a member's data, but reads one cut at a member boundary or
    inside a header as a shorter archive; a complete one has a zero block (end of archive) after the last
    member's data."""
    end = 0
    if members:
        last = members[-1]
        end = last.offset_data + -(-last.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
    with open(tar_path, "rb") as file:
        file.seek(end)
        if file.read(tarfile.BLOCKSIZE) != bytes(tarfile.BLOCKSIZE):
            raise _corrupt(tar_path, "no end-of-archive marker after the last member")


def _check_safe(tar_path: Path, member: tarfile.TarInfo) -> None:
    name = member.name
    parts = PurePosixPath(name).parts
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        problem = "absolute path"
    elif ".." in parts:
        problem = "'..' in its path"
    elif member.issym() or member.islnk():
        problem = f"{'symbolic' if member.issym() else 'hard'} link to {member.linkname!r}"
    elif not (member.isfile() or member.isdir()):
        problem = "device, fifo or other special file"
    elif member.sparse is not None:
        # A sparse member stores holes as a map: a few hundred bytes in the tar can expand to many gigabytes.
        problem = f"sparse file declaring {member.size} bytes"
    elif member.size > MAX_MEMBER_BYTES:
        problem = f"{member.size} bytes, more than the {MAX_MEMBER_BYTES} any VOC file needs"
    elif not (name == ARCHIVE_ROOT or name.startswith(f"{ARCHIVE_ROOT}/") or (name == TOP and member.isdir())):
        problem = f"outside {ARCHIVE_ROOT}/"
    else:
        return
    raise _unsafe(tar_path, name, problem)


def _unsafe(tar_path: Path, name: str, problem: str) -> PipelineError:
    return PipelineError(
        f"{tar_path}: refusing to extract member {name!r} ({problem}); this is not the VOC archive, "
        f"delete it and rerun the download stage"
    )


def _read_ids(tar: tarfile.TarFile, member: tarfile.TarInfo) -> list[str]:
    return tar.extractfile(member).read().decode("utf-8").split()


def _check_splits(tar_path: Path, ids: dict[str, list[str]]) -> None:
    for split in SPLITS:
        if f"{SPLIT_DIR}/{split}.txt" not in ids:
            raise PipelineError(
                f"{tar_path}: missing {SPLIT_DIR}/{split}.txt, so the segmentation ids are unknown; "
                f"delete it and rerun the download stage"
            )


def _select(
    tar_path: Path, members: dict[str, tarfile.TarInfo], ids: dict[str, list[str]]
) -> list[tarfile.TarInfo]:
    """The split files, every label, and the JPEG of each listed id, in archive order so reads go forward."""
    needed = set(ids)
    for image_id in {image_id for split in ids.values() for image_id in split}:
        needed.update((f"{IMAGE_DIR}/{image_id}.jpg", f"{LABEL_DIR}/{image_id}.png"))
    missing = sorted(name for name in needed if name not in members or not members[name].isfile())
    if missing:
        raise PipelineError(
            f"{tar_path}: {missing[0]} is listed in {SPLIT_DIR} but missing from the archive"
            f"{f' (and {len(missing) - 1} more)' if len(missing) > 1 else ''}; delete it and rerun the download stage"
        )
    needed.update(name for name, member in members.items()
                  if member.isfile() and name.startswith((f"{SPLIT_DIR}/", f"{LABEL_DIR}/")))
    return sorted((members[name] for name in needed), key=lambda member: member.offset)
