"""A page to look at: what a run found in a video (its tubes' crops, quality over time, what was dropped).

:func:`write_report` turns a results file into one self-contained HTML page (images inline as data
URIs, plots as inline SVG: no network, no script, opens anywhere); :func:`write_dataset_report`
turns a dataset run's output folder into an index page (totals, the worst videos first) with one
page per video beside it. Contact sheets are cut from the video with the tubes' smoothed matrices,
the pixels the tube files hold.
"""

from __future__ import annotations

import base64
import html
import os
from pathlib import Path

import av
import numpy as np

from facecrop.overlay import COLORS
from facecrop.runtime.sources import read_frames
from facecrop.runtime.tubes import DROP_REASONS, frame_rate, summarize_tubes
from facecrop.runtime.cut import cut_crops

__all__ = ["write_dataset_report", "write_report"]

SHEET_CROPS = 8  # crops shown per tube
STYLE = """body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;max-width:1200px}
h1{font-size:20px}h2{font-size:16px;margin-top:28px}table{border-collapse:collapse}
td,th{padding:2px 10px;text-align:right;border-bottom:1px solid #ddd}th{background:#f4f4f4}
td:first-child,th:first-child{text-align:left}.tube{margin:18px 0;padding:10px;border:1px solid #ddd}
.sheet{display:block;image-rendering:auto;max-width:100%}.muted{color:#777}svg{display:block}"""


def _color(face: int) -> str:
    r, g, b = COLORS[face % len(COLORS)]
    return f"#{r:02x}{g:02x}{b:02x}"


def _page(title: str, body: str) -> str:
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body>\n{body}\n</body></html>\n")


def _plot(series: list[tuple[str, np.ndarray, np.ndarray, str]], x_range: tuple[float, float], label: str,
          width: int = 470, height: int = 80) -> str:
    """A small SVG line plot: ``(name, x, y, colour)`` series (NaN breaks a line), y from 0 to its max."""
    tops = [np.nanmax(y) for _, _, y, _ in series if np.isfinite(y).any()]
    top = max(tops) if tops and max(tops) > 0 else 1.0
    x0, x1 = x_range
    span = max(x1 - x0, 1e-9)
    parts = [f'<svg width="{width}" height="{height + 16}" role="img" aria-label="{html.escape(label)}">',
             f'<rect x="0" y="0" width="{width}" height="{height}" fill="#fafafa" stroke="#ddd"/>',
             f'<text x="4" y="{height + 13}" font-size="11" fill="#555">{html.escape(label)} (max {top:.3g})</text>']
    for name, x, y, colour in series:
        xs = (x - x0) / span * (width - 2) + 1
        ys = height - 1 - np.clip(y / top, 0, 1) * (height - 2)
        runs, current = [], []
        for px, py in zip(xs, ys):
            if np.isfinite(py):
                current.append(f"{px:.1f},{py:.1f}")
            elif current:
                runs.append(current)
                current = []
        runs.append(current)
        for run in filter(None, runs):
            parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{" ".join(run)}">'
                         f'<title>{html.escape(name)}</title></polyline>')
    parts.append("</svg>")
    return "".join(parts)


def _timeline(results, tubes: list[dict], fps: float, width: int = 1000) -> str:
    """Faces found per frame (grey) over the video, and each tube as a bar in its face's colour."""
    frames = len(results["valid"])
    counts = results["valid"].sum(1)
    top = max(int(counts.max()) if frames else 1, 1)
    lanes = sorted({t["face_idx"] for t in tubes})
    height = 50 + 12 * len(lanes)
    scale = (width - 2) / max(frames, 1)
    bars = "".join(f'<rect x="{1 + i * scale:.1f}" y="{50 - 46 * c / top:.1f}" width="{max(scale, 0.5):.2f}" '
                   f'height="{46 * c / top:.1f}" fill="#bbb"/>' for i, c in enumerate(counts) if c)
    for t in tubes:
        y = 52 + 12 * lanes.index(t["face_idx"])
        bars += (f'<rect x="{1 + t["start"] * scale:.1f}" y="{y}" width="{max((t["stop"] - t["start"]) * scale, 1):.1f}" '
                 f'height="9" fill="{_color(t["face_idx"])}"><title>{html.escape(t["id"])}: frames {t["start"]}-'
                 f'{t["stop"] - 1}</title></rect>')
    return (f'<svg width="{width}" height="{height + 14}" role="img" aria-label="faces per frame and tubes">'
            f'<rect x="0" y="0" width="{width}" height="{height}" fill="none" stroke="#ddd"/>{bars}'
            f'<text x="4" y="{height + 12}" font-size="11" fill="#555">faces per frame (grey, max {top}) and tubes, '
            f'0 to {frames / fps:.1f} s</text></svg>')


def _sheets(video: Path, results, tubes: list[dict], size: int) -> dict[int, str]:
    """A JPEG data URI per tube: ``SHEET_CROPS`` of its crops side by side, evenly spaced over it."""
    rows_of: dict[int, list[int]] = {}  # frame -> rows of tube_frame_* to cut there
    picks: dict[int, list[int]] = {}
    for t, tube in enumerate(tubes):
        rows = np.flatnonzero(results["tube_frame_tube"] == t)
        chosen = rows[np.unique(np.linspace(0, len(rows) - 1, min(SHEET_CROPS, len(rows))).round().astype(int))]
        picks[t] = list(chosen)
        for row in chosen:
            rows_of.setdefault(int(results["tube_frame_index"][row]), []).append(int(row))
    crops: dict[int, np.ndarray] = {}
    if rows_of:
        for index, frame, _ in read_frames(video, max(rows_of) + 1):
            rows = rows_of.get(index)
            if rows:
                for row, crop in zip(rows, cut_crops(frame, results["tube_crop_mat"][rows], size)):
                    crops[row] = crop
    return {t: _jpeg(np.concatenate([crops[r] for r in rows], 1)) for t, rows in picks.items() if rows}


def _jpeg(rgb: np.ndarray) -> str:
    height, width = rgb.shape[:2]
    rgb = np.pad(rgb, ((0, height % 2), (0, width % 2), (0, 0)))  # 4:2:0 wants even sides
    context = av.CodecContext.create("mjpeg", "w")
    context.width, context.height, context.pix_fmt = rgb.shape[1], rgb.shape[0], "yuvj420p"
    context.options = {"qmin": "3", "qmax": "3"}
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24").reformat(format="yuvj420p")
    data = b"".join(bytes(p) for p in context.encode(frame)) + b"".join(bytes(p) for p in context.encode(None))
    return "data:image/jpeg;base64," + base64.b64encode(data).decode()


def video_report(results_path: Path, video: Path | None = None) -> tuple[str, dict]:
    """The HTML page of one results file, and the numbers an index lists (``frames``, ``tubes``,
    ``tube_frames``, ``kept_fraction``, ``dropped``)."""
    with np.load(results_path, allow_pickle=False) as data:
        results = {k: data[k] for k in data.files if k not in ("imgs_crop", "crop_frame_index", "crop_slot")}
    video = Path(video or (str(results["video"][0]) if "video" in results else ""))
    frames = len(results["valid"])
    fps = frame_rate(results["pts_seconds"])
    has_tubes = "tube_face" in results
    tubes = summarize_tubes(results, str(video)) if has_tubes else []
    size = int(results["crop_size"][0]) if "crop_size" in results else 112
    drop = results.get("tube_drop", np.full(results["valid"].shape, -1, np.int8))
    dropped = {DROP_REASONS[c]: int((drop == c).sum()) for c in range(1, len(DROP_REASONS)) if (drop == c).any()}
    tube_frames = sum(t["frames"] for t in tubes)
    numbers = {"frames": frames, "tubes": len(tubes), "tube_frames": tube_frames,
               "kept_fraction": round(float((drop == 0).any(1).mean()) if frames else 0.0, 4), "dropped": dropped}
    title = f"{video.name or results_path.name}: faces"
    body = [f"<h1>{html.escape(title)}</h1>",
            f'<p>{frames} frames ({frames / fps:.1f} s at {fps:.3g} fps) from <code>{html.escape(str(video))}</code>; '
            f"results <code>{html.escape(str(results_path))}</code>. {len(tubes)} tubes, {tube_frames} tube frames; "
            f"{numbers['kept_fraction']:.0%} of frames have a face in a tube.</p>", _timeline(results, tubes, fps)]
    if dropped:
        body.append("<h2>Dropped faces</h2><table><tr><th>why</th><th>faces (frame x face)</th></tr>"
                    + "".join(f"<tr><td>{html.escape(k)}</td><td>{v}</td></tr>" for k, v in dropped.items())
                    + "</table>")
    if not has_tubes:
        body.append('<p class="muted">This results file holds no tubes (a bundle without crops, or a file from before '
                    "tubes).</p>")
    sheets = _sheets(video, results, tubes, size) if tubes and video.is_file() else {}
    if tubes and not video.is_file():
        body.append(f'<p class="muted">The video {html.escape(str(video))} is not there: no contact sheets.</p>')
    if tubes:
        body.append("<h2>Tubes</h2>")
    for t, tube in enumerate(tubes):
        mask = results["tube_idx"] == t
        frame_of = np.nonzero(mask)[0]
        seconds = frame_of / fps
        series = lambda name, colour: (name, seconds, results[name][mask].astype(np.float64), colour)  # noqa: E731
        med = ", ".join(f"{k} {v:.3g}" for k, v in tube["median"].items() if v is not None)
        body.append(f'<div class="tube"><b style="color:{_color(tube["face_idx"])}">{html.escape(tube["id"])}</b> '
                    f"frames {tube['start']}-{tube['stop'] - 1} ({tube['start_s']:.2f}-{tube['stop_s']:.2f} s, "
                    f"{tube['frames']} frames, face found in {tube['detected']}); medians: {html.escape(med)}")
        if t in sheets:
            body.append(f'<img class="sheet" alt="crops of {html.escape(tube["id"])}" src="{sheets[t]}">')
        x_range = (tube["start"] / fps, tube["stop"] / fps)
        body.append('<div style="display:flex;gap:12px;flex-wrap:wrap">'
                    + _plot([series("sharpness", "#377eb8")], x_range, "sharpness over time")
                    + _plot([series("face_size", "#4daf4a")], x_range, "face size (px) over time")
                    + _plot([("|yaw|", seconds, np.abs(results["yaw"][mask]), "#e41a1c"),
                             ("|pitch|", seconds, np.abs(results["pitch"][mask]), "#984ea3")], x_range,
                            "|yaw| (red), |pitch| (purple), degrees") + "</div></div>")
    return _page(title, "\n".join(body)), numbers


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_report(results_path: Path, output: Path | None = None, video: Path | None = None) -> Path:
    """Write the page of one results file (``talk.npz`` -> ``talk.report.html`` unless ``output``)."""
    results_path = Path(results_path)
    output = Path(output) if output else results_path.with_suffix(".report.html")
    page, _ = video_report(results_path, video)
    _write(output, page)
    return output


def write_dataset_report(out_dir: Path, manifest_rows: list[dict], output: Path | None = None) -> Path:
    """Write ``<out_dir>/report/index.html`` and a page per done video beside it; the index lists totals
    and every video, the worst first (failed, then the smallest share of frames in tubes)."""
    folder = Path(output) if output else Path(out_dir) / "report"
    folder.mkdir(parents=True, exist_ok=True)
    listed = []
    for i, row in enumerate(manifest_rows):
        if row.get("status") != "done":
            listed.append((-1.0, row, None, None))
            continue
        page, numbers = video_report(Path(row["output"]), Path(row["video"]))
        name = f"{i:05d}_{Path(row['video']).stem}.html"
        _write(folder / name, page)
        listed.append((numbers["kept_fraction"], row, numbers, name))
    listed.sort(key=lambda item: item[0])
    done = [n for _, _, n, _ in listed if n]
    totals = (f"{len(manifest_rows)} videos ({len(done)} done, {len(manifest_rows) - len(done)} failed); "
              f"{sum(n['frames'] for n in done)} frames; {sum(n['tubes'] for n in done)} tubes, "
              f"{sum(n['tube_frames'] for n in done)} tube frames")
    rows = []
    for fraction, row, numbers, name in listed:
        video = html.escape(Path(row["video"]).name)
        if numbers is None:
            rows.append(f"<tr><td>{video}</td><td colspan=4>failed: {html.escape(str(row.get('error')))}</td></tr>")
            continue
        dropped = ", ".join(f"{k} {v}" for k, v in numbers["dropped"].items()) or "none"
        rows.append(f'<tr><td><a href="{name}">{video}</a></td><td>{numbers["frames"]}</td><td>{numbers["tubes"]}</td>'
                    f"<td>{fraction:.0%}</td><td>{html.escape(dropped)}</td></tr>")
    body = (f"<h1>Dataset report: {html.escape(str(out_dir))}</h1><p>{totals}</p>"
            "<table><tr><th>video (worst first)</th><th>frames</th><th>tubes</th><th>frames in tubes</th>"
            f"<th>dropped faces</th></tr>{''.join(rows)}</table>")
    index = folder / "index.html"
    _write(index, _page("facecrop dataset report", body))
    return index
