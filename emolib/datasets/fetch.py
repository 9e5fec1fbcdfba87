"""Getting the real data, as nilearn's dataset fetchers do: cached under the data folder,
resumable, hash-checked, with a progress bar.

- :func:`fetch_emotion_annotations`: the Labs et al. (2015) annotations (CC0), the ``data/raw``
  folder of psychoinformatics-de/studyforrest-paper-emotionannotation, SHA-256-checked.
- :func:`fetch_ds000113`: the ``ses-movie`` BOLD runs of OpenNeuro ds000113 (subjects and
  runs selectable) with the top-level files the reader needs, from OpenNeuro's public S3
  bucket (plain HTTPS, no account).
- :func:`fetch_bold5000_release`: the BOLD5000 Release 1.0 ROI patterns and stimulus images,
  as zip files, extracted into the layout :func:`emolib.io.load_roi_rdms` reads.
- :func:`fetch_resnet50_weights`: torchvision's ImageNet weights of ResNet-50 (the file
  name carries the first hex digits of its SHA-256, checked), into the torch hub cache.

The data land under ``<data>/real/`` (:func:`emolib.paths.get_data_dir`), where the
notebooks look for them when no folder is given (:func:`real_data_dir`); a file already
there with the right hash is not downloaded again. Downloads go through pooch
(:func:`pooch.retrieve`) with a downloader that keeps what arrived in a ``.part`` file and
continues it with an HTTP ``Range`` request after a cut connection. Without network the
functions raise :class:`FetchError`, naming the address; the demo book then runs on
generated annotations and says so.

``python -m emolib.datasets.fetch {annotations,ds000113,bold5000,weights,all}`` (and
``make data``) fetch from the command line.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import zipfile
from collections.abc import Sequence
from pathlib import Path

from emolib.errors import InputDataError
from emolib.io.bids import STUDYFORREST_SUBJECTS
from emolib.paths import atomic_output_dir, get_data_dir

__all__ = [
    "ANNOTATIONS_URL", "ANNOTATION_FILES", "BOLD5000_ROIS", "BOLD5000_STIMULI", "FETCHED",
    "FetchError", "OPENNEURO_URL", "RESNET50_URL", "fetch_bold5000_release", "fetch_ds000113",
    "fetch_emotion_annotations", "fetch_files", "fetch_resnet50_weights", "fetched_dir",
    "main", "real_data_dir",
]

#: Raw annotation files of Labs et al. (2015) on GitHub.
ANNOTATIONS_URL = ("https://raw.githubusercontent.com/psychoinformatics-de/"
                   "studyforrest-paper-emotionannotation/master/data/raw/")
#: Their SHA-256 (the published CC0 files: audio-visual ``av1o*`` and audio-only ``ao1o*``
#: observers).
ANNOTATION_FILES = {
    "ao1o01.csv": "ccf29e6baa59fd977f7b4b8121fb9c3a824ee00a0bb2cbdabe020ddb90f4d95f",
    "ao1o02.csv": "df852396729adf9d7d49f760d1589f4958dd4c1a0cdaf4ad4856529a7e379e74",
    "ao1o03.csv": "a638352384597588b987469817656562b2672492897979af3088265523bbbaaa",
    "av1o01.csv": "e496a5ed1e0a0941d285ca402eeef25cbe449c1eae3aff64f1a0b699a3b3e486",
    "av1o02.csv": "d118802a0a32e8cb10b7a019d1ceb10613d4b7d06cd10d6ae7382a6150a8d7dd",
    "av1o03.csv": "6c7a502594485bb135f5a819cdac1766a70a29e84e7e3b93a9dda680cb426800",
    "av1o04.csv": "14c5ca803b029e58b7f71f32bc6eac4a2ab29cde280bf677c19f5110a703976b",
    "av1o05.csv": "973eef87da622b44baea2425faf595214129521226ca7b810ec8c4a900587f2b",
    "av1o06.csv": "bbfb0c1c55d797ed374c9642302bbfe32ba212149cd54df6852f644627cbd6cf",
    "av1o07.csv": "d34aadbb4673b7c977f6fa406d3b66a39aa8509fcac7afa8869c69fa5d68ffb7",
    "av1o08.csv": "7e8090ba74ace80fbd2d43c6f29c3936a216766fcaf94e2169b75ea6e398948d",
    "av1o09.csv": "cf76fa320f16db4f9549226da5adbfd019032d52c15f38513f697a791b4a6b00",
}
#: OpenNeuro's public S3 copy of ds000113 (``<url>/<path in the dataset>``).
OPENNEURO_URL = "https://s3.amazonaws.com/openneuro.org/ds000113/"
#: BOLD5000 Release 1.0 ROI patterns on figshare (file 12965447). Size and MD5 as a
#: third-party staging script records them, not confirmed here: a mismatch is reported
#: as such.
BOLD5000_ROIS = {"url": "https://ndownloader.figshare.com/files/12965447",
                 "name": "BOLD5000_ROIs.zip", "md5": "f7f4a987e52c6f8d5f53da0b45ee8eba",
                 "size": 4_212_682_377}
#: BOLD5000 stimulus images (``BOLD5000_Stimuli/``), where a third-party staging script
#: fetches them; no hash is published (pooch logs the SHA-256 of what arrived).
BOLD5000_STIMULI = {"url": "https://www.dropbox.com/s/5ie18t4rjjvsl47/BOLD5000_Stimuli.zip?dl=1",
                    "name": "BOLD5000_Stimuli.zip", "md5": None, "size": None}
#: torchvision's IMAGENET1K_V1 ResNet-50 weights (the name holds the SHA-256's first digits).
RESNET50_URL = "https://download.pytorch.org/models/resnet50-0676ba61.pth"

#: Bytes written at a time: what arrived before a cut is kept, up to the last whole block.
_CHUNK = 1 << 16


class FetchError(RuntimeError):
    """A download failed: no network, the server refused, or the file is not the one expected
    (the message names the address and what to do)."""


def real_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """Where fetched real data are cached: ``<data>/real``."""
    return get_data_dir(data_dir) / "real"


#: Folder of each fetched dataset below :func:`real_data_dir`.
FETCHED = {"annotations": "studyforrest/gump_emotions/raw", "ds000113": "ds000113",
           "bold5000": "bold5000"}


def fetched_dir(what: str, data_dir: str | os.PathLike | None = None) -> Path:
    """Where the fetcher of ``what`` (a key of :data:`FETCHED`) puts its data, and where the
    notebooks look for them when no folder is given."""
    return real_data_dir(data_dir) / FETCHED[what]


class _ResumableDownloader:
    """A pooch downloader that continues an interrupted download.

    What arrives is appended to ``.<name>.part`` beside the target; a later call asks the
    server for the rest (``Range: bytes=<have>-``) and starts over only when the server
    ignores the range. The complete file is then handed to pooch, which checks its hash.
    """

    def __init__(self, name: str, progress: bool, timeout: float = 60.0):
        self.name, self.progress, self.timeout = name, progress, timeout

    def __call__(self, url: str, output_file, pooch_obj, check_only: bool = False):
        import requests
        from tqdm.auto import tqdm

        out = Path(output_file)
        part = out.parent / f".{self.name}.part"
        have = part.stat().st_size if part.exists() else 0
        # byte ranges count the bytes on the wire: ask for them unencoded
        headers = {"Accept-Encoding": "identity", **({"Range": f"bytes={have}-"} if have else {})}
        try:
            with requests.get(url, headers=headers, stream=True, timeout=self.timeout) as r:
                size = _range_total(r.headers.get("Content-Range", ""))
                if r.status_code == 416 and size == have:  # nothing left: the part is whole
                    pass
                elif r.status_code == 416:  # the part is not a prefix of this file
                    part.unlink()
                    raise FetchError(f"{url}: the kept partial download ({have} bytes) does "
                                     f"not fit the file ({size} bytes); removed, run again")
                elif r.status_code not in (200, 206):
                    raise FetchError(f"{url}: the server answered HTTP {r.status_code}")
                else:
                    if r.status_code == 206 and _range_start(r.headers.get(
                            "Content-Range", "")) != have:
                        part.unlink()
                        raise FetchError(f"{url}: the server resumed at another byte than "
                                         f"the {have} kept; removed, run again")
                    if r.status_code == 200:  # the range was ignored: from the start
                        have = 0
                    total = r.headers.get("Content-Length")
                    total = int(total) + have if total is not None else None
                    with open(part, "ab" if have else "wb") as fh, tqdm(
                        total=total, initial=have, unit="B", unit_scale=True,
                        desc=self.name, disable=not self.progress,
                    ) as bar:
                        for block in r.iter_content(_CHUNK):
                            fh.write(block)
                            bar.update(len(block))
                    if total is not None and part.stat().st_size < total:
                        raise FetchError(f"{url}: the connection was cut at "
                                         f"{part.stat().st_size} of {total} bytes; run again "
                                         "to resume")
        except requests.exceptions.ConnectionError as err:
            raise FetchError(f"could not reach {url} ({type(err).__name__}): no network? "
                             f"What arrived so far is kept and resumed next time") from None
        except requests.exceptions.RequestException as err:
            raise FetchError(f"{url}: the download broke off ({type(err).__name__}); run "
                             "again to resume") from None
        shutil.move(part, out)


def _range_start(content_range: str) -> int | None:
    """First byte of a ``Content-Range: bytes a-b/n`` header (None if absent)."""
    head = content_range.removeprefix("bytes ").split("/")[0]
    return int(head.split("-")[0]) if head[:1].isdigit() else None


def _range_total(content_range: str) -> int | None:
    """Total size of a ``Content-Range`` header (``bytes a-b/n`` or ``bytes */n``)."""
    tail = content_range.rpartition("/")[2]
    return int(tail) if tail.isdigit() else None


def fetch_files(
    files: dict[str, tuple[str, str | None]],
    dest: str | os.PathLike,
    *,
    progress: bool = True,
) -> list[Path]:
    """Download files into ``dest``, each checked against its hash.

    Parameters
    ----------
    files : dict of str to (str, str or None)
        Local name (a path relative to ``dest``) -> ``(url, known hash)``, the hash as
        ``"<sha256>"``, ``"md5:<hex>"`` or ``"sha256:<hex>"``, or None where none is
        published (pooch then logs the SHA-256 of what arrived).
    dest : str or path-like
        Folder (created).
    progress : bool, default=True
        A progress bar per download.

    Returns
    -------
    list of pathlib.Path
        The local files, in the order of ``files``. A file already there (with the right
        hash, where one is known) is not downloaded again.

    Raises
    ------
    FetchError
        No network, an HTTP error, a cut connection (run again to resume), or a file whose
        hash differs (removed; the message names it and both hashes).
    """
    import pooch

    dest = Path(dest)
    out = []
    for name, (url, known) in files.items():
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            path = pooch.retrieve(url, known_hash=known, fname=target.name,
                                  path=target.parent, progressbar=False,
                                  downloader=_ResumableDownloader(target.name, progress))
        except ValueError as err:  # pooch: the hash of the download does not match
            raise FetchError(f"{url}: {err} The file was removed; if the source changed, "
                             "the recorded hash may be outdated") from None
        out.append(Path(path))
    return out


def fetch_emotion_annotations(
    data_dir: str | os.PathLike | None = None,
    *,
    url: str = ANNOTATIONS_URL,
    progress: bool = True,
) -> Path:
    """The Labs et al. (2015) raw annotation files (CC0), SHA-256-checked.

    Returns the folder, ``<data>/real/studyforrest/gump_emotions/raw``, to pass as the
    ``annotations_dir`` of the book's chapter 01 (found there by default).
    """
    dest = fetched_dir("annotations", data_dir)
    fetch_files({n: (url + n, h) for n, h in ANNOTATION_FILES.items()}, dest,
                progress=progress)
    return dest


def fetch_ds000113(
    subjects: Sequence[str] | None = None,
    runs: Sequence[int] | None = None,
    data_dir: str | os.PathLike | None = None,
    *,
    url: str = OPENNEURO_URL,
    progress: bool = True,
) -> Path:
    """The ``ses-movie`` BOLD runs of OpenNeuro ds000113 (about 150 MB a run).

    Parameters
    ----------
    subjects : sequence of str, optional
        Labels without ``sub-``; default the 15 subjects with the movie session.
    runs : sequence of int, optional
        Runs 1-8; default all.
    data_dir, url, progress
        Cache root, the dataset's address (OpenNeuro's S3 copy), progress bars.

    Returns
    -------
    pathlib.Path
        The BIDS root, ``<data>/real/ds000113``, as chapter 01's ``bids_dir`` (with
        ``dataset_description.json`` and the top-level ``task-movie_bold.json`` that gives
        every run its TR).
    """
    subjects = list(STUDYFORREST_SUBJECTS if subjects is None else subjects)
    runs = list(range(1, 9) if runs is None else runs)
    unknown = sorted(set(subjects) - set(STUDYFORREST_SUBJECTS))
    if unknown:
        raise ValueError(f"ds000113 has no movie session for subject(s) {unknown}; "
                         f"those with one: {list(STUDYFORREST_SUBJECTS)}")
    bad = [r for r in runs if r not in range(1, 9)]
    if bad:
        raise ValueError(f"the movie session has runs 1-8, not {bad}")
    names = ["dataset_description.json", "task-movie_bold.json"]
    names += [f"sub-{s}/ses-movie/func/sub-{s}_ses-movie_task-movie_run-{r}_bold.nii.gz"
              for s in subjects for r in runs]
    dest = fetched_dir("ds000113", data_dir)
    fetch_files({n: (url + n, None) for n in names}, dest, progress=progress)
    return dest


def _extract(archive: Path, dest: Path, member_root: str) -> Path:
    """Extract the members under ``member_root/`` of a zip into ``dest/member_root``
    (atomically: the folder is there complete or not at all); returns that folder."""
    target = dest / member_root
    if target.is_dir():
        return target
    with zipfile.ZipFile(archive) as zf, atomic_output_dir(target) as tmp:
        members = [m for m in zf.namelist()
                   if m.split("/", 1)[0] == member_root and not m.endswith("/")]
        if not members:
            raise InputDataError(archive, f"holds no {member_root}/ folder")
        for m in members:
            rel = Path(m).relative_to(member_root)
            if ".." in rel.parts:
                raise InputDataError(archive, f"member {m} points outside the archive")
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            with zf.open(m) as src, open(tmp / rel, "wb") as dst:
                shutil.copyfileobj(src, dst, _CHUNK)
    return target


def fetch_bold5000_release(
    data_dir: str | os.PathLike | None = None,
    *,
    rois: dict = BOLD5000_ROIS,
    stimuli: dict | None = BOLD5000_STIMULI,
    progress: bool = True,
) -> Path:
    """The BOLD5000 Release 1.0 ROI patterns (and the stimulus images), extracted.

    ``rois`` and ``stimuli`` are ``{"url", "name", "md5", "size"}`` (the defaults:
    :data:`BOLD5000_ROIS`, :data:`BOLD5000_STIMULI`); ``stimuli=None`` skips the images. A
    download whose size or MD5 differs from the recorded ones is kept and reported
    (:class:`FetchError`), not deleted.
    Returns ``<data>/real/bold5000``, holding ``ROIs/`` and ``BOLD5000_Stimuli/`` as the
    chapter's ``release_dir``.
    """
    root = fetched_dir("bold5000", data_dir)
    downloads = root / "downloads"
    for spec, member in ((rois, "ROIs"), (stimuli, "BOLD5000_Stimuli")):
        if spec is None:
            continue
        # the recorded size and MD5 are checked after the download, which is kept whatever
        # they say: they come from a third party, and 4 GB are not fetched again for a typo
        (archive,) = fetch_files({spec["name"]: (spec["url"], None)}, downloads,
                                 progress=progress)
        problems = []
        if spec.get("size") is not None and archive.stat().st_size != spec["size"]:
            problems.append(f"{archive.stat().st_size} bytes, {spec['size']} recorded")
        if spec.get("md5"):
            with open(archive, "rb") as fh:
                md5 = hashlib.file_digest(fh, "md5").hexdigest()
            if md5 != spec["md5"]:
                problems.append(f"MD5 {md5}, {spec['md5']} recorded")
        if problems:
            raise FetchError(f"{spec['url']}: {'; '.join(problems)}. The download is kept at "
                             f"{archive}: check it (e.g. unzip -t) and, if the recorded values "
                             "are what is wrong, pass md5=None and size=None to use it")
        _extract(archive, root, member)
    return root


def fetch_resnet50_weights(dest: str | os.PathLike | None = None, *,
                           url: str = RESNET50_URL, progress: bool = True) -> Path:
    """torchvision's ResNet-50 ImageNet weights, checked against the SHA-256 prefix in the
    file name (torchvision's convention), into ``dest``: by default the torch hub cache, where
    :func:`emolib.models.load_resnet50` finds them by name (the paper profile's
    ``weights: IMAGENET1K_V1``)."""
    import torch

    name = url.rsplit("/", 1)[-1]
    prefix = name.rsplit("-", 1)[-1].split(".")[0]
    dest = Path(torch.hub.get_dir()) / "checkpoints" if dest is None else Path(dest)
    (path,) = fetch_files({name: (url, None)}, dest, progress=progress)
    with open(path, "rb") as fh:
        digest = hashlib.file_digest(fh, "sha256").hexdigest()
    if not digest.startswith(prefix):
        path.unlink()
        raise FetchError(f"{url}: SHA-256 {digest[:12]}... does not start with {prefix}, as "
                         "its name says; the file was removed")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Fetch the real data of the paper profile.")
    parser.add_argument("what", choices=["annotations", "ds000113", "bold5000", "weights",
                                         "all"])
    parser.add_argument("--data-dir", help="data folder (default: $EMOLIB_DATA or data/)")
    parser.add_argument("--subjects", nargs="+", help="ds000113 subjects (default: all 15)")
    parser.add_argument("--runs", nargs="+", type=int, help="ds000113 runs (default: 1-8)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    kw = {"progress": not args.no_progress}
    jobs = {
        "annotations": lambda: fetch_emotion_annotations(args.data_dir, **kw),
        "ds000113": lambda: fetch_ds000113(args.subjects, args.runs, args.data_dir, **kw),
        "bold5000": lambda: fetch_bold5000_release(args.data_dir, **kw),
        "weights": lambda: fetch_resnet50_weights(**kw),
    }
    try:
        for name in (list(jobs) if args.what == "all" else [args.what]):
            print(f"{name}: {jobs[name]()}", flush=True)
    except FetchError as err:
        print(f"FAILED: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
