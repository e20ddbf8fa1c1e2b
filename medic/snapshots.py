"""The picture saved in ``results/<id>/`` when a new best model is found: image, ground truth
and prediction for a few validation samples."""

from __future__ import annotations

from pathlib import Path


def save_predictions(path: Path, images, masks, preds, title: str) -> None:
    """``images``: N×H×W floats; ``masks``/``preds``: N×H×W class indices (numpy arrays)."""
    import matplotlib
    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    n = len(images)
    fig = Figure(figsize=(7.5, 2.5 * n), constrained_layout=True)
    axes = fig.subplots(n, 3, squeeze=False)
    for i in range(n):
        for j, (data, name, cmap) in enumerate(((images[i], "Image", "gray"),
                                                (masks[i], "Ground truth", "viridis"),
                                                (preds[i], "Prediction", "viridis"))):
            ax = axes[i][j]
            ax.imshow(data, cmap=cmap, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(name)
    fig.suptitle(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=80)
    tmp.replace(path)
