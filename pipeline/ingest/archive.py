"""Safe, selective extraction of the VOC 2012 tar and of SBD's tgz: only what semantic segmentation needs.

Of the 2 GB archive that is `ImageSets/Segmentation`, `SegmentationClass` and the JPEGs of the 2,913 ids the
segmentation splits list (of 17,125). Every member is checked before anything is written, and the result
appears whole or not at all.
"""

from __future__ import annotations

import logging
import os
import tarfile
import zlib
from pathlib import Path, PurePosixPath

from pipeline.core.atomic import atomic_dir
from pipeline.core.errors import PipelineError
from pipeline.core.progress import Progress
from pipeline.ingest import sbd, voc
from pipeline.ingest.sbd import SBD_ROOT
from pipeline.ingest.voc import ARCHIVE_ROOT

log = logging.getLogger(__name__)

TOP = ARCHIVE_ROOT.split("/")[0]  # "VOCdevkit": the directory extracted as devkit_dir
SPLIT_DIR = f"{ARCHIVE_ROOT}/{voc.SPLIT_DIR}"
LABEL_DIR = f"{ARCHIVE_ROOT}/{voc.LABEL_DIR}"
IMAGE_DIR = f"{ARCHIVE_ROOT}/{voc.IMAGE_DIR}"
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
    problem = _hostile(member)
    if problem is None and not (name == ARCHIVE_ROOT or name.startswith(f"{ARCHIVE_ROOT}/")
                                or (name == TOP and member.isdir())):
        problem = f"outside {ARCHIVE_ROOT}/"
    if problem is not None:
        raise _unsafe(tar_path, name, problem)


def _hostile(member: tarfile.TarInfo) -> str | None:
    """What makes `member` unsafe to extract from any archive, or None."""
    name = member.name
    parts = PurePosixPath(name).parts
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return "absolute path"
    if ".." in parts:
        return "'..' in its path"
    if member.issym() or member.islnk():
        return f"{'symbolic' if member.issym() else 'hard'} link to {member.linkname!r}"
    if not (member.isfile() or member.isdir()):
        return "device, fifo or other special file"
    if member.sparse is not None:
        # A sparse member stores holes as a map: a few hundred bytes in the tar can expand to many gigabytes.
        return f"sparse file declaring {member.size} bytes"
    if member.size > MAX_MEMBER_BYTES:
        return f"{member.size} bytes, more than the {MAX_MEMBER_BYTES} any VOC or SBD file needs"
    return None


def _unsafe(tar_path: Path, name: str, problem: str, archive: str = "the VOC archive",
            stage: str = "download") -> PipelineError:
    return PipelineError(
        f"{tar_path}: refusing to extract member {name!r} ({problem}); this is not {archive}, "
        f"delete it and rerun the {stage} stage"
    )


def _read_ids(tar: tarfile.TarFile, member: tarfile.TarInfo) -> list[str]:
    return tar.extractfile(member).read().decode("utf-8").split()


def _check_splits(tar_path: Path, ids: dict[str, list[str]]) -> None:
    for split in voc.SPLITS:
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
        needed.update((f"{IMAGE_DIR}/{image_id}{voc.IMAGE_SUFFIX}", f"{LABEL_DIR}/{image_id}{voc.LABEL_SUFFIX}"))
    missing = sorted(name for name in needed if name not in members or not members[name].isfile())
    if missing:
        raise PipelineError(
            f"{tar_path}: {missing[0]} is listed in {SPLIT_DIR} but missing from the archive"
            f"{f' (and {len(missing) - 1} more)' if len(missing) > 1 else ''}; delete it and rerun the download stage"
        )
    needed.update(name for name, member in members.items()
                  if member.isfile() and name.startswith((f"{SPLIT_DIR}/", f"{LABEL_DIR}/")))
    return sorted((members[name] for name in needed), key=lambda member: member.offset)


# --- SBD (benchmark.tgz) --------------------------------------------------------------------------------------

_SBD_FILES = {sbd.IMAGE_DIR: sbd.IMAGE_SUFFIX, sbd.LABEL_DIR: sbd.LABEL_SUFFIX}  # folder → suffix of its files

def extract_sbd(tgz_path: str | os.PathLike, out_dir: str | os.PathLike, *, progress: bool = True) -> dict:
    """Extract from SBD's `benchmark.tgz` only what trainaug needs, as `out_dir/{img,cls,train.txt,val.txt}`:
    the JPEG and `.mat` label of every id in SBD's train and val lists (not `inst/`, the instance labels).

    The archive is gzip-compressed, so it is read once, as a stream: each member is checked as it arrives and the
    wanted ones go into a temporary directory, which becomes `out_dir` only once the whole archive has been read
    and every listed id has its two files. Returns the counts written to the log.
    """
    tgz_path, out_dir = Path(tgz_path), Path(out_dir)
    if not tgz_path.is_file():
        raise PipelineError(f"{tgz_path}: not found; run the sbd stage (dvc repro sbd)")
    found: dict[str, set[str]] = {folder: set() for folder in _SBD_FILES}
    lists: dict[str, list[str]] = {}
    try:
        with atomic_dir(out_dir) as tmp, tarfile.open(tgz_path, "r|gz") as tar:
            for folder in _SBD_FILES:
                (tmp / folder).mkdir()
            for member in tar:
                problem = _hostile(member)
                if problem is not None:
                    raise _unsafe(tgz_path, member.name, problem, "SBD's benchmark.tgz", "sbd")
                kind, stem = _sbd_member(member)
                if kind is None:
                    continue
                data = tar.extractfile(member).read()
                if kind == "list":
                    lists[stem] = data.decode("utf-8").split()
                    (tmp / f"{stem}.txt").write_bytes(data)
                else:
                    (tmp / kind / f"{stem}{_SBD_FILES[kind]}").write_bytes(data)
                    found[kind].add(stem)
            listed = _check_sbd(tgz_path, lists, found, tmp)
    except (tarfile.ReadError, EOFError, OSError, UnicodeDecodeError, zlib.error) as error:
        if isinstance(error, OSError) and not isinstance(error, tarfile.TarError) and error.errno is not None:
            raise PipelineError(f"cannot extract {tgz_path} into {out_dir}: {error.strerror or error}") from None
        raise PipelineError(f"{tgz_path} is truncated or corrupt ({error or type(error).__name__}); delete it and "
                            "rerun the sbd stage") from None
    counts = {"train": len(lists["train"]), "val": len(lists["val"]), "ids": len(listed)}
    log.info("extracted SBD into %s: %s", out_dir, counts)
    return counts


def _sbd_member(member: tarfile.TarInfo) -> tuple[str | None, str]:
    """("img" | "cls" | "list", id or list name) for a member trainaug needs, (None, "") for any other."""
    if not member.isfile() or not member.name.startswith(f"{SBD_ROOT}/"):
        return None, ""
    path = PurePosixPath(member.name[len(SBD_ROOT) + 1:])
    if len(path.parts) == 1 and path.suffix == ".txt" and path.stem in sbd.LISTS:
        return "list", path.stem
    if len(path.parts) == 2 and _SBD_FILES.get(path.parts[0]) == path.suffix:
        return path.parts[0], path.stem
    return None, ""


def _check_sbd(tgz_path: Path, lists: dict[str, list[str]], found: dict[str, set[str]], tmp: Path) -> set[str]:
    """Both lists present and every listed id with its image and label; removes what no list names. Returns the
    listed ids."""
    for name in sbd.LISTS:
        if name not in lists:
            raise PipelineError(f"{tgz_path}: no {SBD_ROOT}/{name}.txt in it; this is not SBD's benchmark.tgz, "
                                "delete it and rerun the sbd stage")
    listed = {image_id for ids in lists.values() for image_id in ids}
    for kind, suffix in _SBD_FILES.items():
        missing = sorted(listed - found[kind])
        if missing:
            raise PipelineError(f"{tgz_path}: {SBD_ROOT}/{kind}/{missing[0]}{suffix} is listed but missing"
                                f"{f' (and {len(missing) - 1} more)' if len(missing) > 1 else ''}; delete it and "
                                "rerun the sbd stage")
        for extra in found[kind] - listed:  # in the archive but in neither list: trainaug never reads it
            (tmp / kind / f"{extra}{suffix}").unlink()
    return listed
