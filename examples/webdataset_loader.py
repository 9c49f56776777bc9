"""Train on facecrop's crops: WebDataset shards from ``facecrop run --crops webdataset`` into a torch DataLoader.

Usage: ``python examples/webdataset_loader.py CROPS_FOLDER [CROPS_FOLDER ...] [--batch-size 32]``,
where each folder is a ``<results>.crops/`` of a run (one video's shards; a dataset run has one
per video). Prints each batch's shapes and the first sample's face id, frame and ``crop_mat``.
Every sample is an RGB crop with the JSON that maps it back to its video: the crop matrix turns
crop pixels back into frame pixels (``inverse(crop_mat) @ (x, y, 1)``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def loader(folders: list[Path], batch_size: int, workers: int = 0):
    """A DataLoader of ``(crops float [B, 3, S, S] in 0-1, face_idx [B], frame_index [B], crop_mat [B, 3, 3])``."""
    import torch
    import webdataset as wds

    shards = sorted(str(p) for folder in folders for p in folder.glob("shard-*.tar"))
    if not shards:
        raise SystemExit(f"no shard-*.tar in {', '.join(map(str, folders))}: run facecrop with --crops webdataset")

    def to_tensors(sample):
        image, meta = sample
        return (torch.from_numpy(image.copy()).permute(2, 0, 1).float() / 255, meta["face_idx"], meta["frame_index"],
                torch.tensor(meta["crop_mat"]))

    dataset = wds.WebDataset(shards, shardshuffle=False).decode("rgb8").to_tuple("png", "json").map(to_tensors)
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=workers)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path, help="<results>.crops/ folders holding shards")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args(argv)
    samples = 0
    for crops, face_idx, frame_index, crop_mat in loader(args.folders, args.batch_size):
        if samples == 0:
            print(f"first sample: face {int(face_idx[0])} in frame {int(frame_index[0])}, crop_mat {crop_mat[0].tolist()}")
        print(f"batch: crops {tuple(crops.shape)} {crops.dtype}, faces {sorted(set(face_idx.tolist()))}")
        samples += len(crops)
    print(f"{samples} crops")
    return 0


if __name__ == "__main__":
    sys.exit(main())
