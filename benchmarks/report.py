"""Turn the benchmark's results into a markdown report and a PNG plot."""

from __future__ import annotations

import os
import platform
from pathlib import Path

BATCH_COLUMNS = ("1", "8", "32", "128")
TARGET_RATIO = 1.5


def machine_info(device: str, threads: int) -> dict:
    """Machine, library versions, device and thread count, for the report header."""
    import onnxruntime
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    info = {"platform": platform.platform(), "cpu": cpu, "cpu_count": os.cpu_count(), "python": platform.python_version(),
            "torch": torch.__version__, "onnxruntime": onnxruntime.__version__, "device": device, "threads": threads}
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def _num(value, fmt: str = "{:.1f}") -> str:
    return "—" if value is None else fmt.format(value)


def best_bundle(rows: list[dict]) -> dict | None:
    """The fastest (decode excluded) measured row whose backend is a bundle."""
    bundles = [r for r in rows if r.get("fps") and r.get("kind") == "bundle"]
    return max(bundles, key=lambda r: r["fps"]) if bundles else None


def target_line(results: dict) -> str:
    """Whether the best facecrop bundle reaches ``TARGET_RATIO`` x the InsightFace loop on the target case."""
    rows = [r for r in results["rows"] if r["case"] == results["target_case"]]
    best = best_bundle(rows)
    if best is None or not best.get("ratio"):
        return "CPU target: not measured (no bundle backend or no InsightFace loop ran)."
    verdict = "met" if best["ratio"] >= TARGET_RATIO else "NOT met"
    return (f"Target ({results['target_case']}, decode excluded): best bundle `{best['backend']}` "
            f"{best['fps']:.1f} frames/s = {best['ratio']:.2f}x the InsightFace loop "
            f"(goal >= {TARGET_RATIO}x): **{verdict}**.")


def markdown(results: dict) -> str:
    """The whole report: header, main table, sweeps, target verdict, notes."""
    m, cuda = results["machine"], results["machine"]["device"].startswith("cuda")
    lines = [f"# facecrop benchmark ({results['mode']})", "",
             f"- machine: {m['cpu']} ({m['cpu_count']} CPUs), {m['platform']}" + (f", GPU {m['gpu']}" if cuda else ""),
             f"- torch {m['torch']}, onnxruntime {m['onnxruntime']}, python {m['python']}; "
             f"device `{m['device']}`, {m['threads']} threads",
             f"- frames: {results['video']['frames_used']} of `{results['video']['path']}` "
             f"({results['video']['size'][0]}x{results['video']['size'][1]}, 1-6 real faces per frame); "
             f"medians of {results['repeats']} repeats after warm-up", ""]
    head = ["case", "backend", "frames/s (decode excl)", "frames/s (decode incl)", "x InsightFace",
            *[f"ms/frame b{b}" for b in BATCH_COLUMNS], "warm-up s", "peak RSS MB"]
    head += ["CUDA max MB"] if cuda else []
    head += ["faces/frame", "load"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results["rows"]:
        if "error" in r:
            lines.append(f"| {r['case']} | {r['backend']} | failed: {r['error']} |" + " |" * (len(head) - 3))
            continue
        ms = r.get("ms_per_frame", {})
        cells = [r["case"], r["backend"], _num(r.get("fps")), _num(r.get("fps_decode_included")),
                 _num(r.get("ratio"), "{:.2f}x"), *[_num(ms.get(b), "{:.1f}") for b in BATCH_COLUMNS],
                 _num(r.get("warmup_s")), _num(r.get("peak_rss_mb"), "{:.0f}")]
        cells += [_num(r.get("cuda_max_allocated_mb"), "{:.0f}")] if cuda else []
        cells += [_num(r.get("faces_per_frame"), "{:.2f}"),
                  f"{_num(r.get('load_before'))}/{_num(r.get('load_after'))}"]
        lines.append("| " + " | ".join(cells) + " |")
    for title, key in (("frames/s vs faces per frame (decode excluded)", "faces"),
                       ("frames/s vs frame size (decode excluded)", "sizes")):
        sweep = results["sweeps"].get(key)
        if not sweep:
            continue
        labels = sweep["labels"]
        lines += ["", f"## {title}, {sweep['case']}", "",
                  "| backend | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
        for backend, values in sweep["fps"].items():
            lines.append(f"| {backend} | " + " | ".join(_num(values.get(label)) for label in labels) + " |")
    lines += ["", target_line(results), ""]
    lines += [f"- {note}" for note in results["notes"]]
    return "\n".join(lines) + "\n"


def plot(results: dict, path: Path) -> None:
    """Four panels: frames/s per backend, ms/frame vs batch, frames/s vs faces, frames/s vs frame size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in results["rows"] if r["case"] == results["target_case"] and "error" not in r]
    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    ax = axes[0][0]
    names = [r["backend"] for r in rows]
    xs = range(len(rows))
    ax.bar([x - 0.2 for x in xs], [r.get("fps") or 0 for r in rows], 0.4, label="decode excluded")
    ax.bar([x + 0.2 for x in xs], [r.get("fps_decode_included") or 0 for r in rows], 0.4, label="decode included")
    ax.set_xticks(list(xs), names, rotation=20)
    ax.set_ylabel("frames/s")
    ax.set_title(f"{results['target_case']}")
    ax.legend()
    ax = axes[0][1]
    for r in rows:
        ms = r.get("ms_per_frame", {})
        sizes = [int(b) for b in ms]
        if sizes:
            ax.plot(sizes, list(ms.values()), "o-", label=r["backend"])
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch size")
    ax.set_ylabel("ms/frame")
    ax.set_title("latency per frame vs batch size")
    ax.legend()
    for ax, key, xlabel in ((axes[1][0], "faces", "faces per frame"), (axes[1][1], "sizes", "frame size")):
        sweep = results["sweeps"].get(key)
        shown = ""
        if sweep:
            for backend, values in sweep["fps"].items():
                labels = [lab for lab in sweep["labels"] if values.get(lab)]
                ax.plot(labels, [values[lab] for lab in labels], "o-", label=backend)
            ax.legend()
            shown = ": " + " vs ".join(f"`{b}`" for b in sweep["fps"])
        ax.set_xlabel(xlabel)
        ax.set_ylabel("frames/s (decode excluded)")
        ax.set_title(f"frames/s vs {xlabel}{shown}")
    m = results["machine"]
    fig.suptitle(f"facecrop benchmark ({results['mode']}): {m['cpu']}, {m['threads']} threads, "
                 f"torch {m['torch']}, device {m['device']}\n{target_line(results).replace('**', '')}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
