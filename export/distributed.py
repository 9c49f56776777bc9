"""The dataset run on a Ray cluster, through Ray Data (the optional extra ``facecrop[cluster]``).

Videos become a Ray Dataset of ``{video, output}`` rows. ``map_batches`` sends them, one at a
time, through :class:`VideoWorker`, an actor class that loads and verifies the bundle once per
actor and then calls :func:`facecrop.dataset.run_one`: the same per-video code as the
single-machine run. Actors write each video's results to ``OUT_DIR`` (a path every node
reaches) and return its manifest row; the driver appends the rows to ``OUT_DIR/manifest.jsonl``.

Ray Data restarts an actor whose process dies and retries its video on it (``max_restarts`` and
``max_task_retries`` are unlimited for actor pools). The retry resumes from the video's
``.partial/`` checkpoint and the results file is written atomically, so every video ends up
in the results exactly once. :mod:`facecrop.runtime` never imports Ray.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import numpy as np

from facecrop.dataset import (MANIFEST, DatasetProgress, Job, Manifest, collect_videos, plan, prefetch, prepare_output,
                              run_one, run_settings)
from facecrop.runtime import load_bundle
from facecrop.runtime.bundle import read_manifest
from facecrop.runtime.decoder import DecoderProcesses
from facecrop.runtime.tuning import tune_process
from facecrop.runtime.lock import OutputLock
from facecrop.runtime.errors import UsageError


def _ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise UsageError("--ray needs Ray Data: pip install 'facecrop[cluster]'") from None
    return ray


class VideoWorker:
    """A Ray Data actor: loads and verifies the bundle once, then runs whole videos.

    ``__call__`` takes a batch ``{"video": [...], "output": [...]}`` (paths as strings) and
    returns ``{"row": [...]}``: each video's manifest row as JSON.
    """

    def __init__(self, bundle_path: str, options: dict, batch_size: int, force: bool):
        tune_process()  # the actor is facecrop's own process, as the CLI's is
        self.bundle = load_bundle(bundle_path)
        self.options, self.batch_size, self.force = options, batch_size, force
        self.processes = DecoderProcesses()  # the actor's decoding process, reused from video to video

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = []
        for video, output in zip(batch["video"], batch["output"]):
            job = Job(Path(video), Path(output))
            decoder = prefetch(self.bundle.side_bounds[1], job, self.batch_size, self.force, self.processes)
            rows.append(run_one(self.bundle, job, self.options, self.batch_size, self.force, decoder=decoder))
        return {"row": np.array([json.dumps(row) for row in rows], dtype=object)}


def _check_reachable(address: str, timeout_s: float = 3.0) -> None:
    """Fail within seconds for a ``host:port`` nothing listens on (``ray.init`` would wait far longer)."""
    if address in ("auto", "local") or address.startswith("ray://") or ":" not in address:
        return
    host, port = address.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except (OSError, ValueError) as err:
        raise UsageError(f"cannot reach a Ray cluster at {address}: {err}") from None


TOKEN_HELP = ("a cluster started with `ray start --head` (Ray 2.59 and later) takes only drivers with its token: "
              "copy the head node's ~/.ray/auth_token to ~/.ray/auth_token here, or set RAY_AUTH_TOKEN (or "
              "RAY_AUTH_TOKEN_PATH) to it")


def _token_at_hand() -> bool:
    return bool(os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")
                or (Path.home() / ".ray" / "auth_token").is_file())


def _send_token_if_any() -> None:
    """Ray 2.59+ clusters started by ``ray start --head`` require a token, but a driver sends one only
    with ``RAY_AUTH_MODE=token``; where a token is at hand and the mode is not set, set it, as ``ray
    start`` does for itself. A cluster without token authentication takes such a driver too."""
    if "RAY_AUTH_MODE" in os.environ or not _token_at_hand():
        return
    os.environ["RAY_AUTH_MODE"] = "token"
    try:
        from ray._raylet import Config  # Ray reads its settings once, at import: read them again
    except ImportError:  # a Ray without token authentication: nothing to do
        return
    Config.initialize("")


def connect(address: str | None) -> None:
    """Join the Ray cluster at ``address`` (``'auto'``: the one ``ray start`` made on this machine).

    With Ray already initialised (a test, or the caller's own ``ray.init``), that instance is used.
    """
    ray = _ray()
    if ray.is_initialized():
        return
    if address not in (None, "local"):
        _send_token_if_any()
    try:
        ray.init(address=address, log_to_driver=False)
    except ConnectionError as err:
        # _check_reachable found something listening: a refusal here is most often the token.
        raise UsageError(f"cannot join the Ray cluster at {address or 'auto'} ({err}); {TOKEN_HELP}") from None


def check_resources(num_cpus: float, num_gpus: float) -> None:
    """Refuse, before any actor is asked for, an actor no node of the cluster can hold (Ray would wait forever)."""
    import ray

    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    if any(r.get("CPU", 0) >= num_cpus and r.get("GPU", 0) >= num_gpus for r in nodes):
        return
    have = ", ".join(f"{r.get('CPU', 0):g} CPUs and {r.get('GPU', 0):g} GPUs" for r in nodes) or "no live node"
    raise UsageError(f"no node of the Ray cluster can hold an actor of --num-cpus {num_cpus:g} --num-gpus {num_gpus:g} "
                     f"(its nodes have {have}); lower them, or add such a node")


def run_dataset(bundle_path: str | Path, inputs: list[str | Path], out_dir: str | Path, address: str | None = None,
                concurrency: int = 1, num_cpus: float = 1, num_gpus: float = 0, batch_size: int = 8,
                options: dict | None = None, force: bool = False, progress: bool = True) -> tuple[list[dict], list[dict]]:
    """Run a bundle over a dataset on a Ray cluster; the same results and manifest as :func:`facecrop.dataset.run_local`.

    Args:
        bundle_path: the bundle folder, at a path every node reaches.
        inputs: videos, folders or ``.txt`` lists (see :func:`facecrop.dataset.collect_videos`).
        out_dir: the output folder, at a path every node reaches.
        address: the cluster (``host:port``, ``ray://...`` or ``'auto'``); ``None`` starts a local one.
        concurrency: number of actors; num_cpus, num_gpus: resources of each.
        options: ``process_video``'s keyword arguments (see :func:`facecrop.dataset.run_settings`).

    Returns:
        ``(rows, skipped)`` as :func:`facecrop.dataset.run_local`.
    """
    ray = _ray()  # a missing extra or an unreachable cluster is refused before anything is written
    if address and not ray.is_initialized():
        _check_reachable(address)
    out_dir = Path(out_dir)
    videos = collect_videos(inputs, out_dir)
    prepare_output(out_dir)
    with OutputLock(out_dir / MANIFEST):  # one run per output folder: a second is refused at once
        bundle_path = Path(bundle_path).resolve()
        sha256 = read_manifest(bundle_path)["artifact"]["sha256"]
        manifest = Manifest(out_dir)
        settings = run_settings(options)
        jobs, skipped = plan(videos, out_dir, manifest, sha256, settings, force)
        rows: list[dict] = []
        if not jobs:
            return rows, skipped
        connect(address)
        check_resources(num_cpus, num_gpus)
        items = [{"video": str(job.video), "output": str(job.output)} for job in jobs]
        results = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
            VideoWorker, batch_size=1, concurrency=concurrency, num_cpus=num_cpus, num_gpus=num_gpus,
            fn_constructor_kwargs={"bundle_path": str(bundle_path), "options": settings,
                                   "batch_size": batch_size, "force": force})
        bar = DatasetProgress(len(jobs), enabled=progress)
        for item in results.iter_rows():
            row = json.loads(item["row"])
            manifest.append(row)
            rows.append(row)
            bar.add_frames(row.get("frames") or 0)  # the actors' frames reach this process as each video ends
            bar.finished(row)
        bar.close()
        return rows, skipped
