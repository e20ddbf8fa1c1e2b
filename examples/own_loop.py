"""A plain PyTorch training loop recorded by medic's MetricsLogger: its runs appear in `medic runs`,
`medic watch`, `medic analyze`, `medic compare` and the live monitor like `medic train`'s.

    python examples/own_loop.py --epochs 6 --lr 0.1 [--output_dir DIR] [--seconds_per_epoch 1]
"""

import argparse
import time

import torch

from medic import MetricsLogger

p = argparse.ArgumentParser()
p.add_argument("--epochs", type=int, default=6)
p.add_argument("--lr", type=float, default=0.1)
p.add_argument("--output_dir", default=".")
p.add_argument("--seconds_per_epoch", type=float, default=0.0, help="slow down, to watch it live")
args = p.parse_args()

torch.manual_seed(0)
images = torch.rand(256, 1, 16, 16)
masks = (images[:, 0] > 0.5).long()
model = torch.nn.Conv2d(1, 2, 3, padding=1)
optimizer = torch.optim.SGD(model.parameters(), lr=args.lr)

# --- the part that is medic's -----------------------------------------------------------------
with MetricsLogger(args.output_dir, log_batch_metrics=True, hparams=vars(args), epochs_planned=args.epochs) as log:
    print("run", log.run_id, flush=True)
    for epoch in range(1, args.epochs + 1):
        t0, losses = time.perf_counter(), []
        for i in range(0, len(images), 16):
            loss = torch.nn.functional.cross_entropy(model(images[i:i + 16]), masks[i:i + 16])
            optimizer.zero_grad(), loss.backward(), optimizer.step()
            losses.append(loss.item())
            log.log_batch(epoch, i // 16, losses[-1], args.lr)
        time.sleep(max(0.0, args.seconds_per_epoch - (time.perf_counter() - t0)))
        log.log_epoch(epoch, avg_loss=sum(losses) / len(losses), min_batch_loss=min(losses),
                      max_batch_loss=max(losses), learning_rate=args.lr, epoch_time=time.perf_counter() - t0)
