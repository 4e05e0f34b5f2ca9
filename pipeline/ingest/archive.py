"""Safe extraction of the dataset's archive and of SBD's tgz: selective for VOC's tar and SBD's tgz (only what
semantic segmentation needs), whole for a folders dataset's tar, tar.gz or zip. Which one a dataset takes is its
layout's choice (`pipeline.ingest.layouts`).

Of VOC's 2 GB archive that is `ImageSets/Segmentation`, `SegmentationClass` and the JPEGs of the 2,913 ids the
segmentation splits list (of 17,125). Every member is checked before it is written (VOC's before any is), and the
result appears whole or not at all.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import tarfile
import zipfile
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
# Your own photos and masks may be far larger than VOC's, but no single image file of a dataset is this large.
MAX_FOLDERS_MEMBER_BYTES = 1024 * 2**20
FOLDERS_LARGEST = "an image or mask needs"


def compressed_kind(path: Path) -> str | None:
    """zip, gzip, bzip2 or xz when `path` is such an archive (by its first bytes), else None."""
    try:
        with open(path, "rb") as file:
            head = file.read(4)
    except OSError:
        return None  # extract_segmentation names what is wrong with the path
    if head.startswith(b"PK"):
        return "zip"
    return {b"\x1f\x8b": "gzip", b"BZ": "bzip2", b"\xfd7": "xz"}.get(head[:2])


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


def _hostile(member: tarfile.TarInfo, max_bytes: int = MAX_MEMBER_BYTES,
             largest: str = "any VOC or SBD file needs") -> str | None:
    """What makes `member` unsafe to extract from any archive, or None; `largest` says who needs `max_bytes`."""
    name = member.name
    problem = _hostile_name(name)
    if problem is not None:
        return problem
    if member.issym() or member.islnk():
        return f"{'symbolic' if member.issym() else 'hard'} link to {member.linkname!r}"
    if not (member.isfile() or member.isdir()):
        return "device, fifo or other special file"
    if member.sparse is not None:
        # A sparse member stores holes as a map: a few hundred bytes in the tar can expand to many gigabytes.
        return f"sparse file declaring {member.size} bytes"
    return _oversized(member.size, max_bytes, largest)


def _oversized(size: int, max_bytes: int, largest: str) -> str | None:
    return f"{size} bytes, more than the {max_bytes} {largest}" if size > max_bytes else None


def _hostile_name(name: str) -> str | None:
    """What makes a member's name unsafe to extract under any directory, or None."""
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return "absolute path"
    if ".." in PurePosixPath(name.replace("\\", "/")).parts:
        return "'..' in its path"
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


# --- a folders dataset (tar, tar.gz or zip) ----------------------------------------------------------------------

def extract_folders(archive: str | os.PathLike, out_dir: str | os.PathLike, *, images: str, masks: str,
                    progress: bool = True) -> dict:
    """Unpack a folders-layout dataset as `out_dir`: the archive's `<images>/` and `<masks>/` (and its split files)
    may sit at its top or in its one top-level folder, which becomes `out_dir`. Members are checked as they are
    read (no absolute paths, no '..', no links or special files, none over MAX_FOLDERS_MEMBER_BYTES), macOS's
    `__MACOSX/` and `._*` files are skipped, and `out_dir` appears only once the whole archive is unpacked and holds
    both folders. Returns the counts logged."""
    archive, out_dir = Path(archive), Path(out_dir)
    if not archive.is_file():
        raise PipelineError(f"{archive}: not found; run the download stage first")
    with atomic_dir(out_dir) as tmp:
        unpacked = tmp / ".unpacked"
        unpacked.mkdir()
        bar = Progress(None, desc=f"extract {archive.name}", unit="files", enabled=progress, logger=log)
        try:
            if zipfile.is_zipfile(archive):
                files = _unzip(archive, unpacked, bar)
            else:
                files = _untar(archive, unpacked, bar)
        finally:
            bar.close()
        root = _folders_root(archive, unpacked, images, masks)
        for child in root.iterdir():
            os.replace(child, tmp / child.name)
        shutil.rmtree(unpacked)
        counts = {"files": files, "images": sum(1 for _ in (tmp / images).iterdir()),
                  "masks": sum(1 for _ in (tmp / masks).iterdir())}
    log.info("extracted %s into %s: %s", archive, out_dir, counts)
    return counts


def _skipped(name: str) -> bool:
    """macOS's resource forks and Finder files, which its archivers add beside every file."""
    path = PurePosixPath(name)
    return path.parts[:1] == ("__MACOSX",) or path.name.startswith("._") or path.name == ".DS_Store"


def _untar(archive: Path, into: Path, bar: Progress) -> int:
    files = 0

    def checked(tar: tarfile.TarFile):
        nonlocal files
        for member in tar:
            if _skipped(member.name):
                continue
            problem = _hostile(member, MAX_FOLDERS_MEMBER_BYTES, FOLDERS_LARGEST)
            if problem is not None:
                raise _unsafe(archive, member.name, problem, "a safe dataset archive")
            files += member.isfile()
            bar.update(member.isfile())
            yield member

    try:
        # "r|*": one pass over a stream of any compression, so a tar.gz is decompressed once.
        with tarfile.open(archive, "r|*") as tar:
            tar.extractall(into, members=checked(tar), filter="data")
    except (tarfile.ReadError, tarfile.CompressionError) as error:
        raise PipelineError(f"{archive}: not a tar, tar.gz or zip archive, or a truncated one ({error}); check "
                            "data.urls, delete it and rerun the download stage") from None
    except (EOFError, zlib.error, UnicodeDecodeError) as error:
        raise _corrupt(archive, str(error) or type(error).__name__) from None
    except tarfile.FilterError as error:
        raise _unsafe(archive, error.tarinfo.name, str(error), "a safe dataset archive") from None
    return files


def _unzip(archive: Path, into: Path, bar: Progress) -> int:
    files = 0
    try:
        with zipfile.ZipFile(archive) as zip_file:
            for info in zip_file.infolist():
                if _skipped(info.filename):
                    continue
                problem = _hostile_zip(info)
                if problem is not None:
                    raise _unsafe(archive, info.filename, problem, "a safe dataset archive")
                target = into / info.filename
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                # ZipExtFile stops at the declared size and checks the CRC, so a member cannot grow past its check.
                with zip_file.open(info) as source, open(target, "wb") as out:
                    shutil.copyfileobj(source, out, 2**20)
                files += 1
                bar.update(1)
    except (zipfile.BadZipFile, EOFError, zlib.error) as error:
        raise _corrupt(archive, str(error) or type(error).__name__) from None
    except NotImplementedError as error:  # a compression method zipfile cannot read
        raise PipelineError(f"{archive}: {error}; repack it with deflate (zip's default) or as a tar.gz") from None
    return files


def _hostile_zip(info: zipfile.ZipInfo) -> str | None:
    problem = _hostile_name(info.filename)
    if problem is not None:
        return problem
    kind = stat.S_IFMT(info.external_attr >> 16)
    if kind == stat.S_IFLNK:
        return "symbolic link"
    if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
        return "device, fifo or other special file"
    if info.flag_bits & 0x1:
        return "encrypted"
    return _oversized(info.file_size, MAX_FOLDERS_MEMBER_BYTES, FOLDERS_LARGEST)


def _folders_root(archive: Path, unpacked: Path, images: str, masks: str) -> Path:
    """The directory holding `<images>/` and `<masks>/`: the archive's top, or its one top-level folder."""
    candidates = [unpacked]
    top = list(unpacked.iterdir())
    if len(top) == 1 and top[0].is_dir():
        candidates.append(top[0])
    for candidate in candidates:
        if (candidate / images).is_dir() and (candidate / masks).is_dir():
            return candidate
    raise PipelineError(f"{archive}: no {images}/ and {masks}/ at its top or in its one top-level folder "
                        "(dataset.images, dataset.masks); pack the dataset's root, or fix those keys")
