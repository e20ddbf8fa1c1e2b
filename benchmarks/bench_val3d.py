"""3D training with validation: medic against a hand-written MONAI loop doing the same work.

    python benchmarks/bench_val3d.py                     # 64x64x48 volumes, 3 alternating rounds
    python benchmarks/bench_val3d.py --size 128 128 96 --rounds 2 --epochs 4   # the larger volumes
    python benchmarks/bench_val3d.py --profile           # one medic run under cProfile

The reference is the loop a MONAI tutorial writes: the same ``CacheDataset`` preprocessing
(load, channels first, RAS, z-score on the foreground), ``RandCropByPosNegLabeld`` 2:1 with the
same flips, turns and intensity changes, the same UNet, DiceCE loss and fused Adam, and a
validation of the whole volumes with ``sliding_window_inference`` (roi = the patch, 4 windows a
batch, overlap 0.5, Gaussian) and ``DiceMetric``; it saves the best model as it improves. Both
train on a generated 12-case Decathlon set, ``--batch_size 2 --patch_size 48 48 32
--val_fraction 0.25``, one process with all cores. Runs alternate (medic, reference, medic, ...)
so that both see the same machine; each figure is the median over epochs 2-6 of a run, then over
the rounds. medic's training part is Epoch_Time_Seconds - Val_Seconds; its whole run includes
start-up and every output (CSVs, checkpoints, best masks, pictures).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import PY, Section, child_env, load_average, median, table  # noqa: E402

PATCH = (48, 48, 32)
BATCH, VAL_FRACTION, SEED, LR = 2, 0.25, 42, 1e-3


def make_set(root: Path, n: int, shape: tuple[int, int, int]) -> Path:
    """A Decathlon task of ``n`` noisy volumes with a few bright balls (label 1)."""
    import nibabel as nib
    import numpy as np
    affine = np.diag([1.5, 1.2, 2.0, 1.0])
    training = []
    for i in range(n):
        rs = np.random.RandomState(i)
        grid = np.indices(shape).astype(np.float32)
        label = np.zeros(shape, np.uint8)
        for _ in range(3):
            centre = [rs.uniform(8, s - 8) for s in shape]
            ball = sum((g - c) ** 2 for g, c in zip(grid, centre)) <= rs.uniform(4, 8) ** 2
            label[ball] = 1
        image = label * 100.0 + 40.0 + rs.normal(0, 20.0, shape).astype(np.float32)
        for folder, data in (("imagesTr", image.astype(np.float32)), ("labelsTr", label)):
            (root / folder).mkdir(parents=True, exist_ok=True)
            nib.save(nib.Nifti1Image(data, affine), str(root / folder / f"case_{i:03d}.nii.gz"))
        training.append({"image": f"./imagesTr/case_{i:03d}.nii.gz", "label": f"./labelsTr/case_{i:03d}.nii.gz"})
    (root / "dataset.json").write_text(json.dumps({"name": "Task01_Bench", "labels": {"0": "background", "1": "ball"},
                                                   "modality": {"0": "MRI"}, "numTraining": n, "training": training}))
    return root


def reference_parts(data: Path):
    """The hand-written loop's pieces: its training epoch and its validation, as functions."""
    import torch
    from monai import transforms as T
    from monai.data import CacheDataset, DataLoader, decollate_batch
    from monai.inferers import sliding_window_inference
    from monai.losses import DiceCELoss
    from monai.metrics import DiceMetric
    from monai.networks.nets import UNet

    from medic.train.data.sets import split_indices  # the same validation cases as medic's
    torch.manual_seed(SEED)
    meta = json.loads((data / "dataset.json").read_text())
    records = [{"image": str(data / r["image"]), "label": str(data / r["label"])} for r in meta["training"]]
    train_idx, val_idx = split_indices(len(records), VAL_FRACTION, SEED)
    keys = ("image", "label")
    pre = [T.LoadImaged(keys, image_only=True), T.EnsureChannelFirstd(keys),
           T.Orientationd(keys, axcodes="RAS"), T.NormalizeIntensityd("image", nonzero=True, channel_wise=True),
           T.EnsureTyped("image", dtype=torch.float32), T.EnsureTyped("label", dtype=torch.uint8)]
    aug = [T.SpatialPadd(keys, spatial_size=PATCH),
           T.RandCropByPosNegLabeld(keys, label_key="label", spatial_size=PATCH, pos=2, neg=1, num_samples=1),
           *[T.RandFlipd(keys, prob=0.5, spatial_axis=a) for a in range(3)],
           T.RandRotate90d(keys, prob=0.5, spatial_axes=(0, 1)),
           T.RandScaleIntensityd("image", factors=0.1, prob=0.5), T.RandShiftIntensityd("image", offsets=0.1, prob=0.5)]
    train_ds = CacheDataset([records[i] for i in train_idx], T.Compose(pre + aug), cache_rate=1.0, num_workers=1,
                            progress=False)
    val_ds = CacheDataset([records[i] for i in val_idx], T.Compose(pre), cache_rate=1.0, num_workers=1, progress=False)
    train_loader = DataLoader(train_ds, batch_size=BATCH, shuffle=True, num_workers=0)
    val_loader = DataLoader(val_ds, batch_size=1, num_workers=0)
    model = UNet(spatial_dims=3, in_channels=1, out_channels=2, channels=(16, 32, 64, 128), strides=(2, 2, 2),
                 num_res_units=2)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=LR, fused=True)
    dice = DiceMetric(include_background=False, reduction="mean")
    post_pred, post_label = T.AsDiscrete(argmax=True, to_onehot=2), T.AsDiscrete(to_onehot=2)

    def train_epoch() -> None:
        model.train()
        for batch in train_loader:
            # plain tensors into the model: a MetaTensor's bookkeeping on every operation is
            # the tutorial's overhead, not the work
            images, labels = batch["image"].as_tensor(), batch["label"].as_tensor().long()
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(images), labels)
            loss.backward()
            optimizer.step()

    def validate() -> float:
        model.eval()
        with torch.no_grad():
            for batch in val_loader:
                logits = sliding_window_inference(batch["image"].as_tensor(), PATCH, 4, model, overlap=0.5,
                                                  mode="gaussian")
                dice(y_pred=[post_pred(p) for p in decollate_batch(logits)],
                     y=[post_label(y) for y in decollate_batch(batch["label"].as_tensor())])
        value = dice.aggregate().item()
        dice.reset()
        return value
    return model, train_epoch, validate


def reference(data: Path, epochs: int, threads: int, out: Path) -> None:
    """The hand-written MONAI loop; writes its per-epoch training and validation seconds."""
    import torch
    torch.set_num_threads(threads)
    model, train_epoch, validate = reference_parts(data)
    best, rows = -1.0, []
    for _ in range(epochs):
        t0 = time.perf_counter()
        train_epoch()
        t1 = time.perf_counter()
        value = validate()
        if value > best:
            best = value
            torch.save(model.state_dict(), out.parent / "best_metric_model.pth")
        rows.append({"train_s": t1 - t0, "val_s": time.perf_counter() - t1})
    out.write_text(json.dumps(rows))


def medic_parts(data: Path):
    """medic's own training epoch (``loop.train_epoch``) and validation (``validation.validate``
    keeping the predictions for the best masks), on its own data pipeline, as functions."""
    import torch

    from medic.config import TrainConfig
    from medic.train import dist
    from medic.train.console import Console
    from medic.train.data.volumes import build_volume_data
    from medic.train.loop import Step, train_epoch
    from medic.train.models import build_loss, build_model, build_optimizer
    from medic.train.outputs.pictures import PICTURE_CASES
    from medic.train.outputs.writer import Predictions
    from medic.train.sliding import predictor
    from medic.train.stopping import StopFlag
    from medic.train.sync import EpochState
    from medic.train.validation import validate
    cfg = TrainConfig.from_dict({"data": str(data), "batch_size": BATCH, "patch_size": " ".join(map(str, PATCH)),
                                 "val_fraction": VAL_FRACTION, "seed": SEED, "lr": LR, "spatial_dims": "3",
                                 "num_classes": 2, "normalize": "zscore", "log_interval": 1000}, strict=False)
    device = torch.device("cpu")
    d = build_volume_data(cfg, dist.ranks(), device)
    torch.manual_seed(SEED)
    model = build_model(cfg, in_channels=1)
    step = Step(cfg, model, build_loss(), build_optimizer(model, cfg), device, None, StopFlag(), None,
                Console(enabled=False))
    epoch = [0]

    def train() -> None:
        epoch[0] += 1
        d.sampler.set_epoch(epoch[0])
        model.train()
        train_epoch(step, d.loader, EpochState(), epoch[0], 0, d.steps)

    def val() -> None:
        validate(model, d.val_loader, step.loss_fn, device, 2, ["ball"], predict=predictor(model, cfg),
                 keep=Predictions(pictures=PICTURE_CASES))
    return train, val


def parts(size: tuple[int, int, int], rounds: int, work: Path, threads: int) -> dict:
    """In one process, alternating: medic's training epoch against the reference's, medic's
    validation against the reference's; medians over the rounds (the first left out)."""
    import torch
    torch.set_num_threads(threads)
    data = work / f"data_{'x'.join(map(str, size))}"
    if not data.exists():
        make_set(data, 12, size)
    m_train, m_val = medic_parts(data)
    _, r_train, r_val = reference_parts(data)
    times: dict[str, list[float]] = {k: [] for k in ("medic_train", "reference_train", "medic_val", "reference_val")}
    fns = {"medic_train": m_train, "reference_train": r_train, "medic_val": m_val, "reference_val": r_val}
    for k in range(rounds + 1):
        for name in (list(fns) if k % 2 == 0 else list(fns)[::-1]):
            t = time.perf_counter()
            fns[name]()
            if k:
                times[name].append(time.perf_counter() - t)
    med = {k: median(v) for k, v in times.items()}
    return {"size": size, "rounds": rounds, "load": load_average(), "medians": med,
            "ratios": {"train_s": med["medic_train"] / med["reference_train"],
                       "val_s": med["medic_val"] / med["reference_val"]}}


def spawn(cmd: list[str], cwd: Path, threads: int) -> tuple[float, float]:
    """Wall seconds and the process's peak RSS in MB."""
    env = child_env(threads)
    t0 = time.perf_counter()
    with open(cwd / "console.txt", "wb") as log:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} failed; see {cwd / 'console.txt'}:\n"
                           + (cwd / "console.txt").read_text()[-2000:])
    return wall, usage.ru_maxrss / 1024


def medic_flags(data: Path, epochs: int, threads: int) -> list[str]:
    return ["--data", str(data), "--epochs", str(epochs), "--batch_size", str(BATCH), "--patch_size",
            *map(str, PATCH), "--val_fraction", str(VAL_FRACTION), "--lr", str(LR), "--seed", str(SEED),
            "--threads", str(threads), "--log_interval", "1000", "--lang", "en"]


def medic_run(data: Path, epochs: int, threads: int, work: Path, profile: Path | None = None) -> dict:
    work.mkdir(parents=True)
    head = [PY, "-m", "cProfile", "-o", str(profile), "-m", "medic.train"] if profile else [PY, "-m", "medic.train"]
    wall, rss = spawn(head + medic_flags(data, epochs, threads), work, threads)
    with open(next((work / "metrics").glob("epoch_metrics_*.csv")), newline="") as f:
        rows = list(csv.DictReader(f))
    return {"wall_s": wall, "rss_mb": rss,
            "train_s": [float(r["Epoch_Time_Seconds"]) - float(r["Val_Seconds"]) for r in rows],
            "val_s": [float(r["Val_Seconds"]) for r in rows],
            "output_s": [float(r.get("Output_Seconds") or "nan") for r in rows]}


def reference_run(data: Path, epochs: int, threads: int, work: Path) -> dict:
    work.mkdir(parents=True)
    out = work / "times.json"
    wall, rss = spawn([PY, str(Path(__file__).resolve()), "--reference", "--data", str(data), "--epochs", str(epochs),
                     "--threads", str(threads), "--out", str(out)], work, threads)
    rows = json.loads(out.read_text())
    return {"wall_s": wall, "rss_mb": rss, "train_s": [r["train_s"] for r in rows], "val_s": [r["val_s"] for r in rows]}


def compare(size: tuple[int, int, int], rounds: int, epochs: int, work: Path, threads: int, cases: int = 12) -> dict:
    """Alternating rounds; per run the median of epochs 2..epochs; the ratios medic / reference."""
    data = make_set(work / f"data_{'x'.join(map(str, size))}", cases, size)
    runs: dict[str, list[dict]] = {"medic": [], "reference": []}
    loads = []
    for k in range(rounds):
        loads.append(load_average())
        for name in (("medic", "reference") if k % 2 == 0 else ("reference", "medic")):
            fn = medic_run if name == "medic" else reference_run
            t = time.perf_counter()
            runs[name].append(fn(data, epochs, threads, work / f"{name}_{size[0]}_{k}"))
            print(f"round {k + 1}/{rounds}: {name} {time.perf_counter() - t:.1f} s (load {load_average()})",
                  file=sys.stderr, flush=True)
    loads.append(load_average())
    per = {name: {part: median(median(r[part][1:]) for r in rs) for part in ("train_s", "val_s")}
           for name, rs in runs.items()}
    for name, rs in runs.items():
        per[name]["wall_s"] = median(r["wall_s"] for r in rs)
        per[name]["rss_mb"] = max(r["rss_mb"] for r in rs)
    per["medic"]["output_s"] = median(median(r["output_s"][1:]) for r in runs["medic"])
    ratios = {part: per["medic"][part] / per["reference"][part] for part in ("train_s", "val_s", "wall_s")}
    # each round's own ratio (the two runs of a round see the same machine)
    paired = {part: [median(m[part][1:]) / median(r[part][1:]) for m, r in zip(runs["medic"], runs["reference"])]
              for part in ("train_s", "val_s")}
    return {"size": size, "rounds": rounds, "epochs": epochs, "cases": cases, "threads": threads, "loads": loads,
            "medic": per["medic"], "reference": per["reference"], "ratios": ratios, "per_round": paired,
            "runs": runs}


GOALS = {"train_s": 1 / 0.95, "val_s": 1 / 0.95, "wall_s": 1 / 0.90}
PARTS = {"train_s": "training part of an epoch", "val_s": "validation (3 volumes)", "wall_s": "whole run"}


def markdown(results: list[dict]) -> str:
    rows = []
    for r in results:
        size = "x".join(map(str, r["size"]))
        for part in ("train_s", "val_s", "wall_s"):
            rows.append([size, PARTS[part], f"{r['medic'][part]:.3f} s", f"{r['reference'][part]:.3f} s",
                         f"{r['ratios'][part]:.2f}x", f"<= {GOALS[part]:.2f}x"])
        rows.append([size, "peak memory (RSS)", f"{r['medic']['rss_mb']:.0f} MB", f"{r['reference']['rss_mb']:.0f} MB",
                     f"{r['medic']['rss_mb'] / r['reference']['rss_mb']:.2f}x", ""])
    loads = "; ".join(f"{'x'.join(map(str, r['size']))}: {', '.join(r['loads'])}" for r in results)
    return (table(["volumes", "part", "medic", "hand-written MONAI", "medic's cost", "goal"], rows)
            + f"\n\nmedic's Output_Seconds (median of epochs 2-): "
            + ", ".join(f"{r['medic']['output_s']:.3f} s" for r in results)
            + ". Each round's own ratio, training part / validation: "
            + "; ".join(f"{'x'.join(map(str, r['size']))}: "
                        + ", ".join(f"{t:.2f}x / {v:.2f}x" for t, v in zip(r["per_round"]["train_s"], r["per_round"]["val_s"]))
                        for r in results)
            + f". Load average at each round: {loads}.\n")


def run(mode: str, work: Path) -> Section:
    """The run_all.py section: the built-in size always, 128x128x96 in full mode."""
    threads = os.cpu_count() or 1
    rounds, epochs = (1, 3) if mode == "smoke" else (3, 6)
    sizes = [(64, 64, 48)] + ([(128, 128, 96)] if mode == "full" else [])
    # the large volumes: 2 rounds of 4 epochs (each run takes minutes on 2 cores), no in-process parts
    results = [compare(s, *((rounds, epochs) if s == sizes[0] else (2, 4)), work / "val3d", threads) for s in sizes]
    inproc = [parts(sizes[0], 2 if mode == "smoke" else 6, work / "val3d", threads)]
    summary = [[f"3D {'x'.join(map(str, r['size']))}: {PARTS[p]}, medic / hand-written MONAI",
                f"{r['ratios'][p]:.2f}x", f"<= {GOALS[p]:.2f}x", "ok" if r["ratios"][p] <= GOALS[p] else "MISSED"]
               for r in results for p in ("train_s", "val_s", "wall_s")]
    summary += [[f"3D {'x'.join(map(str, r['size']))}: {PARTS[p]}, one process, alternating",
                 f"{r['ratios'][p]:.2f}x", f"<= {GOALS[p]:.2f}x", "ok" if r["ratios"][p] <= GOALS[p] else "MISSED"]
                for r in inproc for p in ("train_s", "val_s")]
    return Section("3D validation against a hand-written MONAI loop", markdown(results) + parts_markdown(inproc),
                   summary, {"results": [{k: v for k, v in r.items() if k != "runs"} for r in results],
                             "parts": inproc})


def parts_markdown(results: list[dict]) -> str:
    rows = [["x".join(map(str, r["size"])), PARTS[p], f"{r['medians'][f'medic_{p[:-2]}']:.3f} s",
             f"{r['medians'][f'reference_{p[:-2]}']:.3f} s", f"{r['ratios'][p]:.2f}x", r["load"]]
            for r in results for p in ("train_s", "val_s")]
    return ("\n\nThe same parts in one process, alternating (medic's ``train_epoch`` and ``validate``, "
            "the reference's loop), medians of the rounds after the first:\n\n"
            + table(["volumes", "part", "medic", "hand-written MONAI", "medic's cost", "load after"], rows) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reference", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--data", type=Path)
    p.add_argument("--out", type=Path)
    p.add_argument("--size", type=int, nargs=3, default=[64, 64, 48])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--cases", type=int, default=12, help="cases in the generated set (a quarter validate)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--profile", action="store_true", help="one medic run under cProfile (medic.prof)")
    p.add_argument("--parts", action="store_true", help="only the in-process alternation of the parts")
    args = p.parse_args(argv)
    if args.reference:
        reference(args.data, args.epochs, args.threads, args.out)
        return 0
    work = Path(tempfile.mkdtemp(prefix="medic-val3d-"))
    if args.profile:
        data = make_set(work / "data", 12, tuple(args.size))
        prof = Path("medic.prof").resolve()
        medic_run(data, args.epochs, args.threads, work / "medic", profile=prof)
        import pstats
        pstats.Stats(str(prof)).sort_stats("cumulative").print_stats(40)
        return 0
    if args.parts:
        result = parts(tuple(args.size), args.rounds, work, args.threads)
        print(parts_markdown([result]))
        return 0
    result = compare(tuple(args.size), args.rounds, args.epochs, work, args.threads, args.cases)
    print(markdown([result]))
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
