"""Where a run writes, checked before any work: writable, and never over one of its inputs.

Every output of a run (the results file, its checkpoint, lock and crops folder, an overlay video,
a dataset's output folder) is compared with every input and with the run's other outputs first,
so that a slip of the keyboard (``--visualize talk.mp4``) is refused before a byte is written.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import VideoError

__all__ = ["check_writable", "refuse_overwrites"]


def _real(path: Path) -> Path:
    """The path with links and ``..`` resolved (it need not exist), so that two spellings compare equal."""
    return Path(os.path.realpath(path))


def _same_or_inside(path: Path, other: Path, other_is_folder: bool) -> bool:
    """Whether writing ``other`` (a file, or a whole folder) would touch ``path``."""
    if path == other or (path.exists() and other.exists() and os.path.samefile(path, other)):
        return True  # a hard link or a second mount of the same file counts too
    return other_is_folder and other in path.parents


def refuse_overwrites(inputs: dict[str, Path], outputs: dict[str, tuple[Path, bool]]) -> None:
    """Raise :class:`VideoError` if an output would replace an input or another output of the same run.

    Args:
        inputs: what the run reads, by what the user calls it (``{"the video": Path("talk.mp4")}``).
        outputs: what it writes, ``{name: (path, is_folder)}``; a folder output is written (and may be
            replaced) whole, so nothing the run reads or writes elsewhere may lie inside it.

    Example:
        >>> refuse_overwrites({"the video": Path("talk.mp4")},
        ...                   {"--visualize": (Path("talk.mp4"), False)})  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        facecrop.runtime.errors.VideoError: --visualize talk.mp4 would overwrite the video talk.mp4; ...
    """
    real_outputs = {name: (_real(path), folder, path) for name, (path, folder) in outputs.items()}
    for in_name, given in inputs.items():
        real = _real(given)
        for out_name, (out, folder, out_given) in real_outputs.items():
            if _same_or_inside(real, out, folder):
                raise VideoError(f"{out_name} {out_given} would overwrite {in_name} {given}; choose another path")
    names = list(real_outputs)
    for i, first in enumerate(names):
        for second in names[i + 1:]:
            for a_name, b_name in ((second, first), (first, second)):  # the later-named (--visualize) is blamed first
                path, _, given = real_outputs[a_name]
                other, folder, other_given = real_outputs[b_name]
                if _same_or_inside(path, other, folder):
                    where = "is the same path as" if path == other else "lies inside"
                    raise VideoError(f"{a_name} {given} {where} {b_name} {other_given}, which the run writes; "
                                     f"choose another path for {a_name}")


def check_writable(output: Path, what: str = "") -> None:
    """Fail before any work if the file ``output`` cannot be written (its folder missing or read-only).

    ``what`` names it in the message (``"the overlay"``), after the path.
    """
    named = f"{output}{f' ({what})' if what else ''}"
    parent = output.absolute().parent
    if output.is_dir():
        raise VideoError(f"output {named} is a folder; give a file name such as results.npz")
    if not parent.is_dir():
        raise VideoError(f"cannot write {named}: folder {parent} does not exist")
    probe = parent / f".{output.name}.probe"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise VideoError(f"cannot write {named}: {err.strerror}") from None
