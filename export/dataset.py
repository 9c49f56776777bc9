"""A dataset of videos: one results file per video, a manifest, resume and failures recorded.

The work on each video is :func:`facecrop.runtime.process_video`, called by :func:`run_one`;
this module adds the bookkeeping around it, shared by the single-machine run
(:func:`run_local`) and the Ray run (:mod:`facecrop.distributed`):

- ``collect_videos`` turns videos, folders (recursive, by extension) and text files listing
  paths into a sorted list of distinct videos;
- each video's results go to ``OUT_DIR/<its absolute path>.npz``, so two inputs never collide;
- ``OUT_DIR/manifest.jsonl`` gets one line per finished or failed video (each appended with one
  ``write``), with the bundle's SHA-256 and the settings; a rerun skips what is done, resumes
  what was interrupted (``<output>.partial/``) and retries what failed.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from facecrop.runtime import Bundle, load_bundle, process_video, summarize_results
from facecrop.runtime.bundle import read_manifest
from facecrop.runtime.checkpoint import checkpoint_folder
from facecrop.runtime.decoder import Decoder, DecoderProcesses
from facecrop.runtime.errors import RunInterrupted, StaleCheckpoint, UsageError
from facecrop.runtime.lock import OutputLock
from facecrop.runtime.tubes import TubeOptions
from facecrop.runtime.video import decoder_args

VIDEO_SUFFIXES = frozenset({".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".ts", ".mts",
                            ".m2ts", ".wmv", ".flv", ".3gp", ".ogv", ".y4m"})
MANIFEST = "manifest.jsonl"


@dataclass(frozen=True)
class Job:
    """One video to process and where its results go."""

    video: Path  # absolute
    output: Path  # absolute, under the output folder


def collect_videos(inputs: list[str | Path], out_dir: Path | None = None) -> list[Path]:
    """Absolute paths of the videos named by ``inputs``, sorted, each once.

    An input is a video file (any extension), a folder (searched recursively for
    :data:`VIDEO_SUFFIXES`) or a ``.txt`` file listing one video or folder per line (a line that
    starts with ``#`` is a comment; relative paths are relative to the list). What facecrop wrote is
    never an input: anything under ``out_dir``, and the crops and checkpoints of single-video runs
    (``<results>.crops/``, ``<results>.partial/``). Raises ValueError for a missing input, a folder or
    list without videos.
    """
    found: set[Path] = set()
    for item in map(Path, inputs):
        if item.is_file() and item.suffix.lower() == ".txt":
            lines = [line.strip() for line in item.read_text().splitlines()]
            listed = [item.parent / line for line in lines if line and not line.startswith("#")]
            missing = [str(p) for p in listed if not p.exists()]
            if missing:
                raise UsageError(f"{item} lists videos that do not exist: {', '.join(missing[:5])}")
            if not listed:
                raise UsageError(f"list {item} names no videos (one path a line)")
            if any(p.suffix.lower() == ".txt" for p in listed):
                raise UsageError(f"list {item} names another list; name videos or folders")
            found.update(collect_videos(listed, out_dir))
        elif item.is_dir():
            videos = [p for p in item.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file()
                      and not _written_by_facecrop(p, out_dir)]
            if not videos:
                raise UsageError(f"folder {item} holds no videos ({', '.join(sorted(VIDEO_SUFFIXES))}) "
                                 "other than facecrop's own outputs")
            found.update(p.resolve() for p in videos)
        elif item.is_file():
            if _written_by_facecrop(item, out_dir):
                raise UsageError(f"input {item} was written by facecrop (it lies in the output folder or a crops "
                                 "folder); name the source videos instead")
            found.add(item.resolve())
        else:
            raise UsageError(f"input {item} does not exist")
    return sorted(found)


def _written_by_facecrop(path: Path, out_dir: Path | None) -> bool:
    """Whether ``path`` lies in the output folder, or in a crops folder or checkpoint facecrop made."""
    path = path.resolve()
    if out_dir is not None and out_dir.resolve() in path.parents:
        return True
    return any(folder.suffix in (".crops", ".partial") and (folder / "meta.json").is_file() for folder in path.parents)


def output_path(out_dir: Path, video: Path) -> Path:
    """``OUT_DIR/<video's absolute path, anchor dropped>.npz``: distinct videos, distinct files."""
    video = video.resolve()
    return out_dir.resolve() / Path(*video.parts[1:]).with_name(video.name + ".npz")


# Every manifest row has these, with these types (``identity`` and ``summary``: done rows only).
ROW_TYPES = {"video": str, "output": str, "status": str, "bundle_sha256": str, "settings": dict}
# A --force run's row, appended before its work: these videos are being redone with this bundle and these settings.
FORCE_TYPES = {"force": dict, "videos": list}


class Manifest:
    """``OUT_DIR/manifest.jsonl``: one JSON line per video finished or failed; the latest line of a video wins.

    A ``--force`` run first appends one line naming the videos it redoes and its bundle and settings;
    until a video's own line follows, that video is pending in those settings, so a plain rerun
    continues an interrupted ``--force`` run instead of refusing it. Raises ValueError naming the file
    and line for a line that is not a manifest row (a cut-short last line is dropped: that video is redone).
    """

    def __init__(self, out_dir: Path):
        self.path = out_dir / MANIFEST
        self.current: dict[str, dict] = {}  # video -> its latest row, or the --force line redoing it
        if self.path.is_file():
            lines = self.path.read_text().splitlines()
            for number, line in enumerate(lines, 1):
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    if number == len(lines):
                        continue  # a line cut short by a crash
                    raise UsageError(f"{self.path} line {number} is not JSON; remove that line (its video is redone)") from None
                self._add(row, number)
        self._lock = threading.Lock()

    def _add(self, row, number: int | None = None) -> None:
        kind = FORCE_TYPES if isinstance(row, dict) and "force" in row else ROW_TYPES
        wrong = [k for k, t in kind.items() if not isinstance(row, dict) or not isinstance(row.get(k), t)]
        if wrong:
            raise UsageError(f"{self.path} line {number} is not a facecrop manifest row ({', '.join(wrong)} missing or "
                             "of the wrong type); remove that line (its video is redone)")
        if kind is FORCE_TYPES:
            self.current.update((video, row["force"]) for video in row["videos"])
        else:
            self.current[row["video"]] = row

    def latest(self) -> dict[str, dict]:
        """Each video's latest row (a video pending in a --force run: None)."""
        return {video: (None if "status" not in row else row) for video, row in self.current.items()}

    def check_compatible(self, videos: list[Path], bundle_sha256: str, settings: dict) -> None:
        """Refuse to mix results of another bundle or other settings with this run's, naming what differs.

        Only the videos of this run count: done ones, and those a --force run is redoing."""
        differ: dict[str, tuple] = {}
        which = []
        for video in map(str, videos):
            row = self.current.get(video)
            if row is None or row.get("status") == "failed":
                continue
            then, now = _flat(row["settings"]), _flat(settings)
            changes = {f"setting {k}": (then.get(k), v) for k, v in now.items() if then.get(k) != v}
            if row["bundle_sha256"] != bundle_sha256:
                changes["bundle"] = (row["bundle_sha256"][:12], bundle_sha256[:12])
            if changes:
                differ.update(changes)
                which.append(video)
        if which:
            said = "; ".join(f"{name} {old!r} there, {new!r} now" for name, (old, new) in differ.items())
            raise UsageError(f"{self.path} records results of {len(which)} of these videos ({which[0]}"
                             f"{', ...' if len(which) > 1 else ''}) made otherwise: {said}. Pass --force to redo them "
                             "with this run's bundle and settings, or write to another folder")

    def append(self, row: dict) -> None:
        """Add a row with one ``write`` to an ``O_APPEND`` file, so rows never interleave or half-appear."""
        data = (json.dumps(row) + "\n").encode()
        with self._lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            self._add(row)


def video_identity(video: Path) -> dict:
    """What tells a changed file from the one a manifest row was made from."""
    stat = video.stat()
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _flat(settings: dict, prefix: str = "") -> dict:
    """Nested settings as one level, ``{"tubes": {"min_tube": 16}}`` -> ``{"tubes.min_tube": 16}``."""
    flat = {}
    for key, value in settings.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def plan(videos: list[Path], out_dir: Path, manifest: Manifest, bundle_sha256: str, settings: dict,
         force: bool = False) -> tuple[list[Job], list[dict]]:
    """Split ``videos`` into jobs to run and manifest rows of videos already done (skipped).

    ``force``: every video is a job, and the manifest records that they are being redone in these
    settings (so that a plain rerun of an interrupted ``--force`` run continues it)."""
    if force:
        manifest.append({"force": {"bundle_sha256": bundle_sha256, "settings": settings},
                         "videos": [str(v) for v in videos]})
    else:
        manifest.check_compatible(videos, bundle_sha256, settings)
    latest = manifest.latest()
    jobs, skipped = [], []
    for video in videos:
        job = Job(video, output_path(out_dir, video))
        row = latest.get(str(video))
        done = (not force and row is not None and row["status"] == "done" and job.output.is_file()
                and row.get("identity") == video_identity(video))
        if done:
            skipped.append(row)
        else:
            jobs.append(job)
    return jobs, skipped


def prepare_output(out_dir: Path) -> None:
    """Create the output folder and prove it writable before any work starts."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / f".facecrop-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise UsageError(f"cannot write to output folder {out_dir}: {err.strerror or err}") from None


def run_settings(options: dict | None) -> dict:
    """The run options a manifest records (``process_video``'s keyword arguments; all change results)."""
    settings = {"save_crops": False, "crops": None, "jpeg_quality": 2, "dist_threshold": 250.0, "present_threshold": 0.1,
                "tubes": TubeOptions().as_dict()}
    unknown = set(options or {}) - set(settings)
    if unknown:
        raise UsageError(f"unknown run options {sorted(unknown)}; expected some of {sorted(settings)}")
    settings = {**settings, **(options or {})}
    if isinstance(settings["tubes"], TubeOptions):  # recorded as the plain dict a manifest holds
        settings["tubes"] = settings["tubes"].as_dict()
    return settings


def run_one(bundle: Bundle, job: Job, options: dict | None = None, batch_size: int = 8, force: bool = False,
            on_frames=None, decoder: Decoder | None = None) -> dict:
    """Process one video into ``job.output``; its manifest row, ``status`` ``'done'`` or ``'failed'``.

    Failures (a corrupt, truncated or unreadable video, or anything else going wrong in it) are
    recorded with their reason rather than raised; frames before a damaged spot stay in
    ``<output>.partial/``. The one code path of the single-machine and the Ray run. ``options``:
    ``process_video``'s keyword arguments (see :func:`run_settings`). ``decoder``: one
    :func:`prefetch` started for this job, or None. A done row holds the video's quality summary.
    """
    settings = run_settings(options)
    row = {"video": str(job.video), "output": str(job.output), "bundle_sha256": bundle.manifest["artifact"]["sha256"],
           "settings": settings, "frames": 0, "faces": 0, "seconds": 0.0, "fps": 0.0, "error": None}
    start = time.perf_counter()
    try:
        row["identity"] = video_identity(job.video)
        job.output.parent.mkdir(parents=True, exist_ok=True)
        kwargs = dict(batch_size=batch_size, progress=False, on_frames=on_frames, resume=True,
                      **{**settings, "tubes": TubeOptions(**settings["tubes"])})
        try:
            process_video(bundle, job.video, job.output, decoder=decoder, force=force, **kwargs)
        except StaleCheckpoint:  # made from an earlier version of the file or other settings: start it again
            process_video(bundle, job.video, job.output, force=True, **kwargs)
        row["summary"] = summarize_results(job.output)
        row["frames"], row["faces"] = row["summary"]["frames"], row["summary"]["faces"]
        row["status"] = "done"
    except Exception as err:  # noqa: BLE001 - a bad member of a dataset must not stop the others
        row["status"], row["error"] = "failed", f"{type(err).__name__}: {err}"
    finally:
        if decoder is not None:
            decoder.close()  # when process_video failed before taking it over
    row["seconds"] = round(time.perf_counter() - start, 3)
    row["fps"] = round(row["frames"] / row["seconds"], 2) if row["seconds"] else 0.0
    return row


def prefetch(max_side: int, job: Job, batch_size: int, force: bool, processes: DecoderProcesses) -> Decoder | None:
    """Start decoding ``job``'s video now, if it starts from frame 0 (no checkpoint to resume).

    Started while the previous video runs (or, for the first one, while the bundle loads), the
    child's start-up (Python, PyAV) and its first batches overlap that work instead of following it.
    ``max_side``: the bundle's largest frame side; ``processes``: the run's decoding processes.
    """
    if checkpoint_folder(job.output).exists() and not force:
        return None
    try:
        return Decoder(*decoder_args(job.video, batch_size, 0, max_side), processes=processes)
    except OSError:
        return None  # process_video will try again and report what is wrong


def interrupted(err: KeyboardInterrupt, finished: int, total: int, out_dir: Path) -> RunInterrupted:
    """The one line a stopped dataset run ends with: why, the video it was in (its kept frames), and the rest."""
    said = str(err) or "interrupted"
    return RunInterrupted(f"{said}; {finished} of {total} videos finished in this run, results kept in {out_dir}")


class DatasetProgress:
    """One line on stderr: videos done/total (failed), frames/s over this run, ETA."""

    def __init__(self, total: int, enabled: bool = True, stream=None):
        self.total, self.enabled, self.stream = total, enabled, stream or sys.stderr
        self.videos = self.failed = self.frames = 0
        self.start = self.last_draw = time.perf_counter()
        self._lock = threading.Lock()

    def add_frames(self, n: int) -> None:
        with self._lock:
            self.frames += n
            if time.perf_counter() - self.last_draw > 0.5:
                self._draw()

    def finished(self, row: dict) -> None:
        with self._lock:
            self.videos += 1
            self.failed += row["status"] == "failed"
            self._draw()

    def _draw(self, end: str = "") -> None:
        if not self.enabled:
            return
        self.last_draw = now = time.perf_counter()
        elapsed = now - self.start
        eta = elapsed / self.videos * (self.total - self.videos) if self.videos else float("nan")
        eta_text = time.strftime("%H:%M:%S", time.gmtime(eta)) if eta == eta else "--:--:--"
        filled = 30 * self.videos // max(self.total, 1)
        self.stream.write(f"\r[{'#' * filled}{'.' * (30 - filled)}] {self.videos}/{self.total} videos"
                          f"{f' ({self.failed} failed)' if self.failed else ''}  "
                          f"{self.frames / max(elapsed, 1e-9):.1f} frames/s  ETA {eta_text}{end}")
        self.stream.flush()

    def close(self) -> None:
        self._draw(end="\n")


def summary(rows: list[dict], skipped: list[dict], seconds: float) -> str:
    """A markdown table of the run, then every failure with its reason."""
    done = [r for r in rows if r["status"] == "done"]
    failed = [r for r in rows if r["status"] == "failed"]
    frames = sum(r["frames"] for r in done)
    lines = ["| videos | done | skipped (already done) | failed | frames | seconds | frames/s | videos/min |",
             "|---|---|---|---|---|---|---|---|",
             f"| {len(rows) + len(skipped)} | {len(done)} | {len(skipped)} | {len(failed)} | {frames} | {seconds:.1f} | "
             f"{frames / max(seconds, 1e-9):.1f} | {60 * len(rows) / max(seconds, 1e-9):.1f} |"]
    lines += [f"failed: {r['video']}: {r['error']}" for r in failed]
    crowded = [r for r in done if (r.get("summary") or {}).get("overflow_frames")]
    if crowded:
        overflow = sum(r["summary"]["overflow_frames"] for r in crowded)
        lines.append(f"warning: {overflow} frames of {len(crowded)} videos found more faces than the bundle keeps "
                     "(their manifest rows say which); export a bundle with a larger --max-faces to keep them all")
    return "\n".join(lines)


def run_local(bundle_path: str | Path, inputs: list[str | Path], out_dir: str | Path, devices: list[str] | None = None,
              batch_size: int = 8, options: dict | None = None, force: bool = False,
              progress: bool = True) -> tuple[list[dict], list[dict]]:
    """Run a bundle over a dataset on this machine, one worker (thread) per device.

    Each worker loads and verifies the bundle on its device and takes videos from a shared list;
    decoding happens in each video's own child process, so workers on several GPUs overlap.

    Returns:
        ``(rows, skipped)``: the manifest rows of this run (``status`` ``'done'``/``'failed'``)
        and those of videos skipped as already done.
    """
    out_dir = Path(out_dir)
    videos = collect_videos(inputs, out_dir)
    prepare_output(out_dir)
    devices = list(devices or [None])
    # One run per output folder (a second is refused at once); decoding processes reused from video to video.
    with OutputLock(out_dir / MANIFEST), DecoderProcesses(keep=len(devices)) as processes:
        if len(set(devices)) != len(devices):
            raise UsageError(f"--devices lists a device twice: {devices}")
        settings = run_settings(options)  # the batch size changes no result, so it is not recorded
        described = read_manifest(Path(bundle_path))  # what load_bundle verifies below; enough to plan
        max_side = int(described["input"]["max_side"])
        manifest = Manifest(out_dir)
        jobs, skipped = plan(videos, out_dir, manifest, described["artifact"]["sha256"], settings, force)
        if not jobs:
            return [], skipped  # every video is done: no bundle to load
        queue = list(reversed(jobs))
        # The first video decodes while the bundles load (20 clips: its first batch waited 0.12 s, speed.md step 25).
        first = queue.pop() if queue else None
        early = prefetch(max_side, first, batch_size, force, processes) if first else None
        try:
            bundles = [load_bundle(bundle_path, device=device) for device in devices]
        except BaseException:
            if early is not None:
                early.close()
            raise
        bar = DatasetProgress(len(jobs), enabled=progress)
        rows: list[dict] = []
        lock = threading.Lock()

        def take() -> Job | None:
            with lock:
                return queue.pop() if queue else None

        def work(bundle: Bundle, job: Job | None, decoder: Decoder | None = None) -> None:
            while job is not None:
                following = take()  # this worker's next video, decoding while this one computes
                ahead = prefetch(max_side, following, batch_size, force, processes) if following else None
                row = run_one(bundle, job, settings, batch_size, force, on_frames=bar.add_frames, decoder=decoder)
                manifest.append(row)
                with lock:
                    rows.append(row)
                bar.finished(row)
                job, decoder = following, ahead

        workers = [threading.Thread(target=work, args=(bundle, take()), daemon=True) for bundle in bundles[1:]]
        for worker in workers:
            worker.start()
        try:
            work(bundles[0], first, early)
            for worker in workers:
                worker.join()
        except KeyboardInterrupt as err:  # Ctrl-C, or SIGTERM in the CLI: what this run finished, on a line of its own
            bar.close()
            raise interrupted(err, len(rows), len(jobs), out_dir) from None
        bar.close()
        return rows, skipped
