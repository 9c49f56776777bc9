"""The model zoo: find, verify and download InsightFace's ONNX models.

Models are referred to by name (``det_10g``, ``2d106det``, ...) or by a path to
an ``.onnx`` file. A name is looked up, in this order, in

1. ``<model_dir>/<name>.onnx`` (a flat folder, as ``shared/models`` is laid out),
2. ``<model_dir>/<pack>/<name>.onnx`` for each official pack holding the model
   (what ``facecrop models fetch`` writes),
3. ``~/.insightface/models/<pack>/<name>.onnx`` (InsightFace's own downloads),

where ``model_dir`` is the ``model_dir`` argument, else the environment variable
``FACECROP_MODEL_DIR``, else ``~/.facecrop/models``. The first file found is the
one used; if its name has a pinned SHA-256 the file must match it.

``FACECROP_MODEL_OVERRIDES="2d106det=/path/a.onnx,1k3d68=/path/b.onnx"`` maps names to files
of your own (a re-export, fine-tuned weights, a test stand-in), so that code which names a
model, as Medusa code does, runs on them; like any path, they are used unverified, and a
warning says so once per file.

Official packs come from release v0.7 of deepinsight/insightface. The pins are
the SHA-256s of the official files; models and zips without a published pin
are used unverified and reported as *unpinned* by ``facecrop models list``.
A pack is described by a :class:`PackSpec` (data, not code), so other packs,
or test packs, go through the same download and verification path.

Nothing that looks valid is ever left half-written: a download goes to a
hidden ``.part`` file in the model folder and is renamed to ``<pack>.zip`` only
after its size and hash check out; the pack is extracted into a hidden folder
and renamed to ``<pack>/`` only after every file is verified.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import shutil
import sys
import tempfile
import urllib.error
import urllib.request
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import IO, Mapping, Optional, Union

from facecrop.runtime.errors import FacecropError, UsageError

DEFAULT_ZOO_URL = "https://github.com/deepinsight/insightface/releases/download/v0.7"
ZOO_URL_ENV = "FACECROP_ZOO_URL"
MODEL_DIR_ENV = "FACECROP_MODEL_DIR"
OVERRIDES_ENV = "FACECROP_MODEL_OVERRIDES"

PathLike = Union[str, os.PathLike]


@dataclass(frozen=True)
class ModelSpec:
    """A known model file.

    Attributes:
        name: the file's stem; the file is ``<name>.onnx``.
        sha256: lowercase hex SHA-256 of the official file, or ``None`` when no
            official hash is pinned (the file is then used unverified).
        description: one line for ``facecrop models list``.
    """

    name: str
    sha256: Optional[str]
    description: str


@dataclass(frozen=True)
class PackSpec:
    """A downloadable zip of models.

    Attributes:
        name: pack name; the zip is ``<base_url>/<name>.zip`` and extracts to ``<model_dir>/<name>/``.
        files: ``{model name: SHA-256 or None}``; the zip must hold ``<model name>.onnx`` for each,
            at its top level or inside one folder. Other members are not extracted.
        sha256: SHA-256 of the zip, or ``None`` if unpinned.
        size: size of the zip in bytes, or ``None`` if unknown (shown by ``models list``).
    """

    name: str
    files: Mapping[str, Optional[str]]
    sha256: Optional[str] = None
    size: Optional[int] = None

    def __post_init__(self):
        # The name becomes a file and folder name; keep it to one plain path component.
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", self.name):
            raise UsageError(f"PackSpec name must be a plain file name, got {self.name!r}")
        object.__setattr__(self, "files", MappingProxyType(dict(self.files)))


# Pins from the official release files (see shared/models/README.md); the
# recognition and attribute models have no published pin here and stay unpinned.
MODELS: Mapping[str, ModelSpec] = MappingProxyType({spec.name: spec for spec in (
    ModelSpec("det_10g", "5838f7fe053675b1c7a08b633df49e7af5495cee0493c7dcf6697200b85b5b91",
              "SCRFD-10GF detector, 5 keypoints"),
    ModelSpec("det_2.5g", "041f73f47371333d1d17a6fee6c8ab4e6aecabefe398ff32cca4e2d5eaee0af9",
              "SCRFD-2.5GF detector, 5 keypoints"),
    ModelSpec("det_500m", "5e4447f50245bbd7966bd6c0fa52938c61474a04ec7def48753668a9d8b4ea3a",
              "SCRFD-500MF detector, 5 keypoints"),
    ModelSpec("scrfd_500m_bnkps_640", "b467f878e26ff1e7ee05cd9936fdff63fa2a5af5d732ed17ee231f2dd5cc07ae",
              "SCRFD-500MF detector, fixed 640x640 export (SCRFD model zoo, not in a pack)"),
    ModelSpec("2d106det", "f001b856447c413801ef5c42091ed0cd516fcd21f2d6b79635b1e733a7109dbf",
              "106 2-D landmarks"),
    ModelSpec("1k3d68", "df5c06b8a0c12e422b2ed8947b8869faa4105387f199c477af038aa01f9a45cc",
              "68 3-D landmarks"),
    ModelSpec("genderage", None, "gender and age"),
    ModelSpec("w600k_r50", None, "ArcFace ResNet50 recognition (WebFace600K)"),
    ModelSpec("w600k_mbf", None, "ArcFace MobileFaceNet recognition (WebFace600K)"),
)})


def _official_pack(name: str, models: tuple[str, ...], sha256: Optional[str] = None,
                   size: Optional[int] = None) -> PackSpec:
    return PackSpec(name, {m: MODELS[m].sha256 for m in models}, sha256, size)


# Contents as listed in InsightFace's python-package README (model zoo table).
PACKS: Mapping[str, PackSpec] = MappingProxyType({spec.name: spec for spec in (
    _official_pack("buffalo_l", ("det_10g", "2d106det", "1k3d68", "genderage", "w600k_r50"),
                   "80ffe37d8a5940d59a7384c201a2a38d4741f2f3c51eef46ebb28218a7b0ca2f", 288_621_354),
    _official_pack("buffalo_m", ("det_2.5g", "2d106det", "1k3d68", "genderage", "w600k_r50"),
                   "d98264bd8f2dc75cbc2ddce2a14e636e02bb857b3051c234b737bf3b614edca9"),
    _official_pack("buffalo_s", ("det_500m", "2d106det", "1k3d68", "genderage", "w600k_mbf")),
    _official_pack("buffalo_sc", ("det_500m", "w600k_mbf"),
                   "57d31b56b6ffa911c8a73cfc1707c73cab76efe7f13b675a05223bf42de47c72", 16_140_916),
)})


class ModelNotFoundError(FacecropError, FileNotFoundError):
    """A model name or path that resolves to no file; the message says where it looked."""


class ModelIntegrityError(FacecropError, ValueError):
    """A model file or zip whose SHA-256 (or content) is not the pinned one."""


class DownloadError(FacecropError, RuntimeError):
    """A download that failed; the message gives the URL and how to install by hand."""


# ---------------------------------------------------------------------------
# Hashing


_CHUNK = 1 << 20
# (resolved path, size, mtime_ns) -> SHA-256; a rewritten file changes size or mtime.
_SHA_CACHE: dict[tuple[str, int, int], str] = {}


def sha256_file(path: PathLike) -> str:
    """Return the lowercase hex SHA-256 of the file at ``path`` (read in 1 MiB chunks).

    Example:
        >>> sha256_file("/work/shared/models/det_500m.onnx")[:12]  # doctest: +SKIP
        '5e4447f50245'
    """
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _cached_sha256(path: Path) -> str:
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _SHA_CACHE:
        _SHA_CACHE[key] = sha256_file(path)
    return _SHA_CACHE[key]


def pinned_sha256(name: str) -> Optional[str]:
    """Return the pinned SHA-256 of model ``name``, or ``None`` if it is unpinned or unknown.

    Example:
        >>> pinned_sha256("det_500m")[:12]
        '5e4447f50245'
        >>> pinned_sha256("w600k_r50") is None
        True
    """
    spec = MODELS.get(name)
    return spec.sha256 if spec is not None else None


# ---------------------------------------------------------------------------
# Locating models


def default_model_dir(model_dir: Optional[PathLike] = None) -> Path:
    """Return ``model_dir``, else ``$FACECROP_MODEL_DIR``, else ``~/.facecrop/models``."""
    if model_dir is not None:
        return Path(model_dir).expanduser()
    env = os.environ.get(MODEL_DIR_ENV)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".facecrop" / "models"


def insightface_model_dir() -> Path:
    """InsightFace's own download folder, ``~/.insightface/models``."""
    return Path.home() / ".insightface" / "models"


def packs_containing(name: str) -> list[str]:
    """Names of the official packs that hold model ``name``, in :data:`PACKS` order."""
    return [pack.name for pack in PACKS.values() if name in pack.files]


def _candidates(name: str, model_dir: Path) -> list[Path]:
    """Every place model ``name`` is looked for, in order of preference."""
    file = f"{name}.onnx"
    packs = packs_containing(name)
    return ([model_dir / file] + [model_dir / pack / file for pack in packs]
            + [insightface_model_dir() / pack / file for pack in packs])


@dataclass(frozen=True)
class ModelStatus:
    """Where a model was found and whether it checks out.

    Attributes:
        name: model name.
        path: the file used, or ``None`` if none was found.
        state: ``'verified'`` (matches its pin), ``'unpinned'`` (found, no pin to check),
            ``'corrupt'`` (does not match its pin) or ``'missing'``.
        searched: every path that was looked at, in order.
        sha256: the file's SHA-256 when it was computed (verified or corrupt), else ``None``.
    """

    name: str
    path: Optional[Path]
    state: str
    searched: tuple[Path, ...]
    sha256: Optional[str] = None


def model_status(name: str, model_dir: Optional[PathLike] = None) -> ModelStatus:
    """Locate model ``name`` (a key of :data:`MODELS`) and check it against its pin."""
    if name not in MODELS:
        raise UsageError(f"unknown model name {name!r}; known names: {', '.join(MODELS)}")
    searched = tuple(_candidates(name, default_model_dir(model_dir)))
    path = next((p for p in searched if p.is_file()), None)
    if path is None:
        return ModelStatus(name, None, "missing", searched)
    pin = MODELS[name].sha256
    if pin is None:
        return ModelStatus(name, path, "unpinned", searched)
    digest = _cached_sha256(path)
    return ModelStatus(name, path, "verified" if digest == pin else "corrupt", searched, digest)


def _how_to_get(name: str, model_dir: Path) -> str:
    packs = packs_containing(name)
    if packs:
        fetch = " or ".join(f"`facecrop models fetch {p}`" for p in packs)
        return (f"run {fetch} (add --model-dir {model_dir} to use another folder), "
                f"or place {name}.onnx in {model_dir}, or set {MODEL_DIR_ENV} to the folder that holds it")
    return (f"{name}.onnx is not in any official pack: place it in {model_dir} by hand, "
            f"or set {MODEL_DIR_ENV} to the folder that holds it")


_WARNED: set[Path] = set()


def model_overrides() -> dict[str, Path]:
    """``{name: path}`` from ``$FACECROP_MODEL_OVERRIDES`` (``name=path`` pairs, comma-separated).

    Example:
        >>> os.environ["FACECROP_MODEL_OVERRIDES"] = "2d106det=/tmp/mine.onnx"
        >>> model_overrides()
        {'2d106det': PosixPath('/tmp/mine.onnx')}
        >>> del os.environ["FACECROP_MODEL_OVERRIDES"]
    """
    pairs = {}
    for item in filter(None, (s.strip() for s in os.environ.get(OVERRIDES_ENV, "").split(","))):
        name, sep, path = item.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise UsageError(f"${OVERRIDES_ENV} must be name=path pairs separated by commas, got {item!r}")
        pairs[name.strip()] = Path(path.strip()).expanduser()
    return pairs


def resolve_model(name_or_path: PathLike, model_dir: Optional[PathLike] = None) -> Path:
    """Return the path of a verified model file.

    Args:
        name_or_path: a model name from :data:`MODELS` (``'det_10g'``, ``'2d106det'``, ...), looked up
            as described in the module docstring and checked against its pinned SHA-256; or a path
            to an existing ``.onnx`` file, returned as is (a path is the caller's own file, so its
            name says nothing about its content and it is not checked against a pin).
        model_dir: folder searched first; default ``$FACECROP_MODEL_DIR``, else ``~/.facecrop/models``.

    Returns:
        Absolute path of the file. Verification is cached by (path, size, mtime), so repeated calls
        hash each file once.

    Raises:
        ModelNotFoundError (a FileNotFoundError): no file for the name, or the path does not exist.
        ModelIntegrityError (a ValueError): the file found does not match its pinned SHA-256
            (truncated, tampered or a different file), or a path is not a file.

    Example:
        >>> resolve_model("det_500m", model_dir="/work/shared/models")  # doctest: +SKIP
        PosixPath('/work/shared/models/det_500m.onnx')
    """
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise TypeError(f"name_or_path must be a model name or a path, got {type(name_or_path).__name__}")
    override = model_overrides().get(name_or_path) if isinstance(name_or_path, str) else None
    if override is not None:
        if not override.is_file():
            raise ModelNotFoundError(f"${OVERRIDES_ENV} maps {name_or_path!r} to {override}, which is not a file")
        if override not in _WARNED:
            _WARNED.add(override)
            warnings.warn(f"model {name_or_path!r} is {override} (from ${OVERRIDES_ENV}), used unverified",
                          stacklevel=2)
        return override.absolute()
    if isinstance(name_or_path, str) and name_or_path in MODELS:
        return _resolve_name(name_or_path, model_dir)
    path = Path(name_or_path).expanduser()
    if not path.exists():
        raise ModelNotFoundError(
            f"model {str(name_or_path)!r} is neither a known model name ({', '.join(MODELS)}) "
            f"nor an existing file (looked for {path.absolute()})")
    if not path.is_file():
        raise ModelIntegrityError(f"model path {path.absolute()} is not a file")
    return path.absolute()


def _resolve_name(name: str, model_dir: Optional[PathLike]) -> Path:
    folder = default_model_dir(model_dir)
    status = model_status(name, folder)
    if status.state == "missing":
        looked = "\n  ".join(str(p) for p in status.searched)
        raise ModelNotFoundError(
            f"model {name!r} not found; looked in:\n  {looked}\nTo get it: {_how_to_get(name, folder)}.")
    if status.state == "corrupt":
        size = status.path.stat().st_size
        refetch = " or ".join(f"`facecrop models fetch {p}`" for p in packs_containing(name))
        fix = f"delete it and run {refetch}" if refetch else "replace it with the official file"
        raise ModelIntegrityError(
            f"model file {status.path} ({size:,} bytes) is corrupt: its SHA-256 is {status.sha256}, "
            f"expected {MODELS[name].sha256} for {name}. It is truncated, modified or a different "
            f"model; {fix}.")
    return status.path.absolute()


# ---------------------------------------------------------------------------
# Downloading packs


def _pack_spec(pack: Union[str, PackSpec]) -> PackSpec:
    if isinstance(pack, PackSpec):
        return pack
    if pack not in PACKS:
        raise UsageError(f"unknown pack {pack!r}; official packs: {', '.join(PACKS)}")
    return PACKS[pack]


def pack_url(pack: Union[str, PackSpec], base_url: Optional[str] = None) -> str:
    """URL of ``<pack>.zip``: under ``base_url``, else ``$FACECROP_ZOO_URL``, else the v0.7 release."""
    base = base_url or os.environ.get(ZOO_URL_ENV) or DEFAULT_ZOO_URL
    return f"{base.rstrip('/')}/{_pack_spec(pack).name}.zip"


def _pack_folder_state(spec: PackSpec, folder: Path) -> dict[str, str]:
    """``{model name: 'verified' | 'unpinned' | 'corrupt' | 'missing'}`` for a pack folder."""
    states = {}
    for name, pin in spec.files.items():
        path = folder / f"{name}.onnx"
        if not path.is_file():
            states[name] = "missing"
        elif pin is None:
            states[name] = "unpinned"
        else:
            states[name] = "verified" if _cached_sha256(path) == pin else "corrupt"
    return states


def fetch_pack(pack: Union[str, PackSpec], model_dir: Optional[PathLike] = None, *,
               base_url: Optional[str] = None, progress: bool = True) -> Path:
    """Download, verify and extract a pack into ``<model_dir>/<pack>/``.

    If ``<model_dir>/<pack>.zip`` already exists (a zip placed by hand, for machines without
    internet) it is verified and used instead of downloading. A pack folder that is already
    complete and verified is left alone; an incomplete or corrupt one is replaced.

    Args:
        pack: an official pack name (``'buffalo_l'``, ``'buffalo_m'``, ``'buffalo_s'``,
            ``'buffalo_sc'``) or a :class:`PackSpec`.
        model_dir: destination folder; default ``$FACECROP_MODEL_DIR``, else ``~/.facecrop/models``.
        base_url: folder URL holding ``<pack>.zip``; default ``$FACECROP_ZOO_URL``, else the
            official v0.7 release.
        progress: show a tqdm progress bar on stderr while downloading.

    Returns:
        The pack folder.

    Raises:
        DownloadError (a RuntimeError): the server could not be reached or the transfer broke off.
        ModelIntegrityError (a ValueError): the zip or a file in it does not match its pin, or
            the zip is unreadable or lacks a file.
    """
    spec = _pack_spec(pack)
    folder = default_model_dir(model_dir)
    target = folder / spec.name
    if target.is_dir() and set(_pack_folder_state(spec, target).values()) <= {"verified", "unpinned"}:
        print(f"{spec.name}: already present and verified in {target}", file=sys.stderr)
        return target
    folder.mkdir(parents=True, exist_ok=True)
    zip_path = folder / f"{spec.name}.zip"
    url = pack_url(spec, base_url)
    downloaded = not zip_path.is_file()
    if downloaded:
        _download(spec, url, zip_path, progress)
    else:
        print(f"{spec.name}: using {zip_path}", file=sys.stderr)
        _check_zip(spec, zip_path, where=str(zip_path))
    try:
        _extract(spec, zip_path, target)
    except ModelIntegrityError:
        # A downloaded zip that fails is worthless; a zip the user placed is theirs to delete.
        if downloaded:
            zip_path.unlink()
        raise
    # The verified folder is the installed copy; keeping the zip would double the disk use.
    zip_path.unlink()
    unpinned = [f"{name}.onnx" for name, pin in spec.files.items() if pin is None]
    if spec.sha256 is None:
        unpinned.insert(0, f"{spec.name}.zip")
    if unpinned:
        print(f"{spec.name}: note: no pinned SHA-256 for {', '.join(unpinned)}; used unverified",
              file=sys.stderr)
    print(f"{spec.name}: installed in {target}", file=sys.stderr)
    return target


def _offline_help(spec: PackSpec, url: str, zip_path: Path) -> str:
    return (f"To install it by hand, download {url} on a machine with internet access, then either "
            f"save it as {zip_path} and run `facecrop models fetch {spec.name} --model-dir "
            f"{zip_path.parent}` again (it is verified and extracted without downloading), or "
            f"extract its .onnx files into {zip_path.parent / spec.name}; "
            f"`facecrop models list` then checks them.")


def _download(spec: PackSpec, url: str, zip_path: Path, progress: bool) -> None:
    """Stream ``url`` into a hidden temp file next to ``zip_path``; rename it there once verified."""
    from tqdm import tqdm

    fd, tmp_name = tempfile.mkstemp(prefix=f".{spec.name}.zip.", suffix=".part", dir=zip_path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                response = urllib.request.urlopen(url, timeout=60)
            except urllib.error.HTTPError as err:
                raise DownloadError(f"download of {url} failed: HTTP {err.code} {err.reason}. "
                                    + _offline_help(spec, url, zip_path)) from None
            except (urllib.error.URLError, OSError) as err:
                reason = getattr(err, "reason", err)
                raise DownloadError(f"download of {url} failed: {reason} (offline, or the server is "
                                    f"unreachable). " + _offline_help(spec, url, zip_path)) from None
            with response:
                length = response.headers.get("Content-Length")
                total = int(length) if length is not None else None
                received = 0
                with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024,
                          desc=spec.name, disable=not progress) as bar:
                    try:
                        while chunk := response.read(_CHUNK):
                            out.write(chunk)
                            received += len(chunk)
                            bar.update(len(chunk))
                    except (OSError, http.client.HTTPException) as err:
                        raise DownloadError(
                            f"download of {url} broke off after {received:,} bytes ({err!r}). "
                            "Run the command again. " + _offline_help(spec, url, zip_path)) from None
            if total is not None and received != total:
                raise DownloadError(f"download of {url} is incomplete: {received:,} of {total:,} bytes. "
                                    "Run the command again.")
        _check_zip(spec, tmp, where=url)
        os.replace(tmp, zip_path)
    finally:
        tmp.unlink(missing_ok=True)


def _check_zip(spec: PackSpec, path: Path, where: str) -> None:
    if spec.sha256 is None:
        return
    digest = sha256_file(path)
    if digest != spec.sha256:
        raise ModelIntegrityError(
            f"{spec.name}.zip from {where} ({path.stat().st_size:,} bytes) has SHA-256 {digest}, "
            f"expected {spec.sha256}: it is truncated, corrupt or not the official pack. "
            + (f"Delete {path} and run `facecrop models fetch {spec.name}` again."
               if where == str(path) else "Nothing was installed; run the command again."))


def _zip_members(spec: PackSpec, archive: zipfile.ZipFile, where: Path) -> dict[str, zipfile.ZipInfo]:
    """Map each model of the pack to its zip member, found at the top level or inside one folder."""
    by_file: dict[str, list[zipfile.ZipInfo]] = {}
    for info in archive.infolist():
        parts = info.filename.split("/")
        if not info.is_dir() and len(parts) <= 2:
            by_file.setdefault(parts[-1], []).append(info)
    members = {}
    for name in spec.files:
        found = by_file.get(f"{name}.onnx", [])
        if len(found) != 1:
            what = "lacks" if not found else f"holds {len(found)} copies of"
            raise ModelIntegrityError(f"{where} {what} {name}.onnx; it is not a valid {spec.name} pack")
        members[name] = found[0]
    return members


def _extract(spec: PackSpec, zip_path: Path, target: Path) -> None:
    """Extract and verify the pack's files into a hidden folder, then rename it to ``target``."""
    staging = Path(tempfile.mkdtemp(prefix=f".{spec.name}.", suffix=".part", dir=target.parent))
    try:
        try:
            with zipfile.ZipFile(zip_path) as archive:
                for name, info in _zip_members(spec, archive, zip_path).items():
                    _extract_member(archive, info, staging / f"{name}.onnx", spec.files[name], zip_path)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as err:
            raise ModelIntegrityError(f"{zip_path} is not a readable zip ({err}). "
                                      "Nothing was installed.") from None
        if target.exists():
            # A directory cannot be replaced in one rename: move the old one aside first.
            old = Path(tempfile.mkdtemp(prefix=f".{spec.name}.", suffix=".old", dir=target.parent))
            os.replace(target, old / spec.name)
            os.replace(staging, target)
            shutil.rmtree(old)
        else:
            os.replace(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging)


def _extract_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, dest: Path,
                    pin: Optional[str], zip_path: Path) -> None:
    digest = hashlib.sha256()
    with archive.open(info) as src, open(dest, "wb") as out:
        while chunk := src.read(_CHUNK):
            digest.update(chunk)
            out.write(chunk)
    if pin is not None and digest.hexdigest() != pin:
        raise ModelIntegrityError(
            f"{info.filename} in {zip_path} has SHA-256 {digest.hexdigest()}, expected {pin}: "
            "the pack has been modified. Nothing was installed.")


# ---------------------------------------------------------------------------
# Listing


def print_models(model_dir: Optional[PathLike] = None, file: Optional[IO[str]] = None) -> None:
    """Print every known model and pack: where it was found and whether it verifies.

    States: ``verified`` (matches its pinned SHA-256), ``unpinned`` (found, no official hash to
    check), ``corrupt`` (does not match its pin) and ``missing``.
    """
    out = file if file is not None else sys.stdout
    folder = default_model_dir(model_dir)
    print(f"model folder: {folder}  (also searched: {insightface_model_dir()}/<pack>)", file=out)
    print(file=out)
    print(f"{'model':<22} {'state':<9} {'packs':<32} found at", file=out)
    for name, spec in MODELS.items():
        status = model_status(name, folder)
        packs = ", ".join(packs_containing(name)) or "-"
        where = str(status.path) if status.path is not None else "-"
        print(f"{name:<22} {status.state:<9} {packs:<32} {where}", file=out)
    print(file=out)
    print(f"{'pack':<12} {'zip':<9} state", file=out)
    for spec in PACKS.values():
        zip_state = "pinned" if spec.sha256 is not None else "unpinned"
        print(f"{spec.name:<12} {zip_state:<9} {_pack_summary(spec, folder)}", file=out)


def _pack_summary(spec: PackSpec, folder: Path) -> str:
    """One line: where the pack folder is and how its files check out."""
    for root in (folder, insightface_model_dir()):
        target = root / spec.name
        if target.is_dir():
            states = _pack_folder_state(spec, target)
            bad = [f"{n} {s}" for n, s in states.items() if s in ("missing", "corrupt")]
            if bad:
                return f"incomplete ({', '.join(bad)}) in {target}"
            unpinned = [n for n, s in states.items() if s == "unpinned"]
            note = f"; unpinned: {', '.join(unpinned)}" if unpinned else ""
            return f"complete, verified in {target}{note}"
    return f"not fetched (`facecrop models fetch {spec.name}`)"
