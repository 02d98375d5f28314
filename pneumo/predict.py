"""Predict pneumonia for chest X-ray files and folders with the committed pneumo models.

Examples:
    python -m pneumo.predict assets/samples/                      # CSV to stdout, committed models
    python -m pneumo.predict --format json scan1.dcm scan2.png
    python -m pneumo.predict -o results.csv folder/                # the table into a new file
    python -m pneumo.predict --heatmaps out/ folder/               # also one overlay PNG per image
    python -m pneumo.predict --force adult_film.png                # a probability even outside the intended use

Output: the result table of pneumo.present.table, the same as the app's CSV download (JSON and JSON Lines have the
same fields): path,probability,label,threshold,error,warnings,note (+ heatmap with --heatmaps: the overlay's file,
empty when none was drawn)
- probability: P(pneumonia) with 6 decimals (JSON: a number); empty for an image outside the intended use (unless
  --force) or an error.
- label: NORMAL or PNEUMONIA at the model's stored threshold (the threshold column); OUT_OF_SCOPE for an image outside
  the intended use (with --force: NORMAL/PNEUMONIA, and the warnings stay); ERROR for a file that cannot be read
  (message in error).
- warnings: stable codes (see the README's table, or pneumo.checks.scope.WARNING_CODES), ';'-separated in CSV, a list
  in JSON; note: the same in plain words.
- Each row is written and flushed as soon as its file is done; a JSON array is closed even when the run is stopped.
  Control characters in names and messages are escaped (``\\x1b``), and a CSV text cell that a spreadsheet would read
  as a formula gets a leading apostrophe (pneumo.present.text.spreadsheet_safe).
- Only regular files are read: a device, FIFO or socket named on the command line is an ERROR row, and a folder scan
  names it (and broken links, and this tool's own overlays) among the skipped files. Folder scans take image
  suffixes and any file with the DICOM 'DICM' marker, whatever its name.
- Nothing is overwritten: --output must name a new file, and an overlay whose name is taken gets -2, -3, ...
Exit status: 0 when every file was read (OUT_OF_SCOPE is an answer), 2 when some could not be read or for a usage
error (argparse's), 1 when the models cannot be loaded or an output cannot be written (checked before the analysis
starts; the message says what), 130 on SIGINT (Ctrl-C) and 143 on SIGTERM (the rows finished so far are kept and the
output stays valid), 141 when the reader of stdout went away (``| head``; quietly). A folder scan names on stderr
every file it skips, with the reason and a count.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import itertools
import json
import logging
import os
import signal
import stat
import sys
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, closing, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from types import FrameType
from typing import IO, Any, NoReturn

import numpy as np
from PIL import Image, PngImagePlugin

from pneumo import __version__, config
from pneumo.explain.cam import shown_class
from pneumo.explain.draw import result_overlay
from pneumo.io.decode import load_many, not_regular
from pneumo.nets.lite import native_stderr_silenced
from pneumo.nets.modelfile import ModelFileError, default_model_path
from pneumo.pipeline import (
    ANALYSIS_DECODE,
    LABEL_ERROR,
    LABEL_OUT_OF_SCOPE,
    Models,
    analyze_stream,
    load_models,
    warm_up,
)
from pneumo.present.table import COLUMNS, HEATMAP_COLUMN, Row, csv_line, error_row, result_row
from pneumo.present.text import printable

log = logging.getLogger("pneumo.predict")

FIELDS = COLUMNS  # the one result schema (pneumo.present.table)
HEATMAP_FIELD = HEATMAP_COLUMN  # the extra column with --heatmaps
FORMATS = ("csv", "json", "jsonl")
# Text chunk ('Software') of every overlay PNG: folder scans recognise and skip this tool's own outputs by it.
HEATMAP_MARK = "pneumo-predict heatmap overlay"
EXIT_OK, EXIT_FAILED, EXIT_UNREADABLE, EXIT_BROKEN_PIPE = 0, 1, 2, 141
# Longest file-name stem (bytes) kept in an overlay's name: the suffixes added must fit in 255 bytes.
_MAX_STEM_BYTES = 160


@dataclass(frozen=True)
class Skipped:
    """A file a folder scan did not take, and why (in words)."""

    path: Path
    reason: str


class OutputError(Exception):
    """An output (the table, an overlay) cannot be written; the message is one line for stderr."""


class Stopped(BaseException):
    """SIGINT or SIGTERM arrived: the run ends between two rows (a BaseException, like KeyboardInterrupt)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


# ---- which files ------------------------------------------------------------------------------------------------
NOT_AN_IMAGE = "not a supported image type"


def _head(path: Path, n: int) -> bytes:
    """The first ``n`` bytes of a regular file (opened without blocking: the caller has checked it is regular)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            return b""
        return f.read(n)


def _why_skip(path: Path, is_link: bool) -> str | None:
    """None when a folder scan takes ``path``, else the reason it does not."""
    try:
        st = os.stat(path)  # follows a link
    except FileNotFoundError:
        return "a broken link" if is_link else "gone during the scan"
    except OSError as exc:
        return f"cannot be examined ({exc.strerror or type(exc).__name__})"
    if stat.S_ISDIR(st.st_mode):
        return "a link to a folder (not followed)"
    what = not_regular(st.st_mode)
    if what is not None:
        return f"{what}, not a regular file"
    suffix = path.suffix.lower()
    try:
        if suffix in config.IMAGE_SUFFIXES:
            if suffix == ".png" and HEATMAP_MARK.encode() in _head(path, 512):
                return "a heatmap overlay written by pneumo-predict"
            return None
        return None if _head(path, 132)[128:132] == b"DICM" else NOT_AN_IMAGE  # DICOM whatever the name
    except OSError as exc:
        if suffix in config.IMAGE_SUFFIXES:
            return None  # taken: its ERROR row says why it cannot be read
        return f"cannot be read ({exc.strerror or type(exc).__name__})"


def _scan_folder(root: Path) -> tuple[list[Path], list[Skipped]]:
    """Every file under ``root`` (recursively; links to folders are not followed) taken or skipped with a reason."""
    files: list[Path] = []
    skipped: list[Skipped] = []
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = list(it)
        except OSError as exc:
            skipped.append(Skipped(folder, f"a folder that cannot be read ({exc.strerror or type(exc).__name__})"))
            continue
        for entry in entries:
            path = Path(entry.path)
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(path)
                    continue
                is_link = entry.is_symlink()
            except OSError:
                is_link = False
            reason = _why_skip(path, is_link)
            if reason is None:
                files.append(path)
            else:
                skipped.append(Skipped(path, reason))
    return sorted(files), sorted(skipped, key=lambda s: s.path)


def collect_files(inputs: Iterable[str]) -> tuple[list[Path], list[Skipped]]:
    """(files to analyse, files skipped with the reason): files given directly are always kept (an unknown type, a
    device or a FIFO is then reported as an ERROR row); in folders, regular files with an image suffix or the DICOM
    marker are taken, and everything else (other files, FIFOs, devices, sockets, broken links, this tool's overlays)
    is skipped."""
    files: list[Path] = []
    skipped: list[Skipped] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found, left = _scan_folder(p)
            files += found
            skipped += left
        else:
            files.append(p)
    return files, skipped


def report_skipped(skipped: list[Skipped], err: IO[str]) -> None:
    """Name every file a folder scan skipped, with the reason and a count, on stderr (names escaped)."""
    if skipped:
        err.write(f"skipped {len(skipped)} file(s):\n")
        for s in skipped:
            err.write(f"  {printable(str(s.path))}  ({s.reason})\n")


# ---- outputs ------------------------------------------------------------------------------------------------------
class Table:
    """The results table, written row by row and flushed at once: CSV, a JSON array (``[`` first, ``]`` at the end,
    also when the run is stopped) or JSON Lines (one object per line)."""

    def __init__(self, out: IO[str], fmt: str, name: str, heatmaps: bool = False) -> None:
        self.out, self.fmt, self.name = out, fmt, name
        self.fields = FIELDS + ((HEATMAP_FIELD,) if heatmaps else ())
        self.rows = 0
        self.finished = False

    def _put(self, text: str) -> None:
        try:
            self.out.write(text)
            self.out.flush()
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise OutputError(f"cannot write the results to {self.name} ({exc.strerror or exc})") from None

    def start(self) -> None:
        """The header (CSV) or the opening bracket (JSON): written and flushed, so an unwritable output shows now."""
        if self.fmt == "csv":
            self._put(csv_line(self.fields))
        elif self.fmt == "json":
            self._put("[")

    def write(self, row: Row) -> None:
        if self.fmt == "csv":
            self._put(csv_line(row.csv_cells(self.fields)))
        elif self.fmt == "json":
            self._put(("," if self.rows else "") + "\n" + json.dumps(row.record(self.fields)))
        else:
            self._put(json.dumps(row.record(self.fields)) + "\n")
        self.rows += 1

    def finish(self) -> None:
        """Close a JSON array (once)."""
        if not self.finished and self.fmt == "json":
            self._put("\n]\n")
        self.finished = True


def write_rows(rows: Iterable[Row], fmt: str, out: IO[str]) -> None:
    """A whole table at once (``fmt``: csv, json or jsonl); the CLI writes its rows one by one instead."""
    table = Table(out, fmt, "the output")
    table.start()
    for r in rows:
        table.write(r)
    table.finish()


class Heatmaps:
    """The --heatmaps folder: created and tried before the analysis; an overlay never replaces a file (when
    ``x_heatmap.png`` exists, ``x_heatmap-2.png``, ``-3``, ... is used), and is never left half-written."""

    def __init__(self, folder: Path, files: list[Path]) -> None:
        self.folder = folder
        self._stems = Counter(f.stem for f in files)

    def check(self) -> None:
        """Create the folder and write (and remove) a file in it; OutputError when that fails."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(prefix=".pneumo-write-test-", dir=self.folder)
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            where = printable(str(self.folder))
            raise OutputError(f"cannot write heatmaps to {where} ({exc.strerror or exc})") from None

    def _stem(self, path: Path) -> str:
        """A flat name for an image's overlay: files of the same name in different folders get their path's hash."""
        raw = os.fsencode(path.stem)[:_MAX_STEM_BYTES]
        stem = os.fsdecode(raw)
        if self._stems[path.stem] > 1:
            stem += "_" + hashlib.sha256(os.fsencode(str(path))).hexdigest()[:8]
        return stem + "_heatmap"

    def save(self, png: bytes, path: Path) -> Path:
        """Write ``png`` (the overlay of the image at ``path``) under a name nobody uses; returns that file."""
        stem = self._stem(path)
        for i in itertools.count(1):
            target = self.folder / (f"{stem}.png" if i == 1 else f"{stem}-{i}.png")
            try:  # O_EXCL: fails on any existing name, a link included, so nothing is ever replaced
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o644)
                break
            except FileExistsError:
                if i >= 10_000:
                    raise OutputError(f"no free name for {printable(stem)}.png in the heatmap folder") from None
            except OSError as exc:
                raise OutputError(f"cannot write {printable(str(target))} ({exc.strerror or exc})") from None
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(png)
        except OSError as exc:
            target.unlink(missing_ok=True)  # no partial PNG
            raise OutputError(f"cannot write {printable(str(target))} ({exc.strerror or exc})") from None
        return target


def overlay_png(rgb: np.ndarray) -> bytes:
    """PNG bytes of an overlay (uint8 (H, W, 3)) with this tool's mark in its 'Software' text chunk."""
    info = PngImagePlugin.PngInfo()
    info.add_text("Software", HEATMAP_MARK)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "PNG", pnginfo=info)
    return buf.getvalue()


def _open_table_file(path: Path) -> IO[str]:
    """``path`` created for writing; it must not exist (OutputError otherwise, or when it cannot be created)."""
    try:
        return open(path, "x", encoding="utf-8", newline="")  # noqa: SIM115 - closed by the caller's ExitStack
    except FileExistsError:
        raise OutputError(f"{printable(str(path))} exists; results are never written over a file") from None
    except OSError as exc:
        raise OutputError(f"cannot create {printable(str(path))} ({exc.strerror or exc})") from None


def _silence_stdout() -> None:
    """The reader of stdout went away: point stdout at /dev/null, so that the flush at exit stays quiet."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        pass  # not a real file descriptor (tests capture stdout in memory)


# ---- signals ------------------------------------------------------------------------------------------------------
class _Signals:
    """SIGINT and SIGTERM raise :class:`Stopped`, except while a row (and its overlay) is being written: then the
    signal is held until the row is complete. After the first one, further signals are ignored while the run winds
    down. Outside the main thread (no signal handlers there) signals keep their defaults."""

    def __init__(self) -> None:
        self.held: int | None = None
        self.writing = False
        self.stopping = False
        self._old: dict[int, Any] = {}

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        if self.stopping:
            return
        if self.writing:
            self.held = signum
            return
        self.stopping = True
        raise Stopped(signum)

    def __enter__(self) -> _Signals:
        for s in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[s] = signal.signal(s, self._handler)
            except ValueError:  # not the main thread
                pass
        return self

    def __exit__(self, *exc: object) -> None:
        for s, handler in self._old.items():
            signal.signal(s, handler)

    @contextmanager
    def atomic(self) -> Iterator[None]:
        """Hold signals for the duration of the block; one that came meanwhile is raised after it."""
        self.writing = True
        try:
            yield
        finally:
            self.writing = False
        if self.held is not None and not self.stopping:
            self.stopping = True
            raise Stopped(self.held)


# ---- the run ------------------------------------------------------------------------------------------------------
def analyse(
    files: list[Path],
    models: Models,
    heatmaps: Heatmaps | None = None,
    batch_size: int = 32,
    force: bool = False,
    workers: int | None = None,
) -> Iterator[tuple[Path, Row, bytes | None]]:
    """(file, its row, its overlay's PNG bytes or None) for every file in order, through the one analysis path
    (pneumo.pipeline); unreadable files give ERROR rows. Texts in the rows are escaped (:func:`printable`)."""
    # decode in a thread pool (the decoders release the GIL) ahead of the analysis, and analyse several batches at
    # once (the networks release it too); the app's decode: same file, same answer
    stream = load_many(files, workers=workers, prefetch=batch_size, **ANALYSIS_DECODE)
    for f, res in analyze_stream(models, stream, batch_size, force=force):
        if isinstance(res, Exception):
            yield f, error_row(str(f), str(res), models.threshold), None
            continue
        png = None
        if heatmaps is not None and res.has_probability:
            png = overlay_png(result_overlay(res, models.classifier.metadata, shown_class(res, None, models.threshold)))
        yield f, result_row(res, models.threshold, str(f)), png


def run(
    files: list[Path],
    model_path: Path,
    heatmap_dir: Path | None = None,
    batch_size: int = 32,
    force: bool = False,
    workers: int | None = None,
) -> list[Row]:
    """All rows at once (a library call; the CLI streams them): ModelFileError when a model cannot be loaded."""
    models = _load(model_path)
    heatmaps = Heatmaps(heatmap_dir, files) if heatmap_dir is not None else None
    if heatmaps is not None:
        heatmaps.check()
    rows = []
    with closing(analyse(files, models, heatmaps, batch_size, force, workers)) as stream:
        for f, row, png in stream:
            if png is not None and heatmaps is not None:
                row = replace(row, heatmap=printable(str(heatmaps.save(png, f))))
            rows.append(row)
    return rows


def _load(model_path: Path) -> Models:
    models = load_models(model_path)  # the TFLite copies; ModelFileError when one is missing or stale
    with native_stderr_silenced():  # one run now, before any worker thread: LiteRT's start-up line stays off stderr
        warm_up(models)
    return models


class _Progress:
    """A progress bar on stderr (a terminal only); switched off for good if stderr cannot be written."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.enabled = total, enabled

    def __call__(self, done: int) -> None:
        if not self.enabled:
            return
        width = 30
        filled = int(width * done / max(self.total, 1))
        try:
            sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{self.total}")
            if done == self.total:
                sys.stderr.write("\n")
            sys.stderr.flush()
        except OSError:
            self.enabled = False


def _heatmaps_inside_inputs(heatmap_dir: Path, inputs: list[str]) -> None:
    """A note when the overlays go inside a folder being scanned (later scans skip them by their mark)."""
    hm = heatmap_dir.resolve()
    for item in inputs:
        p = Path(item)
        if p.is_dir() and hm.is_relative_to(p.resolve()):
            log.warning("the heatmap folder is inside the input folder %s: its overlays are marked, and folder scans "
                        "skip them", printable(item))  # fmt: skip
            return


class _Parser(argparse.ArgumentParser):
    """argparse, with control characters in its error messages (which may quote a file name) escaped."""

    def error(self, message: str) -> NoReturn:  # type: ignore[override]
        super().error(printable(message))


def _parser() -> argparse.ArgumentParser:
    # the help ends with the module docstring's examples, output columns and exit statuses, as written there
    p = _Parser(prog="pneumo-predict", description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    p.add_argument("paths", nargs="+", help="image files (PNG, JPEG, BMP, TIFF, DICOM) or folders (recursive)")
    p.add_argument("--model", type=Path, default=default_model_path(),
                   help=f"a .keras classifier with its .json (default: ${config.MODEL_ENV_VAR} or the committed "
                   "model); its lung model and the scope gate are taken from the same folder")  # fmt: skip
    p.add_argument("--format", choices=FORMATS, default="csv",
                   help="csv (default), json (one array, closed even when the run is stopped) or jsonl (JSON Lines: "
                   "one object per line)")  # fmt: skip
    p.add_argument("-o", "--output", type=Path, default=None,
                   help="write the table to this new file, not stdout (never over an existing file)")  # fmt: skip
    p.add_argument("--heatmaps", type=Path, default=None,
                   help="write one heatmap overlay PNG per image here (existing files are never replaced)")  # fmt: skip
    force_help = "give a probability and label even for images outside the intended use (warnings stay)"
    p.add_argument("--force", action="store_true", help=force_help)
    p.add_argument("--batch-size", type=int, default=32,
                   help="images decoded ahead (default 32); the networks run on batches of at most "
                   f"{config.PIPELINE_BATCH}, {config.ANALYSIS_WORKERS} at once")  # fmt: skip
    p.add_argument("--workers", type=int, default=None, help="decoding threads (default: up to 4, one per core)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    p = _parser()
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    # libraries' warnings about a file (pydicom's "Expected explicit VR", Pillow's EXIF notes) quote install paths and
    # say nothing the row does not: kept off stderr (logged at DEBUG, where nothing is shown by default)
    logging.captureWarnings(True)
    logging.getLogger("py.warnings").setLevel(logging.ERROR)
    if args.output is not None and (args.output.exists() or args.output.is_symlink()):
        p.error(f"{printable(str(args.output))} exists; results are never written over a file: name a new one")
    if args.batch_size < 1 or (args.workers is not None and args.workers < 1):
        p.error("--batch-size and --workers must be at least 1")
    if not args.model.exists():
        p.error(f"model not found: {printable(str(args.model))}")
    files, skipped = collect_files(args.paths)
    report_skipped(skipped, sys.stderr)
    if not files:
        p.error("no image files found in the given paths")
    heatmaps = Heatmaps(args.heatmaps, files) if args.heatmaps is not None else None
    if heatmaps is not None:
        _heatmaps_inside_inputs(args.heatmaps, args.paths)

    try:
        return _run_cli(args, files, heatmaps)
    except KeyboardInterrupt:  # before the handlers are in place (a long folder scan): nothing was written yet
        log.warning("stopped by SIGINT before the analysis started")
        return 128 + signal.SIGINT


def _run_cli(args: argparse.Namespace, files: list[Path], heatmaps: Heatmaps | None) -> int:
    """Open and check the outputs, load the models, then analyse and write row by row; returns the exit status."""
    created: Path | None = None  # the --output file, once this run has created it
    table: Table | None = None
    stream: Iterator[tuple[Path, Row, bytes | None]] | None = None
    done = 0
    with ExitStack() as stack:
        signals = stack.enter_context(_Signals())

        def wind_down() -> None:
            """Stop the analysis threads (they finish their batch) and close a JSON array, as far as possible."""
            signals.stopping = True
            if stream is not None:
                stream.close()
            if table is not None:
                try:
                    table.finish()
                except (OSError, OutputError):
                    pass

        try:
            # every output is checked before the models load and the analysis starts
            if args.output is not None:
                out = stack.enter_context(_open_table_file(args.output))
                created = args.output
            elif sys.stdout is None:
                raise OutputError("stdout is closed")
            else:
                out = sys.stdout
            name = printable(str(args.output)) if args.output is not None else "stdout"
            table = Table(out, args.format, name, heatmaps=heatmaps is not None)
            if heatmaps is not None:
                heatmaps.check()
            table.start()

            models = _load(args.model)
            progress = _Progress(len(files), not args.quiet and len(files) > args.batch_size and sys.stderr.isatty())
            stream = analyse(files, models, heatmaps, args.batch_size, args.force, args.workers)
            errors = 0
            no_overlay: Counter[str] = Counter()  # --heatmaps: rows that got no overlay, by label
            for f, row, png in stream:
                with signals.atomic():  # a row and its overlay are written whole, or not at all
                    if png is not None and heatmaps is not None:
                        row = replace(row, heatmap=printable(str(heatmaps.save(png, f))))
                    table.write(row)
                done += 1
                errors += row.label == "ERROR"
                no_overlay[row.label] += heatmaps is not None and not row.heatmap
                if done % args.batch_size == 0:
                    progress(done)
            progress(done)
            with signals.atomic():
                table.finish()
            if no_overlay[LABEL_OUT_OF_SCOPE]:
                log.warning("no heatmap for %d file(s) outside the intended use (--force draws them)",
                            no_overlay[LABEL_OUT_OF_SCOPE])  # fmt: skip
            if no_overlay[LABEL_ERROR]:
                log.warning("no heatmap for %d unreadable file(s)", no_overlay[LABEL_ERROR])
            return EXIT_UNREADABLE if errors else EXIT_OK
        except Stopped as stop:
            wind_down()
            what = {signal.SIGINT: "SIGINT", signal.SIGTERM: "SIGTERM"}.get(stop.signum, "a signal")
            log.warning("stopped by %s after %d of %d file(s); their rows are kept", what, done, len(files))
            return 128 + stop.signum
        except BrokenPipeError:
            signals.stopping = True
            if stream is not None:
                stream.close()
            _silence_stdout()
            return EXIT_BROKEN_PIPE
        except (OutputError, ModelFileError) as exc:
            wind_down()
            log.error("%s", printable(str(exc)))
            if created is not None and done == 0:
                stack.close()
                created.unlink(missing_ok=True)  # this run's own file, with no row in it
            return EXIT_FAILED
        finally:
            if stream is not None:
                stream.close()


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
