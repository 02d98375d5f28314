"""Score an archive on Ray Data: files, folders or manifests in, a Parquet dataset out, resumable.

Examples:
    python -m pneumo.batch --out results/ archive/                       # embedded local Ray, this machine's cores
    python -m pneumo.batch --out results/ --resume archive/              # after a crash: only what has no row yet
    python -m pneumo.batch --out results/ --csv results.csv list.txt     # a manifest; also the CLI's CSV
    python -m pneumo.batch --address ray://head:10001 --out /shared/results s3://bucket/export/

INPUT: image files, folders (recursive, the CLI's rules: pneumo.predict.collect_files), manifests (``.txt``: one path
per line, ``#`` comments; ``.csv``: a ``path`` column) or object-store URIs (``s3://``, ``gs://``, ``file://``, read
through pyarrow's filesystem layer, as Ray Data reads them). Each file is decoded and analysed exactly as
``pneumo.predict`` does (pneumo.io.load_many with ANALYSIS_DECODE, then pipeline.analyze_stream), inside Ray actors
that load the networks once, so the rows are the CLI's rows.

Output: DIR holds ``part-*.parquet`` files (one pyarrow dataset) with the columns path, probability, label, error,
warnings (the CLI's), model_sha256 (the classifier's .keras file) and pneumo_version. Parts are committed as results
arrive (written to a hidden temporary name, then renamed), so a killed job keeps every committed part and
``--resume`` scores only the inputs without a row. Exit status: 0 when every file was read, 2 when some could not be
(their ERROR rows are in DIR) or for a usage error, 1 when the models or Ray cannot be started.
"""

from __future__ import annotations

import argparse
import csv
import fcntl
import io
import logging
import os
import re
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pneumo import __version__, config
from pneumo.io.decode import ImageLoadError, LoadedImage, load_image, load_many
from pneumo.nets.lite import native_stderr_silenced
from pneumo.nets.modelfile import ModelFileError, default_model_path, file_sha256
from pneumo.pipeline import ANALYSIS_DECODE, LABEL_ERROR, LABEL_OUT_OF_SCOPE, analyze_stream, load_models, warm_up
from pneumo.predict import Skipped, analyse, collect_files, report_skipped
from pneumo.present.table import COLUMNS, Row, csv_line, error_row, result_row

log = logging.getLogger("pneumo.batch")

SCHEMA = pa.schema(
    [  # the result table's columns (pneumo.present.table.COLUMNS), then the batch job's own
        ("path", pa.string()),  # as the CLI writes it: control characters escaped
        ("probability", pa.float64()),  # null: out of scope (unless --force) or unreadable, as the CLI's empty field
        ("label", pa.string()),
        ("threshold", pa.float64()),
        ("error", pa.string()),
        ("warnings", pa.list_(pa.string())),  # the codes, as the CLI's JSON lists them
        ("note", pa.string()),
        ("model_sha256", pa.string()),
        ("pneumo_version", pa.string()),
        ("source", pa.binary()),  # the input exactly as given (os.fsencode): resume and de-duplication key on it
    ]
)
MANIFEST_SUFFIXES = (".txt", ".csv")
PART_GLOB = "part-*.parquet"
TMP_PREFIX = ".tmp-"  # pyarrow.dataset ignores names starting with "." or "_": a half-written part never counts
LOCK_NAME = ".pneumo-batch.lock"
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


class BatchError(Exception):
    """A usage problem the user must fix (the message says what); exit status 2."""


def is_uri(item: str) -> bool:
    """True for ``scheme://...`` (s3, gs, file, ...): read through pyarrow's filesystem layer."""
    return bool(_URI.match(item))


# ------------------------------------------------------------------------------------------------------------ inputs
def read_manifest(path: Path) -> list[str]:
    """The entries of a manifest, as written: ``.txt`` one per line (blank lines and ``#`` comments skipped),
    ``.csv`` the ``path`` column. Relative paths are relative to the current folder, like paths on the command line."""
    text = path.read_text(encoding="utf-8-sig")
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(io.StringIO(text))
        if "path" not in (reader.fieldnames or []):
            raise BatchError(f"manifest {path} has no 'path' column (columns: {', '.join(reader.fieldnames or [])})")
        return [r["path"].strip() for r in reader if (r["path"] or "").strip()]
    return [s for s in (ln.strip() for ln in text.splitlines()) if s and not s.startswith("#")]


def _list_uri(uri: str) -> tuple[list[str], list[Skipped]]:
    """(files, skipped) under an object-store URI: a file is kept; a folder (prefix) is listed recursively and only
    image suffixes are kept, as for local folders."""
    from pyarrow import fs as pafs

    filesystem, root = pafs.FileSystem.from_uri(uri)
    info = filesystem.get_file_info(root)
    if info.type != pafs.FileType.Directory:
        return [uri], []
    scheme = uri.split("://", 1)[0]
    entries = filesystem.get_file_info(pafs.FileSelector(root, recursive=True))
    names = sorted(f"{scheme}://{e.path}" for e in entries if e.type == pafs.FileType.File)
    keep = [n for n in names if Path(n).suffix.lower() in config.IMAGE_SUFFIXES]
    skip = [Skipped(Path(n), "not a supported image type") for n in names if n not in keep]
    return keep, skip


def expand_inputs(inputs: list[str], manifests: bool = True) -> tuple[list[str], list[Skipped]]:
    """(paths to score, files skipped): folders through pneumo.predict.collect_files (the CLI's rules), manifests
    read (their entries expanded the same way, not as manifests again), URIs listed through pyarrow. Duplicates are
    dropped (first one kept): every input gets exactly one row."""
    files: list[str] = []
    skipped: list[Skipped] = []
    for item in inputs:
        if is_uri(item):
            keep, skip = _list_uri(item)
        elif manifests and Path(item).suffix.lower() in MANIFEST_SUFFIXES and Path(item).is_file():
            keep, skip = expand_inputs(read_manifest(Path(item)), manifests=False)
        else:
            found, skip = collect_files([item])
            keep = [str(f) for f in found]
        files.extend(keep)
        skipped.extend(skip)
    unique = list(dict.fromkeys(files))
    if len(unique) < len(files):
        log.warning("%d input(s) named more than once: each is scored once", len(files) - len(unique))
    return unique, skipped


# ------------------------------------------------------------------------------------------------------- the actor
def _read_uri(uri: str, cache: dict[str, Any]) -> LoadedImage | ImageLoadError:
    """Decode one object-store file as the CLI decodes a local one (same size limit, ANALYSIS_DECODE)."""
    from pyarrow import fs as pafs

    try:
        key = uri.split("://", 1)[0] + "://" + uri.split("://", 1)[1].split("/", 1)[0]
        if key not in cache:
            cache[key] = pafs.FileSystem.from_uri(uri)[0]
        _, path = pafs.FileSystem.from_uri(uri)
        with cache[key].open_input_stream(path) as f:
            data = f.read(config.MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        return ImageLoadError("File not found.")
    except (OSError, pa.ArrowException) as exc:
        return ImageLoadError(f"The file cannot be read ({type(exc).__name__}).")
    try:
        return load_image(data, name=uri.rsplit("/", 1)[-1], **ANALYSIS_DECODE)
    except ImageLoadError as exc:
        return exc


class Scorer:
    """Ray Data's stateful callable: loads the networks once per actor, then scores batches of paths.

    In: {"source": the inputs as bytes (B,)}. Out: a pyarrow Table (B rows, :data:`SCHEMA`), one row per input.
    """

    def __init__(self, model_path: str, force: bool, threads: int) -> None:
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
        self.models = load_models(model_path)
        with native_stderr_silenced():
            warm_up(self.models)
        self.sha = file_sha256(model_path)
        self.force = force
        self.threads = max(1, threads)
        self.fs_cache: dict[str, Any] = {}

    def _one(self, path: str) -> LoadedImage | ImageLoadError:
        if is_uri(path):
            return _read_uri(path, self.fs_cache)
        try:
            return load_image(path, **ANALYSIS_DECODE)
        except ImageLoadError as exc:
            return exc

    def _stream(self, paths: list[str]) -> Iterator[tuple[str, LoadedImage | ImageLoadError]]:
        """(path, image or error) in order: local paths exactly as the CLI (load_many); a batch with URIs through
        pyarrow, config.BATCH_URI_READS reads in flight (an object store answers each in tens of ms)."""
        if not any(is_uri(p) for p in paths):
            yield from load_many(paths, workers=self.threads, prefetch=len(paths), **ANALYSIS_DECODE)
            return
        with ThreadPoolExecutor(config.BATCH_URI_READS, thread_name_prefix="pneumo-batch-read") as pool:
            yield from zip(paths, pool.map(self._one, paths), strict=True)

    def _rows(self, paths: list[str]) -> Iterator[Row]:
        """The CLI's rows: pneumo.predict.analyse for local files; URIs through the same analyze_stream and rows."""
        threshold = self.models.threshold
        if not any(is_uri(p) for p in paths):
            files = [Path(p) for p in paths]
            for _, row, _ in analyse(files, self.models, None, len(paths), self.force, self.threads):
                yield row
            return
        for f, res in analyze_stream(self.models, self._stream(paths), len(paths), self.threads, self.force):
            yield error_row(f, str(res), threshold) if isinstance(res, Exception) else result_row(res, threshold, f)

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        sources = [bytes(b) for b in batch["source"]]
        paths = [os.fsdecode(b) for b in sources]
        try:
            rows = list(self._rows(paths))
        except Exception:  # noqa: BLE001 - one file must not fail the job: score them one by one to find it
            rows = []
            for p in paths:
                try:
                    rows.extend(self._rows([p]))
                except Exception as exc:  # noqa: BLE001
                    log.warning("analysis failed with %s", type(exc).__name__)  # no message: it may quote the file
                    why = f"The file could not be analysed ({type(exc).__name__})."
                    rows.append(error_row(p, why, self.models.threshold))
        return rows_table(rows, sources, self.sha)


def rows_table(rows: list[Row], sources: list[bytes], sha: str) -> pa.Table:
    """Result-table rows and their inputs (os.fsencode, same order) -> a Table of :data:`SCHEMA`."""
    cols: dict[str, list] = {c: [getattr(r, c) for r in rows] for c in COLUMNS}
    cols["warnings"] = [list(w) for w in cols["warnings"]]
    return pa.table(
        {**cols, "model_sha256": [sha] * len(rows), "pneumo_version": [__version__] * len(rows), "source": sources},
        schema=SCHEMA,
    )


# ------------------------------------------------------------------------------------------------------ the output
def part_files(out_dir: Path) -> list[Path]:
    """The committed parts, oldest first (names carry a time stamp and a sequence number)."""
    return sorted(out_dir.glob(PART_GLOB))


def iter_results(out_dir: Path, columns: list[str] | None = None) -> Iterator[pa.Table]:
    """The committed rows, part by part, each input once (the first committed row wins): a part committed twice, or
    the same file scored by two jobs, is read once. Memory: one part plus the set of inputs seen."""
    seen: set[bytes] = set()
    cols = None if columns is None else list(dict.fromkeys(["source", *columns]))
    for part in part_files(out_dir):
        table = pq.read_table(part, columns=cols)
        paths = table.column("source").to_pylist()
        keep = []
        for i, p in enumerate(paths):
            if p not in seen:
                seen.add(p)
                keep.append(i)
        yield table if len(keep) == len(paths) else table.take(pa.array(keep, pa.int64()))


def read_results(out_dir: str | Path) -> pa.Table:
    """The whole dataset, each input once (for tests and small jobs; large ones: :func:`iter_results`)."""
    parts = list(iter_results(Path(out_dir)))
    return pa.concat_tables(parts) if parts else SCHEMA.empty_table()


def commit_part(out_dir: Path, table: pa.Table, name: str) -> Path:
    """Write a part atomically: a hidden temporary file, flushed to disk, then renamed to its final name."""
    final = out_dir / name
    tmp = out_dir / f"{TMP_PREFIX}{name}"
    pq.write_table(table, tmp)
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, final)
    dir_fd = os.open(out_dir, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the rename itself survives a power cut
    finally:
        os.close(dir_fd)
    return final


def write_csv(out_dir: Path, out: io.TextIOBase) -> None:
    """The CLI's CSV (pneumo.present.table: same header, cells and quoting) of the dataset, in commit order."""
    out.write(csv_line(COLUMNS))
    for table in iter_results(out_dir, list(COLUMNS)):
        for rec in table.select(list(COLUMNS)).to_pylist():
            rec["warnings"] = tuple(rec["warnings"] or ())
            out.write(csv_line(Row(**rec).csv_cells()))


@dataclass
class Summary:
    """What a run did: counts over the whole dataset and the speed of this run."""

    inputs: int
    scored: int = 0
    seconds: float = 0.0
    labels: Counter = field(default_factory=Counter)
    parts: int = 0

    @property
    def errors(self) -> int:
        return self.labels.get(LABEL_ERROR, 0)

    def log(self) -> None:
        counts = ", ".join(f"{k} {v}" for k, v in sorted(self.labels.items()))
        log.info("%d input(s) have a row: %s", sum(self.labels.values()), counts or "none")
        log.info("errors (unreadable files): %d; refusals (OUT_OF_SCOPE): %d", self.errors,
                    self.labels.get(LABEL_OUT_OF_SCOPE, 0))  # fmt: skip
        rate = self.scored / self.seconds if self.seconds > 0 else 0.0
        log.info("scored %d file(s) in this run in %.1f s (%.1f images/s, start-up included), %d part(s) committed",
                    self.scored, self.seconds, rate, self.parts)  # fmt: skip


def count_labels(out_dir: Path) -> Counter:
    c: Counter = Counter()
    for table in iter_results(out_dir, ["label"]):
        c.update(table.column("label").to_pylist())
    return c


def _lock(out_dir: Path) -> Any:
    """An exclusive lock on DIR for this process's life (released by the OS when it dies, even by SIGKILL)."""
    f = open(out_dir / LOCK_NAME, "w")  # noqa: SIM115 - held open until the process ends
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as exc:
        f.close()
        raise BatchError(f"another batch job is writing to {out_dir}") from exc
    return f


def check_output(out_dir: Path, resume: bool) -> None:
    """Refuse an output that cannot be used: a URI, a file, or a non-empty folder without --resume."""
    if is_uri(str(out_dir)):
        raise BatchError("--out must be a local or mounted folder (parts are committed by an atomic rename)")
    if out_dir.exists() and not out_dir.is_dir():
        raise BatchError(f"--out {out_dir} is a file, not a folder")
    existing = [p for p in out_dir.iterdir() if p.name != LOCK_NAME] if out_dir.exists() else []
    if existing and not resume:
        raise BatchError(f"{out_dir} is not empty: pass --resume to continue the job there, or choose a new folder")


def committed_paths(out_dir: Path, sha: str) -> set[bytes]:
    """The paths that already have a committed row (temporary files of a killed job are removed first); refuses a
    folder holding another model's rows."""
    for tmp in out_dir.glob(f"{TMP_PREFIX}*"):
        tmp.unlink()  # a part a killed job was writing: never committed, its files are scored again
    done: set[bytes] = set()
    other: set[str] = set()
    for table in iter_results(out_dir, ["model_sha256"]):
        done.update(table.column("source").to_pylist())
        other.update(s for s in table.column("model_sha256").unique().to_pylist() if s != sha)
    if other:
        raise BatchError(f"{out_dir} holds rows of another model ({', '.join(sorted(other))[:80]}): "
                         "resume with the same model, or choose a new folder")  # fmt: skip
    return done


# ---------------------------------------------------------------------------------------------------------- Ray
def _start_ray(address: str | None) -> bool:
    """Connect to a cluster, or start an embedded local Ray; True when this process started it."""
    import ray

    if ray.is_initialized():
        return False
    if address:
        ray.init(address=address, logging_level=logging.WARNING, include_dashboard=False)
        return False
    # workers import pneumo from where this process does (a checkout, or an installed package)
    root = str(Path(__file__).resolve().parents[1])
    os.environ["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [os.environ.get("PYTHONPATH")])])
    ray.init(
        address="local",  # a new local Ray, never one another process left running on this machine
        logging_level=logging.WARNING,
        include_dashboard=False,
        object_store_memory=config.BATCH_OBJECT_STORE_BYTES,
        configure_logging=True,
    )
    return True


def run_batch(
    inputs: list[str],
    out_dir: str | Path,
    model_path: str | Path | None = None,
    *,
    address: str | None = None,
    resume: bool = False,
    force: bool = False,
    workers: int | None = None,
    batch_size: int = config.BATCH_SIZE,
    commit_seconds: float = config.BATCH_COMMIT_SECONDS,
    part_rows: int = config.BATCH_PART_ROWS,
    progress: bool | None = None,
) -> Summary:
    """Score every input that has no committed row in ``out_dir`` on Ray Data, committing parts as rows arrive.

    Raises BatchError for usage problems (non-empty DIR without resume, ...), ModelFileError for missing models.
    """
    start = time.perf_counter()
    out_dir = Path(out_dir)
    model_path = Path(model_path or default_model_path())
    if not model_path.exists():
        raise BatchError(f"model not found: {model_path}")
    paths, skipped = expand_inputs(inputs)
    report_skipped(skipped, sys.stderr)
    if not paths:
        raise BatchError("no image files found in the given inputs")
    sha = file_sha256(model_path)
    check_output(out_dir, resume)
    out_dir.mkdir(parents=True, exist_ok=True)
    lock = _lock(out_dir)
    try:
        done = committed_paths(out_dir, sha)
        todo = [os.fsencode(p) for p in paths]
        todo = [p for p in todo if p not in done]
        summary = Summary(inputs=len(paths))
        if not todo:
            log.info("nothing to do: all %d input(s) already have a row in %s", len(paths), out_dir)
        else:
            if done:
                log.info("resuming: %d of %d input(s) already have a row; scoring the other %d", len(paths) -
                            len(todo), len(paths), len(todo))  # fmt: skip
            load_models(model_path)  # fail here, with the export command in the message, not inside an actor
            _score(todo, out_dir, model_path, summary, address, force, workers, batch_size, commit_seconds, part_rows,
                   progress)  # fmt: skip
        summary.seconds = time.perf_counter() - start
        summary.labels = count_labels(out_dir)
        return summary
    finally:
        lock.close()


def _score(
    todo: list[str], out_dir: Path, model_path: Path, summary: Summary, address: str | None, force: bool,
    workers: int | None, batch_size: int, commit_seconds: float, part_rows: int, progress: bool | None,
) -> None:  # fmt: skip
    """The Ray Data job: paths -> actor pool (Scorer) -> parts committed by this process as blocks arrive."""
    import ray

    started = _start_ray(address)
    try:
        ctx = ray.data.DataContext.get_current()
        tty = sys.stderr.isatty() if progress is None else progress
        ctx.enable_progress_bars = tty
        ctx.print_on_execution_start = False
        ctx.verbose_stats_logs = False
        cpus = int(ray.cluster_resources().get("CPU", 1))
        n_actors = workers or max(1, cpus // config.BATCH_ACTOR_THREADS)
        size = max(1, batch_size)
        # the paths as Arrow blocks of `size` rows: one block per actor call, streamed through the pool
        table = pa.table({"source": pa.array(todo, pa.binary())})
        blocks = [table.slice(i, size) for i in range(0, len(todo), size)]
        ds = ray.data.from_arrow(blocks).map_batches(
            Scorer,
            batch_size=size,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=n_actors),
            num_cpus=config.BATCH_ACTOR_CPUS,
            fn_constructor_kwargs={
                "model_path": str(model_path),
                "force": force,
                "threads": config.BATCH_ACTOR_THREADS,
            },  # fmt: skip
        )
        run_id = time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
        pending: list[pa.Table] = []
        last = time.monotonic()
        t0 = time.perf_counter()

        def commit() -> None:
            nonlocal pending, last
            if pending:
                part = pa.concat_tables(pending)
                commit_part(out_dir, part, f"part-{run_id}-{summary.parts:06d}.parquet")
                summary.parts += 1
                summary.scored += len(part)
                pending, last = [], time.monotonic()
                if not tty:
                    rate = summary.scored / max(time.perf_counter() - t0, 1e-9)
                    log.info("committed %d/%d (%.1f images/s)", summary.scored, len(todo), rate)

        for block in ds.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=1):
            pending.append(block.cast(SCHEMA))
            if sum(len(t) for t in pending) >= part_rows or time.monotonic() - last >= commit_seconds:
                commit()
        commit()
    finally:
        if started:
            ray.shutdown()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="pneumo-batch", description=__doc__.split("\n\n")[0])
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="image files, folders (recursive), manifests (.txt one path per line, .csv with a 'path' "
                   "column) or s3:// gs:// file:// URIs")  # fmt: skip
    p.add_argument("--out", required=True, type=Path, help="output folder: a Parquet dataset (part-*.parquet)")
    p.add_argument("--model", type=Path, default=default_model_path(),
                   help=f"a .keras classifier with its .json (default: ${config.MODEL_ENV_VAR} or the committed "
                   "model); every Ray node must be able to read it at this path")  # fmt: skip
    p.add_argument("--address", default=None,
                   help="an existing Ray cluster (auto, or HOST:PORT); default: an embedded local Ray")  # fmt: skip
    p.add_argument("--resume", action="store_true", help="continue the job in --out: score only inputs without a row")
    p.add_argument("--force", action="store_true",
                   help="a probability and label even for images outside the intended use (warnings stay)")  # fmt: skip
    p.add_argument("--workers", type=int, default=None,
                   help=f"Ray actors, each loading the networks once and using {config.BATCH_ACTOR_THREADS} threads "
                   f"(default: the cluster's CPUs / {config.BATCH_ACTOR_THREADS})")  # fmt: skip
    p.add_argument("--batch-size", type=int, default=config.BATCH_SIZE,
                   help=f"files per Ray block and actor call (default {config.BATCH_SIZE})")  # fmt: skip
    p.add_argument("--csv", type=Path, default=None, help="also write the CLI's CSV of the whole dataset here")
    p.add_argument("--commit-seconds", type=float, default=config.BATCH_COMMIT_SECONDS,
                   help=f"commit a part at least this often (default {config.BATCH_COMMIT_SECONDS:g} s; also every "
                   f"{config.BATCH_PART_ROWS} rows)")  # fmt: skip
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    log.setLevel(logging.INFO)  # the progress lines and the summary
    if args.workers is not None and args.workers < 1 or args.batch_size < 1:
        p.error("--workers and --batch-size must be at least 1")
    try:
        import ray  # noqa: F401
    except ImportError:
        log.error("Ray is not installed: pip install 'pneumo[batch]' (or -r requirements-batch.txt)")
        return 1
    try:
        summary = run_batch(args.inputs, args.out, args.model, address=args.address, resume=args.resume,
                            force=args.force, workers=args.workers, batch_size=args.batch_size,
                            commit_seconds=args.commit_seconds)  # fmt: skip
    except BatchError as exc:
        p.error(str(exc))
    except ModelFileError as exc:
        log.error("%s", exc)
        return 1
    except ConnectionError as exc:  # --address: no cluster there, or it refused us (e.g. token authentication)
        log.error("cannot connect to the Ray cluster: %s", exc)
        return 1
    summary.log()
    if args.csv is not None:
        with open(args.csv, "w", newline="") as f:
            write_csv(args.out, f)
    return 2 if summary.errors else 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
