"""Benchmark: the cost per training step of medic's Lightning logger, beside Lightning's own
CSVLogger, in the same process and the same fits.

    python benchmarks/bench_lightning.py                  # 2,000 steps per fit, 5 rounds
    python benchmarks/bench_lightning.py --steps 5000 --rounds 5

Every fit trains the same tiny model (the step itself costs little, so the logger's share shows)
for the same number of steps; the variants run interleaved, round after round, and the median
time per step of each is kept (the least disturbed, as in the logger benchmark):

    no logger        logger=False, the module logs nothing (the baseline)
    self.log only    logger=False, the module logs its loss every step (Lightning's own cost of
                     self.log, which the CSVLogger needs to see a value)
    CSVLogger        the module logs its loss every step (self.log), log_every_n_steps=1: every
                     step in metrics.csv (Lightning flushes every 100 steps)
    MedicLogger      log_batch_metrics=True: every step in the batch CSV (written every 10 steps,
                     complete rows), the epoch CSV and the sidecar; the module logs nothing

The overhead is the variant's time per step minus the baseline's. On a busy machine that
difference is noisy, so the medic variant also times its callback's hooks one by one: medic's own
share of each step, batch-row writes included.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, Section, fmt, table  # noqa: E402

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def fit_seconds(variant: str, steps: int, folder: Path) -> tuple[float, float]:
    """Seconds per step of one fit (from the first step's start to the last step's end), and of
    that the seconds per step spent inside medic's callback hooks (0 for the other variants)."""
    import lightning.pytorch as pl
    import torch
    from lightning.pytorch.loggers import CSVLogger
    from torch.utils.data import DataLoader, TensorDataset

    from medic.integrations.lightning import MedicCallback, MedicLogger

    class Tiny(pl.LightningModule):
        def __init__(self, log_loss: bool):
            super().__init__()
            self.net = torch.nn.Linear(8, 1)
            self.log_loss = log_loss

        def training_step(self, batch, batch_idx):
            x, y = batch
            loss = torch.nn.functional.mse_loss(self.net(x), y)
            if self.log_loss:
                self.log("loss", loss, on_step=True, on_epoch=False)
            return loss

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    class Clock(pl.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            if batch_idx == 0:
                self.t0 = time.perf_counter()

        def on_train_end(self, trainer, module):
            self.seconds = time.perf_counter() - self.t0

    torch.manual_seed(0)
    data = TensorDataset(torch.randn(steps, 8), torch.randn(steps, 1))
    logger = {"none": False, "selflog": False, "csv": CSVLogger(str(folder), name="csv", version=0),
              "medic": MedicLogger(output_dir=str(folder), log_batch_metrics=True)}[variant]
    clock, inside = Clock(), [0.0]
    callbacks = [clock]
    if variant == "medic":  # its hooks timed one by one: medic's own share of the step, less noisy
        callback = MedicCallback()
        for hook in ("on_train_batch_start", "on_train_batch_end", "on_train_epoch_start", "on_train_epoch_end"):
            setattr(callback, hook, timed(getattr(callback, hook), inside))
        callbacks.append(callback)
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", devices=1, logger=logger, callbacks=callbacks,
                         log_every_n_steps=1, enable_progress_bar=False, enable_model_summary=False,
                         enable_checkpointing=False, num_sanity_val_steps=0)
    trainer.fit(Tiny(log_loss=variant in ("csv", "selflog")), DataLoader(data, batch_size=1))
    return clock.seconds / steps, inside[0] / steps


def timed(fn, total: list[float]):
    def wrapper(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            total[0] += time.perf_counter() - t0
    return wrapper


VARIANTS = (("none", "no logger", "-"),
            ("selflog", "no logger, self.log every step", "nothing (the module's self.log only)"),
            ("csv", "Lightning CSVLogger", "every step logged (self.log, log_every_n_steps=1); flushed every 100"),
            ("medic", "medic MedicLogger", "every step in the batch CSV (one write per 10 steps)"))


def measure(steps: int, rounds: int, work: Path) -> tuple[dict[str, list[float]], list[float]]:
    import logging
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    times: dict[str, list[float]] = {v: [] for v, _, _ in VARIANTS}
    hooks: list[float] = []
    fit_seconds("none", min(steps, 50), Path(tempfile.mkdtemp(dir=work)))  # warm-up: imports, first fit
    for _ in range(rounds):
        for variant, _, _ in VARIANTS:
            seconds, inside = fit_seconds(variant, steps, Path(tempfile.mkdtemp(dir=work)))
            times[variant].append(seconds)
            if variant == "medic":
                hooks.append(inside)
    return times, hooks


def run(mode: str = "quick", work: Path | None = None) -> Section:
    try:
        import lightning  # noqa: F401
    except ImportError as err:
        return Section("Lightning logger cost", f"_skipped: Lightning not installed ({err})_", [], {})
    steps, rounds = {"smoke": (100, 1), "quick": (2000, 5), "full": (10000, 5)}[mode]
    work = Path(tempfile.mkdtemp(prefix="bench-lightning-", dir=work))
    times, hooks = measure(steps, rounds, work)
    per_step = {v: min(t) * 1e6 for v, t in times.items()}
    hook_us = min(hooks) * 1e6
    base = per_step["none"]
    rows = [[name, policy, fmt(per_step[v], 1), "-" if v == "none" else fmt(per_step[v] - base, 1)]
            for v, name, policy in VARIANTS]
    body = (f"{steps:,} steps per fit, {rounds} round(s), variants interleaved; best (least disturbed) µs per step.\n\n"
            + table(["logger", "what is written", "µs/step", "overhead µs/step vs no logger"], rows)
            + f"\n\nInside medic's callback hooks (timed hook by hook, batch rows written included): "
              f"{fmt(hook_us, 1)} µs/step.\n")
    medic, csv = per_step["medic"] - base, per_step["csv"] - base
    summary = [[f"MedicLogger in a Lightning fit, every step recorded",
                f"{fmt(medic, 1)} µs/step overhead ({fmt(hook_us, 1)} inside its hooks); "
                f"Lightning's CSVLogger {fmt(csv, 1)} µs/step",
                "≤ CSVLogger's", "met" if medic <= csv else "not met"]]
    return Section("Lightning logger cost", body, summary, {"steps": steps, "rounds": rounds, "us_per_step": per_step,
                                                         "medic_hooks_us_per_step": hook_us})


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args(argv)
    times, hooks = measure(args.steps, args.rounds, Path(tempfile.mkdtemp(prefix="bench-lightning-")))
    base = min(times["none"])
    for v, name, _ in VARIANTS:
        t = min(times[v])
        print(f"{name:22s} {t * 1e6:8.1f} µs/step   overhead {(t - base) * 1e6:8.1f} µs/step   "
              f"rounds: {', '.join(f'{x * 1e6:.0f}' for x in times[v])}")
    print(f"inside medic's callback hooks: {min(hooks) * 1e6:.1f} µs/step "
          f"(rounds: {', '.join(f'{x * 1e6:.1f}' for x in hooks)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
