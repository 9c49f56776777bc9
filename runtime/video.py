"""Run a bundle over a video: decode in a child process, run batches, checkpoint, write one .npz.

Every decoded frame gets one row, in decoding (= presentation) order (``frame_index[i] == i``; no
faces: ``valid[i]`` all False). RGB frames go to the module at their own size (it letterboxes inside,
as InsightFace does), turned upright as players show them (a phone's portrait video is stored
sideways with a display rotation; ``rotation[i]`` records the degrees turned), so coordinates are in
the displayed frame's pixels; where a stream changes size or rotation, a batch ends. Results are checkpointed in ``<output>.partial/`` as they come (for ``resume=True``, and to keep
the frames before a corrupt spot). The arrays are documented in ``bundles/README.md``.
"""

from __future__ import annotations

import errno
import shutil
import warnings
from contextlib import ExitStack
from pathlib import Path

import av
import numpy as np

from .bundle import Bundle
from .checkpoint import checkpoint_folder
from .crops import crops_folder
from .decode_worker import declared_end, frames_per_batch
from .decoder import Batch, Decoder, DecoderDied, End
from .loop import DecodedBatches, module_results
from .errors import RunInterrupted, UsageError, VideoError
from .face_quality import face_quality
from .lock import OutputLock
from .outputs import check_writable, refuse_overwrites
from .progress import Progress
from .sink import ResultsSink
from .track import DEFAULT_DIST_THRESHOLD, OnlineTracker
from .tubes import TubeOptions

PER_FRAME = ("valid", "conf", "bbox", "lms", "overflow", "crop_mat")
# Batches queued beside the running calls on the CPU: call times vary with the faces in a batch, and a
# worker that finished out of turn idled until the oldest call ended (20 clips: 8.64 -> 8.39 s, speed.md step 25).
QUEUED_CALLS = 2


def decoder_args(video: str | Path, batch_size: int, skip: int, max_side: int) -> tuple:
    """The :class:`Decoder` arguments ``process_video`` needs; a decoder started early with others is replaced."""
    return str(Path(video)), batch_size, skip, 3 * max_side * max_side


def _collect(outputs: dict[str, np.ndarray], batch: Batch, tracker: OnlineTracker,
             keep_crops: bool) -> dict[str, np.ndarray]:
    """A batch's module outputs -> per-frame arrays with face ids and quality columns and, with
    ``keep_crops``, the valid faces' crops. Batches come here in frame order."""
    result = {k: outputs[k] for k in PER_FRAME if k in outputs}
    result.update(frame_index=batch.frame_index, pts_seconds=batch.pts_seconds,
                  rotation=np.full(len(batch.frame_index), batch.rotation, np.int16),
                  face_idx=tracker.update_frames(outputs["lms"], outputs["valid"]))
    result.update(face_quality(outputs["valid"], outputs["bbox"], outputs["lms"], outputs.get("imgs_crop")))
    if keep_crops:
        rows, slots = np.nonzero(outputs["valid"])
        result.update(imgs_crop=outputs["imgs_crop"][rows, slots], crop_frame_index=batch.frame_index[rows],
                      crop_slot=slots.astype(np.int64))
    return result


def run_outputs(output: Path, crops: str | None) -> dict[str, tuple[Path, bool]]:
    """What a run of ``output`` writes, for :func:`~facecrop.runtime.outputs.refuse_overwrites`."""
    written = {"the results file": (output, False), "the checkpoint": (checkpoint_folder(output), True),
               "the lock file": (OutputLock(output).path, False)}
    if crops is not None:
        written["the crops folder"] = (crops_folder(output), True)
    return written


def video_info(video: Path) -> tuple[int, tuple[int, int], dict]:
    """Open the video once to check it has a video stream; returns (expected frames or 0, (width, height), identity)."""
    if not video.is_file():
        raise VideoError(f"video {video} not found")
    try:
        with av.open(str(video)) as container:
            if not container.streams.video:
                raise VideoError(f"{video} has no video stream")
            stream = container.streams.video[0]
            expected = stream.frames or round((declared_end(stream) or 0) * float(stream.average_rate or 0))
            size = (stream.codec_context.width, stream.codec_context.height)
    except av.error.FFmpegError as err:
        raise VideoError(f"cannot open {video} as a video: {err}") from None
    stat = video.stat()
    return expected, size, {"video": str(video.absolute()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def process_video(bundle: Bundle, video: str | Path, output: str | Path, batch_size: int = 8,
                  save_crops: bool = False, resume: bool = False, progress: bool = True,
                  checkpoint_frames: int = 256, on_frames=None, decoder: Decoder | None = None,
                  crops: str | None = None, jpeg_quality: int = 2, dist_threshold: float = DEFAULT_DIST_THRESHOLD,
                  present_threshold: float = 0.1, force: bool = False, tubes: TubeOptions = TubeOptions()) -> Path:
    """Detect and track faces in every frame of ``video``; write the results to the ``.npz`` file ``output``.

    Args:
        bundle: a loaded :class:`~facecrop.runtime.Bundle`. video: any file FFmpeg decodes.
        output: the results file, written atomically at the end (arrays in ``bundles/README.md``).
        batch_size: frames per module call; frames above 720p come in smaller batches, so that a batch
            holds at most 24 MiB of frames (4 at 1080p, 1 at 4K).
        save_crops: also store ``imgs_crop [N, 3, S, S]`` of every valid face, with
            ``crop_frame_index [N]`` and ``crop_slot [N]``.
        resume: continue the interrupted run recorded in ``<output>.partial/``.
        progress: show a progress bar (frames/s) on stderr.
        checkpoint_frames: write a checkpoint chunk at least every this many frames.
        on_frames: called with the number of frames after each batch (a dataset's progress).
        decoder: a :class:`~facecrop.runtime.decoder.Decoder` already started on this video, as a
            dataset run starts the next video's while this one runs; it is used if its arguments
            are those needed here, else replaced. Closed by the run (closing it again does nothing).
        crops: also write the face tubes' smoothed crops as files, ``'png'``, ``'jpg'``, ``'mp4'`` (with
            the sound) or ``'webdataset'``, into ``<output stem>.crops/`` (see :mod:`facecrop.runtime.crops`).
        jpeg_quality: FFmpeg's JPEG quantiser for ``crops='jpg'``, 2 (best) to 31.
        dist_threshold: the face tracker's, in pixels (see :class:`~facecrop.runtime.track.OnlineTracker`).
        present_threshold: faces present in fewer than this fraction of the frames are marked in
            ``track_kept``; their rows stay.
        force: discard an interrupted run's checkpoint (start again), and replace a crops folder facecrop
            did not make. A crops folder of another run is replaced anyway, and a run without crop files
            removes one whose face ids no longer match (warning ``StaleCropsRemoved``).
        tubes: how faces are cut into tubes, smoothed and filtered (:class:`~facecrop.runtime.tubes.TubeOptions`);
            the results file holds the tubes, and ``crops`` writes those of kept tracks (all: ``keep_all``).

    Returns:
        ``output`` (:func:`~facecrop.runtime.quality.summarize_results` reads its quality summary). Raises
        :class:`VideoError` for an unreadable, empty, truncated or corrupt video, and for results or
        crops that cannot be written (a full disk), and for another run writing ``output`` (its
        ``<output>.lock``); the frames before it stay in ``<output>.partial/`` for ``resume``. Ctrl-C
        raises :class:`RunInterrupted` (a ``KeyboardInterrupt``) saying what was kept.

    Example:
        >>> process_video(load_bundle("bundles/det_500m/1.0.0"), "talk.mp4", "talk.npz")  # doctest: +SKIP
        PosixPath('talk.npz')
    """
    video, output = Path(video), Path(output)
    if not isinstance(batch_size, int) or batch_size < 1:
        raise UsageError(f"batch_size must be a positive int, got {batch_size!r}")
    if (save_crops or crops) and "imgs_crop" not in bundle.output_names:
        raise UsageError(f"saving crops needs a bundle with crops; this one outputs {bundle.output_names}")
    if not 2 <= jpeg_quality <= 31:
        raise UsageError(f"jpeg_quality is FFmpeg's quantiser, 2 (best) to 31, got {jpeg_quality!r}")
    check_writable(output)
    refuse_overwrites({"the video": video}, run_outputs(output, crops))
    expected, (width, height), identity = video_info(video)
    # "upright": the frames are turned as displayed (a checkpoint from before that is not continued).
    identity.update(artifact_sha256=bundle.manifest["artifact"]["sha256"], save_crops=save_crops, upright=True,
                    dist_threshold=float(dist_threshold), crops=crops, jpeg_quality=jpeg_quality)
    with ExitStack() as cleanup:
        if decoder is not None:  # a decoder started for this run: ended however the run ends (twice: no-op)
            cleanup.callback(decoder.close)
        cleanup.enter_context(OutputLock(output))
        sink = ResultsSink(output, video, identity, resume, save_crops, crops, crop_side(bundle), jpeg_quality,
                           dist_threshold, present_threshold, force, tubes, bundle_provenance(bundle))
        try:
            end = _run_frames(bundle, video, sink, decoder, batch_size, expected, width, height, progress,
                              checkpoint_frames, on_frames)
        finally:
            if sink.frames_done == 0:
                sink.checkpoint.remove()  # nothing kept: no checkpoint to block or confuse the next run
        if end.count == 0:
            raise VideoError(f"{video} contains no video frames")
        if end.note:
            warnings.warn(f"{video}: {end.note}", stacklevel=2)
        if end.problem:
            kept = sink.frames_done
            where = f"results for frames 0-{kept - 1} are kept in {sink.checkpoint.folder}" if kept else "no frame was processed"
            raise VideoError(f"{video}: {end.problem}; {where}")
        try:
            sink.finish(progress)
            return output
        except OSError as err:
            raise _write_failed(video, err, sink, expected) from None
        except KeyboardInterrupt as err:  # while the tubes were written: every frame's results are kept
            raise RunInterrupted(f"{str(err) or 'interrupted'} while writing the tubes of {video}{_kept(sink)}; "
                                 "run again with --resume to write them") from None


def _run_frames(bundle: Bundle, video: Path, sink: ResultsSink, decoder: Decoder | None, batch_size: int,
                expected: int, width: int, height: int, progress: bool, checkpoint_frames: int, on_frames) -> End:
    """Decode ``video`` from the sink's first missing frame, run the batches into ``sink``; the decoder's :class:`End`.

    Whatever stops it (an error, Ctrl-C, SIGTERM), the results computed so far are checkpointed first.
    """
    done = sink.frames_done
    bar = Progress(expected, initial=done, enabled=progress)
    needed = decoder_args(video, batch_size, done, bundle.side_bounds[1])
    if decoder is None or decoder.args != needed:
        processes = decoder.processes if decoder is not None else None
        if decoder is not None:
            decoder.close()
        decoder = Decoder(*needed, processes=processes)
    batches = DecodedBatches(decoder, bundle.side_bounds, video)
    results = module_results(bundle, batches, queued=QUEUED_CALLS)
    try:
        if bundle.device_type != "cpu":  # a GPU's first call at a batch size sets up its kernels: done while the
            # decoder starts (on the CPU a blank batch cost more than it saved once two batches overlap:
            # docs/speed.md, step 18). As the video's batches come; a container that does not declare the frame
            # size gets batch_size.
            bundle.warm_up(min(frames_per_batch(batch_size, max(1, width), max(1, height)), max(1, expected - done)))
        for batch, outputs in results:
            sink.add(_collect(outputs, batch, sink.tracker, sink.keep_crops))
            batches.release(batch)
            bar.update(len(batch.frame_index))
            if on_frames is not None:
                on_frames(len(batch.frame_index))
            if sink.pending_frames >= checkpoint_frames:
                sink.flush()
        sink.flush()
        return batches.end
    except VideoError as err:  # a frame outside the bundle's sizes
        raise VideoError(f"{err}{_kept(sink, pending=True)}") from None
    except DecoderDied as err:
        raise VideoError(f"{video}: {err}{_kept(sink, pending=True)}") from None
    except OSError as err:  # the results or crops cannot be written: a full disk, a folder gone read-only
        raise _write_failed(video, err, sink, expected) from None
    except KeyboardInterrupt as err:  # Ctrl-C, or SIGTERM where the CLI turns it into this
        kept = _kept(sink, pending=True) or "; no frame was processed"
        raise RunInterrupted(f"{str(err) or 'interrupted'} while processing {video}{kept}") from None
    finally:
        results.close()  # batches still in the module are dropped: a resumed run computes them again
        try:
            sink.flush()  # results computed before an error or interrupt are kept
        except OSError:
            pass  # the disk that stopped the run refuses this too; the chunks before it stay
        finally:
            bar.close()
            decoder.close()


def _write_failed(video: Path, err: OSError, sink: ResultsSink, expected: int) -> VideoError:
    """The one-line error for results or crops that cannot be written (a full disk, a read-only folder):
    the folder, and, from what the kept frames took, about how many more bytes the run needs."""
    folder = sink.checkpoint.folder
    need = ""
    done = sink.frames_done
    if err.errno == errno.ENOSPC and done:
        used = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
        # The rest of the frames at the same rate, then the results file (about the chunks again).
        more = used / done * max(expected - done, 0) + used
        need = f", about {_megabytes(more)} more are needed there ({_megabytes(shutil.disk_usage(folder).free)} free)"
    return VideoError(f"cannot write the results of {video} in {folder.parent}: {err.strerror or err}{need}"
                      f"{_kept(sink)}; free space and run again with --resume")


def _megabytes(n: float) -> str:
    return f"{n / 1e6:.1f} MB"


def _kept(sink: ResultsSink, pending: bool = False) -> str:
    """Where the frames computed before a failure are, for its message; ``pending``: the batches not in
    the checkpoint yet will be written to it as the run ends (not so after a write failed)."""
    done = sink.frames_done + (sink.pending_frames if pending else 0)
    return f"; results for frames 0-{done - 1} are kept in {sink.checkpoint.folder}" if done else ""


def bundle_provenance(bundle: Bundle) -> dict:
    """What a crops folder's ``meta.json`` says of the bundle that made it: its name, version, the models
    it was made from, and their licence."""
    manifest = bundle.manifest
    return {"bundle": {k: manifest.get(k) for k in ("name", "version")},
            "source_models": manifest.get("source_models", {}), "licence": manifest.get("licence")}


def crop_side(bundle: Bundle) -> int:
    """The side of the bundle's crops from its output spec (0 without crops)."""
    spec = next((o for o in bundle.manifest["outputs"] if o["name"] == "imgs_crop"), None)
    return int(spec["shape"][-1]) if spec else 0
