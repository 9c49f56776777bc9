"""Train on facecrop's face tubes: the WebDataset shards of a run, in batches that never mix videos.

Usage: ``python examples/webdataset_loader.py FOLDER [FOLDER ...] [--batch-size 32]``, where a folder
is a dataset run's output folder (``facecrop run BUNDLE VIDEOS -o OUT --crops webdataset``: one
``<video>.crops/`` of shards per video, nested as the videos were) or one ``<results>.crops/``.
Prints each batch's video, tubes and shapes.

Every sample is a tube frame's RGB crop with the JSON that maps it back to its video (``video``,
``tube`` ``<video stem>/<face id>/<tube index>``, ``frame_index``, ``crop_mat``: ``inverse(crop_mat)
@ (x, y, 1)`` turns crop pixels into frame pixels). Shards are read in order, a video's tubes in frame
order; a batch ends where the video changes, so face ids (which only mean something within a video)
are never mixed across videos in one batch.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def shards(folders: list[Path]) -> list[str]:
    """Every ``shard-*.tar`` under ``folders``, a video's shards together and in order."""
    found = sorted(str(p) for folder in folders for p in Path(folder).rglob("shard-*.tar"))
    if not found:
        raise SystemExit(f"no shard-*.tar under {', '.join(map(str, folders))}: run facecrop with --crops webdataset")
    return found


def loader(folders: Path | list[Path], batch_size: int = 32):
    """Batches as dicts: ``crops`` float ``[B, 3, S, S]`` in 0-1, ``crop_mat [B, 3, 3]``, ``frame_index [B]``,
    ``video`` (one path per batch) and ``tube`` (B tube ids)."""
    import torch
    import webdataset as wds

    folders = [folders] if isinstance(folders, (str, Path)) else folders
    samples = wds.WebDataset(shards(folders), shardshuffle=False).decode("rgb8").to_tuple("png", "json")
    batch: list = []

    def done():
        return {"crops": torch.stack([torch.from_numpy(image.copy()).permute(2, 0, 1) for image, _ in batch]).float() / 255,
                "crop_mat": torch.tensor([meta["crop_mat"] for _, meta in batch]),
                "frame_index": torch.tensor([meta["frame_index"] for _, meta in batch]),
                "video": batch[0][1]["video"], "tube": [meta["tube"] for _, meta in batch]}

    for image, meta in samples:
        if batch and (len(batch) == batch_size or meta["video"] != batch[0][1]["video"]):
            yield done()
            batch = []
        batch.append((image, meta))
    if batch:
        yield done()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path, help="a dataset run's output folder, or <results>.crops/")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args(argv)
    samples = 0
    for batch in loader(args.folders, args.batch_size):
        print(f"{Path(batch['video']).name}: crops {tuple(batch['crops'].shape)}, tubes {sorted(set(batch['tube']))}")
        samples += len(batch["crops"])
    print(f"{samples} crops")
    return 0


if __name__ == "__main__":
    sys.exit(main())
