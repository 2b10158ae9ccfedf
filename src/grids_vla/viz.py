"""Draw where a reducer looked: its coordinates over the camera image (needs matplotlib, ``[viz]``)."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from .sampling import coords_to_image_fraction


def draw_points(ax: Any, image: Tensor, coords: Tensor, grid_size: tuple[int, int], align_corners: bool = True,
                **style: Any) -> None:
    """Show ``image`` (``(3, H, W)`` in [0, 1]) on a matplotlib axis with ``coords (K, 2)`` as circles.

    Coordinates are converted to image fractions first, so both coordinate conventions land on the
    right pixels.
    """
    if image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"image must be (3, H, W), got shape {tuple(image.shape)}")
    if coords.dim() != 2 or coords.shape[-1] != 2:
        raise ValueError(f"coords must be (K, 2), got shape {tuple(coords.shape)}")
    ax.imshow(image.detach().float().permute(1, 2, 0).clamp(0, 1).cpu().numpy(), extent=(0, 1, 1, 0))
    pts = coords_to_image_fraction(coords.detach().float().cpu(), grid_size, align_corners)
    kwargs = {"s": 40, "facecolors": "none", "edgecolors": "white", "linewidths": 1.5} | style
    ax.scatter(pts[:, 0], pts[:, 1], **kwargs)
    ax.set_xticks([])
    ax.set_yticks([])


def save_points_figure(path: str, panels: list[tuple[Tensor, Tensor, tuple[int, int], str]],
                       align_corners: bool = True) -> None:
    """Write a row of panels, each ``(image (3, H, W), coords (K, 2), grid_size, title)``, to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(2.6 * len(panels), 2.8), squeeze=False)
    for ax, (image, coords, grid_size, title) in zip(axes[0], panels):
        draw_points(ax, image, coords, grid_size, align_corners)
        ax.set_title(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


__all__ = ["draw_points", "save_points_figure"]
