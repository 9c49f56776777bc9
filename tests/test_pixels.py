"""Pixel pairs read as 64-bit words (the CPU's path) give the bytes gathered one by one (other devices')."""

import pytest
import torch

from facecrop.runtime.pixels import pixel_pairs


def _bytewise(frames: torch.Tensor, offset: torch.Tensor) -> list[torch.Tensor]:
    flat = frames.permute(0, 2, 3, 1).reshape(-1)
    return [flat[offset + i].long() for i in range(2 * frames.shape[1])]


@pytest.mark.parametrize("shape", [(1, 3, 16, 16), (3, 3, 37, 41), (2, 4, 9, 17), (5, 3, 33, 35)])
def test_words_equal_bytes_everywhere(shape):
    """Every pair start of every frame, the last ones included (the bytes past the last whole word)."""
    frames = torch.randint(0, 256, shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(sum(shape)))
    frames = frames.contiguous(memory_format=torch.channels_last)
    batch, channels, height, width = shape
    x = torch.arange(width - 1)
    offset = ((torch.arange(batch)[:, None, None] * height + torch.arange(height)[:, None]) * width + x) * channels
    got = pixel_pairs(frames)(offset)
    assert len(got) == 2 * channels
    for ours, want in zip(got, _bytewise(frames, offset)):
        assert torch.equal(ours.long(), want)


def test_views_into_a_batch_and_other_layouts():
    """A view starting inside a 64-bit word (frames[1:] of 21 x 23 frames), and frames laid out NCHW."""
    frames = torch.randint(0, 256, (4, 3, 21, 23), dtype=torch.uint8).contiguous(memory_format=torch.channels_last)
    offset = torch.arange(0, 21 * 23 * 3 - 6, 3)  # every pair start of the first frame
    views = (frames[1:], frames[3:], frames[:2], frames[1:].contiguous())
    assert frames[1:].storage_offset() % 8 and frames[1:].contiguous().storage_offset() == 0
    for view in views:
        for ours, want in zip(pixel_pairs(view)(offset), _bytewise(view, offset)):
            assert torch.equal(ours.long(), want)


def test_float_frames_are_gathered_in_their_dtype():
    frames = torch.rand(2, 3, 8, 9, dtype=torch.float64) * 255
    offset = torch.tensor([0, 3, 50, 2 * 8 * 9 * 3 - 6])
    got = pixel_pairs(frames)(offset)
    assert all(v.dtype == torch.float64 for v in got)
    for ours, want in zip(got, _bytewise(frames, offset)):
        assert torch.equal(ours.long(), want)
