"""load_dataset: read any supported FER source into a FaceDataset, with an on-disk cache.

Sources:

* the Kaggle challenge CSV ``fer2013.csv`` (columns emotion,pixels,Usage; Usage Training,
  PublicTest, PrivateTest -> train, val, test; a CSV without a Usage column is all train);
* the Kaggle image-folder layout (``train/<class>/*.jpg``, ``test/<class>/*.jpg``) as a folder
  or a zip, read in place; see ferkit.data.imagefolders for the exact rules;
* a single-split class folder or zip (``<class>/*.png``): split "train".

Images of any size or mode become 48x48 grayscale (see ferkit.data.images). Bad entries raise
DataError naming the file and line/entry; with skip_bad=True they are left out and listed in
``dataset.skipped``. Only OS junk (``__MACOSX/``, ``.DS_Store``, ``Thumbs.db``,
``desktop.ini``, ``._*``) is ignored silently. Images that decode but make the decoder warn
(e.g. libjpeg's "Corrupt JPEG data: ... extraneous bytes") are loaded and listed in
``dataset.warnings`` with their entry; the warning does not reach stderr on its own.

The cache is keyed on the source's content (see ferkit.data.cache), so an edit that keeps the
size and mtime is still seen.
"""

from __future__ import annotations

import logging
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

from ferkit.data import cache
from ferkit.data.dataset import FaceDataset
from ferkit.errors import DataError

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
"""progress(done, total): called while decoding/parsing on a cache miss, never on a hit."""


def source_kind(path: Path, where: str) -> str:
    """'csv', 'zip' or 'folder' for an existing path; DataError for anything else."""
    if path.is_dir():
        return "folder"
    if not path.is_file():
        raise DataError(f"{where}: not a regular file or folder")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix == ".zip" or zipfile.is_zipfile(path):
        return "zip"
    raise DataError(f"{where}: unsupported file type {suffix or '(no extension)'!r}; expected a "
                    f"fer2013-style .csv, a .zip or a folder of class folders")


def load_dataset(path, *, skip_bad: bool = False, use_cache: bool = True,
                 progress: Progress | None = None) -> FaceDataset:
    """Load a FER2013 CSV, an image folder or a zip into a FaceDataset (see the module doc).

    skip_bad: leave bad entries out (listed in dataset.skipped) instead of raising DataError.
    use_cache: reuse/write the decoded arrays under $FERKIT_CACHE_DIR (default ~/.cache/ferkit).
    progress: optional callback progress(done, total), called only when actually decoding.
    """
    where = str(path)
    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(f"{where}: no such file or folder")
    kind = source_kind(p, where)
    t0 = time.perf_counter()

    def open_folder():
        from ferkit.data.imagefolders import FolderSource

        return FolderSource(p, where)

    def fingerprint(folder) -> str:
        try:
            if folder is not None:
                return cache.folder_fingerprint(p, folder.listing)
            return cache.file_fingerprint(p)
        except OSError as exc:
            raise DataError(f"{where}: cannot read ({exc.strerror or exc})") from None

    folder = open_folder() if kind == "folder" else None
    key = None
    if use_cache:
        before = _stat_signature(p)
        key = cache.CacheKey(p, kind, skip_bad, fingerprint(folder))
        ds = cache.load(key, where)
        if ds is not None:
            log.debug("%s: %d faces from cache in %.2fs", where, len(ds), time.perf_counter() - t0)
            return ds

    if kind == "csv":
        from ferkit.data.csvio import read_csv

        faces = read_csv(p, where, skip_bad=skip_bad, progress=progress)
    else:
        from ferkit.data.imagefolders import ZipSource, read_images

        source = folder if folder is not None else ZipSource(p, where)
        try:
            faces = read_images(source, skip_bad=skip_bad, progress=progress)
        finally:
            source.close()
    ds = faces.to_dataset(where)
    log.debug("%s: decoded %d faces in %.2fs (%d skipped, %d with warnings)", where, len(ds),
              time.perf_counter() - t0, len(ds.skipped), len(ds.warnings))
    if key is not None:
        # Written only if the source still is what was hashed: an edit during the decode must
        # not be cached under the old content's key. Any write to a file moves its ctime, which
        # nobody can set back, so comparing stat() (of each file, for a folder) is enough and
        # saves hashing everything twice.
        if kind == "folder":
            unchanged = open_folder().signature() == folder.signature()
        else:
            unchanged = _stat_signature(p) == before
        if unchanged:
            cache.store(key, ds)
        else:
            log.info("%s changed while it was read; not caching this load", where)
    return ds


def _stat_signature(path: Path) -> tuple[int, ...]:
    st = path.stat()
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns
