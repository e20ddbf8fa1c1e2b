"""Benchmark: peak memory of 3D training when the data set is larger than the cache.

    python benchmarks/bench_volume_memory.py [--cases 48] [--shape 128 128 64]

Generates a Decathlon-layout data set of synthetic volumes, then trains one epoch on it with
``medic train`` three ways, side by side in one run:

    cache_rate 1.0   every preprocessed volume in memory (the default)
    cache_rate 0.2   a fifth in memory, the rest read lazily by the loader workers
    cache_dir        preprocessed volumes on disk (MONAI's PersistentDataset), none in memory

and reports the peak resident memory (VmHWM) of every process of each run — the trainer and its
``--num_workers`` loader processes — polled from /proc while it runs, next to the size of the data
set and of the cache.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import PY, child_env, table  # noqa: E402

MB = 2**20


def make_data(root: Path, cases: int, shape: tuple[int, ...]) -> int:
    """A Decathlon task of ``cases`` volumes; returns the preprocessed size in bytes (float32)."""
    import nibabel as nib
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    affine = np.diag([1.0, 1.0, 2.0, 1.0])
    grid = np.indices(shape, dtype=np.float32)
    training = []
    for i in range(cases):
        rs = np.random.RandomState(i)
        label = np.zeros(shape, np.uint8)
        for _ in range(3):
            centre = [rs.uniform(10, s - 10) for s in shape]
            label[sum((g - c) ** 2 for g, c in zip(grid, centre)) <= rs.uniform(4, 9) ** 2] = 1
        image = (label * 100.0 + rs.normal(40.0, 20.0, shape)).astype(np.float32)
        name = f"case_{i:03d}.nii.gz"
        nib.save(nib.Nifti1Image(image, affine), str(root / "imagesTr" / name))
        nib.save(nib.Nifti1Image(label, affine), str(root / "labelsTr" / name))
        training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
    (root / "dataset.json").write_text(json.dumps({"labels": {"0": "background", "1": "ball"},
                                                   "modality": {"0": "MRI"}, "training": training}))
    return cases * int(np.prod(shape)) * (4 + 1)  # after preprocessing: float32 images, uint8 labels


def tree(pid: int) -> list[int]:
    """``pid`` and its descendants, from /proc."""
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            kids.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo += kids.get(p, [])
    return found


def peak_kb(pid: int) -> tuple[str, int] | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:60]
    except OSError:  # the process has ended
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return cmd, int(line.split()[1])
    return None


def run(data: Path, project: Path, flags: list[str], workers: int, patch: list[int]) -> tuple[int, list[int], float]:
    """Train one epoch; the peak RSS (kB) of the trainer and of each loader worker, and the wall time."""
    project.mkdir(parents=True)
    cmd = [PY, "-m", "medic.train", "--data", str(data), "--epochs", "1", "--batch_size", "2",
           "--patch_size", *map(str, patch), "--num_workers", str(workers), "--log_interval", "1000", *flags]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=project, env=child_env(2), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    peaks: dict[int, tuple[str, int]] = {}
    while proc.poll() is None:
        for pid in tree(proc.pid):
            got = peak_kb(pid)
            if got and got[1] >= peaks.get(pid, ("", 0))[1]:
                peaks[pid] = got
        time.sleep(0.1)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {proc.stderr.read()[-2000:]}")
    others = sorted((kb for pid, (_, kb) in peaks.items() if pid != proc.pid), reverse=True)
    return peaks[proc.pid][1], others, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=48)
    parser.add_argument("--shape", type=int, nargs=3, default=(128, 128, 64))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--patch", type=int, nargs=3, default=(64, 64, 32))
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="medic-volmem-") as tmp:
        tmp = Path(tmp)
        size = make_data(tmp / "data", args.cases, tuple(args.shape))
        modes = [("cache_rate 1.0", ["--cache_rate", "1.0"], size),
                 ("cache_rate 0.2", ["--cache_rate", "0.2"], int(size * 0.2)),
                 ("cache_dir", ["--cache_dir", str(tmp / "cache")], 0)]
        rows, result = [], {"data_mb": round(size / MB, 1), "cases": args.cases, "shape": list(args.shape), "modes": {}}
        for k, (name, flags, cached) in enumerate(modes):
            trainer, workers, wall = run(tmp / "data", tmp / f"p{k}", flags, args.workers, args.patch)
            result["modes"][name] = {"cache_mb": round(cached / MB, 1), "trainer_peak_mb": round(trainer / 1024, 1),
                                     "worker_peaks_mb": [round(kb / 1024, 1) for kb in workers], "wall_s": round(wall, 1)}
            rows.append([name, f"{size / MB:.0f}", f"{cached / MB:.0f}", f"{trainer / 1024:.0f}",
                         " / ".join(f"{kb / 1024:.0f}" for kb in workers), f"{wall:.0f}"])
    print(f"data set: {args.cases} volumes of {' x '.join(map(str, args.shape))}, 1 process, "
          f"{args.workers} loader workers, 1 epoch\n")
    print(table(["mode", "data MB", "cache MB", "trainer peak RSS MB", "worker peak RSS MB", "wall s"], rows))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
