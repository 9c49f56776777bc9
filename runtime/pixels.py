"""Reading two side-by-side pixels at once, the gather under the letterbox and the crops.

Both resamplers blend pairs of horizontally adjacent pixels: pixel ``x`` and ``x + 1`` of a row, all
channels. In channels-last RGB frames such a pair is six consecutive bytes, at byte offset
``frame * H * W * 3 + y * W * 3 + x * 3`` of the flattened frames.

On the CPU, a compiled gather fetches one element per load, lane by lane (inductor emits no vector
gather), so reading the six bytes one by one costs six loads. Read as the two 64-bit words that hold
them, the same six bytes cost two loads and a few shifts (docs/speed.md, step 23: compiled alone,
crops of 112 px 0.19-0.21 -> 0.14-0.15 ms, the letterbox 1.0-1.27 -> 0.24-0.40 ms a frame; the same
pixels). Other devices, float frames and TorchScript traces gather the six values one by one.
"""

from __future__ import annotations

from typing import Callable

import torch

__all__ = ["pixel_pairs"]


def _words(flat: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """``read(offset) -> int64`` holding ``flat[offset:offset + 6]`` in its low six bytes (little-endian).

    ``flat`` (uint8, 1-D, contiguous) is read as 64-bit words in place (copied first if it starts
    inside a word); its last ``len % 8`` bytes, which no whole word covers, are gathered into one
    zero-padded word.
    """
    # Eager callers may hand a view into a batch, which can start inside a word: copied. (A compiled
    # graph cannot read the offset; the runtime hands its modules whole buffers, see Bundle.__call__.)
    if not torch.compiler.is_compiling() and flat.storage_offset() % 8:
        flat = flat.clone()
    count = flat.shape[0]
    whole = count // 8
    # as_strided, not a slice: inside torch.cond, AOTInductor sized a slice ``[:whole * 8]`` as the whole
    # buffer (its example was a multiple of 8), which fails at run time for other frame sizes.
    words = flat.as_strided((whole * 8,), (1,)).view(torch.int64)  # [whole], a view
    # The bytes past the last whole word, zero-padded into one (a pad or view of a slice of symbolic
    # length would make exported programs guard on the length).
    lanes = torch.arange(8, device=flat.device)
    at = whole * 8 + lanes
    tail = (torch.where(at < count, flat[at.clamp(max=count - 1)], 0).long() << (8 * lanes)).sum()  # int64 []

    def word(index: torch.Tensor) -> torch.Tensor:
        # The tail word is one broadcast value: choosing it costs no second gather.
        return torch.where(index < whole, torch.ops.aten._unsafe_index(words, [index.clamp(max=whole - 1)]), tail)

    def read(offset: torch.Tensor) -> torch.Tensor:
        index, shift = offset >> 3, (offset & 7) * 8  # the word holding the first byte, its bit position
        low, high = word(index), word(index + 1)
        # A logical shift right of the low word (int64 shifts are arithmetic), the high word's bytes
        # above it. At shift 0 the low word is the answer; the clamp keeps the unused lanes' shifts
        # below 64 bits (compiled C++ leaves wider shifts undefined).
        apart = shift.clamp(min=8)
        joined = ((low >> apart) & ((1 << (64 - apart)) - 1)) | (high << (64 - apart))
        return torch.where(shift == 0, low, joined)

    return read


def pixel_pairs(frames: torch.Tensor) -> Callable[[torch.Tensor], list[torch.Tensor]]:
    """A reader of pixel pairs from ``frames`` ``[B, C, H, W]`` as laid out channels-last.

    ``read(offset)`` takes byte offsets (any shape, int64 or int32 within a frame) of pixel ``x`` in
    the flattened channels-last frames, ``x <= W - 2``, and returns ``2 * C`` tensors of that shape:
    pixel ``x``'s channels, then pixel ``x + 1``'s, in ``frames.dtype`` (uint8 frames on the CPU: int64
    holding 0-255). Channels-last frames are read in place; other layouts are transposed once.
    """
    flat = frames.permute(0, 2, 3, 1).reshape(-1)
    values = 2 * frames.shape[1]
    # Not in a TorchScript trace, which would record the words' count of its example as a constant.
    if (frames.dtype == torch.uint8 and frames.device.type == "cpu" and values <= 8 and flat.shape[0] >= 8
            and not torch.jit.is_tracing()):
        read_word = _words(flat)

        def read(offset: torch.Tensor) -> list[torch.Tensor]:
            pair = read_word(offset.long())
            return [(pair >> (8 * i)) & 255 for i in range(values)]

        return read

    def gather(offset: torch.Tensor) -> list[torch.Tensor]:
        # Every offset is in range by construction, so no bounds checks or negative-index wrap.
        return [torch.ops.aten._unsafe_index(flat, [offset + i]) for i in range(values)]

    return gather
