"""Regenerate the figure of docs/grids.md: `python docs/make_figures.py` (needs the [viz] extra)."""

from pathlib import Path

import torch

from grids_vla import GridSampler
from grids_vla.toy import make_batch
from grids_vla.viz import save_points_figure

OUT = Path(__file__).parent / "figures" / "init_points.png"


def main() -> None:
    OUT.parent.mkdir(exist_ok=True)
    image = make_batch(1, 4, torch.Generator().manual_seed(0))[0][0]
    panels = []
    for k, grid in [(64, (16, 16)), (16, (16, 16)), (4, (16, 16)), (1, (16, 16))]:
        with torch.no_grad():
            coords = GridSampler(8, k, grid_size=grid)(torch.randn(1, 8, *grid)).coords[0]
        panels.append((image, coords, grid, f"K={k} on a {grid[0]}x{grid[1]} grid"))
    save_points_figure(str(OUT), panels)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
