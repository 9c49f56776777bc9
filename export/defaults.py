"""Defaults shared across facecrop (Medusa's ``medusa.defaults``)."""

import logging

import torch

#: Default device of the Medusa-compatible classes: ``'cuda'`` when a CUDA device is usable, else ``'cpu'``.
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

#: facecrop's logger, Medusa's ``LOGGER`` (Medusa code sets its level: ``LOGGER.setLevel('WARNING')``).
LOGGER = logging.getLogger("facecrop")
