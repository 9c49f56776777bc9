"""Defaults shared across facecrop (Medusa's ``medusa.defaults``)."""

import torch

#: Default device of the Medusa-compatible classes: ``'cuda'`` when a CUDA device is usable, else ``'cpu'``.
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
