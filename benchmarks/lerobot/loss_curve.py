"""Turn a ``lerobot-train`` log into a loss-curve CSV and PNG (``step,samples,loss,grad_norm,lr,update_s``)."""

from __future__ import annotations

import argparse
import csv
import io
import os
import re
from pathlib import Path

LINE = re.compile(
    r"step:(?P<step>[\d.]+[KM]?) smpl:(?P<samples>[\d.]+[KM]?) .*?loss:(?P<loss>[-\d.e+]+) "
    r"grdn:(?P<grad_norm>[-\d.e+]+) lr:(?P<lr>[-\d.e+]+) updt_s:(?P<update_s>[\d.]+)"
)
FIELDS = ["step", "samples", "loss", "grad_norm", "lr", "update_s"]


def _number(text: str) -> float:
    scale = {"K": 1e3, "M": 1e6}.get(text[-1], 1.0)
    return float(text.rstrip("KM")) * scale


def parse(log: Path) -> list[dict[str, float]]:
    """Rows of every logged training step, in order."""
    rows = [{k: _number(v) for k, v in m.groupdict().items()} for m in LINE.finditer(log.read_text(errors="replace"))]
    if not rows:
        raise ValueError(f"no 'step:... loss:...' lines in {log}")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("log", type=Path)
    parser.add_argument("--out", type=Path, required=True, help="output stem: writes STEM.csv and STEM.png")
    args = parser.parse_args()
    rows = parse(args.log)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=FIELDS, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: (int(r[k]) if k in ("step", "samples") else r[k]) for k in FIELDS})
    csv_path = args.out.with_suffix(".csv")
    tmp = csv_path.with_name(f".{csv_path.name}.tmp")
    tmp.write_text(buf.getvalue())
    os.replace(tmp, csv_path)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([r["step"] for r in rows], [r["loss"] for r in rows], lw=1.2)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (L1 + KL)")
    ax.set_yscale("log")
    ax.set_title(args.out.name)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    png = args.out.with_suffix(".png")
    tmp_png = png.with_name(f".{png.stem}.tmp.png")
    fig.savefig(tmp_png, dpi=120)
    os.replace(tmp_png, png)
    print(f"{len(rows)} steps -> {csv_path}, {png}")


if __name__ == "__main__":
    main()
