"""The batch script of a SLURM run: plain bash that ``--dry_run`` prints and the job runs.

    #SBATCH lines       the request (nodes, GPUs, time, ...), --requeue, the output file, and
                        --signal=B:USR2@<grace>: a warning to this script alone before the limit
    the setup lines     --slurm_setup (module load ...)
    begin               medic marks the run started (node names, requeues), or ends the chain
                        as 'timeout' after --max_requeues
    srun                one task per node, each starting the node's processes (torchrun), with a
                        c10d rendezvous on the first node's address and a port from the job id
    end                 after the step: requeue the job (scontrol requeue) when the trainer
                        checkpointed for it, else record how the job ended

The USR2 trap writes a requeue request through the run's files (the trainer saves a checkpoint
at the next step and exits); a SIGTERM (scontrol requeue by an admin, preemption) reaches the
training processes directly, and under this script they treat it the same way.
"""

from __future__ import annotations

import shlex

from medic.config import TrainConfig
from medic.slurm.options import SlurmOptions

REQUEUE_ENV = "MEDIC_SLURM_REQUEUE"  # set in the job: a SIGTERM means checkpoint and requeue
BASE_PORT = 20000  # rendezvous port = BASE_PORT + job id mod 20000


def sbatch_lines(slurm: SlurmOptions, run_id: str, output: str, nproc: int) -> list[str]:
    """The ``#SBATCH`` options of the request."""
    lines = [f"--job-name=medic_{run_id}", f"--nodes={slurm.nodes}", "--ntasks-per-node=1"]
    if slurm.gpus_per_node:
        lines.append(f"--gpus-per-node={slurm.gpus_per_node}")
    if slurm.cpus_per_task:
        lines.append(f"--cpus-per-task={slurm.cpus_per_task}")
    for name in ("partition", "time", "account", "qos", "mem"):
        if getattr(slurm, name):
            lines.append(f"--{name}={getattr(slurm, name)}")
    lines += [f"--output={output}", "--open-mode=append", "--requeue",
              f"--signal=B:USR2@{slurm.requeue_grace}"]
    return lines + extra_options(slurm.slurm_args)


def extra_options(text: str) -> list[str]:
    """``--slurm_args`` as one option per line: ``--gres gpu:4 --exclusive`` gives
    ``--gres=gpu:4`` and ``--exclusive``."""
    out: list[str] = []
    for token in shlex.split(text):
        if token.startswith("-") or not out:
            out.append(token)
        else:
            out[-1] += ("=" if "=" not in out[-1] and out[-1].startswith("--") else " ") + token
    return out


def batch_script(cfg: TrainConfig, slurm: SlurmOptions, run_id: str, root: str, python: str,
                 output: str, pythonpath: str = "") -> str:
    """The whole script of ``medic train --launcher slurm``. ``cfg`` is the training config (its
    flags go to every node), ``python`` the absolute interpreter of the submitting environment,
    ``output`` SLURM's output file."""
    nproc = cfg.nproc_per_node
    q = shlex.quote
    train = " ".join(q(a) for a in cfg.to_args(include_launcher=True))
    if slurm.nodes > 1:
        rdzv = ['HEAD=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
                'HEAD_ADDR=$(scontrol show node "$HEAD" | grep -o "NodeAddr=[^ ]*" | cut -d= -f2)',
                f"PORT=$(( {BASE_PORT} + SLURM_JOB_ID % 20000 ))",
                f"RDZV=(--nnodes={slurm.nodes} --rdzv_backend=c10d --rdzv_id=$SLURM_JOB_ID "
                '--rdzv_endpoint="${HEAD_ADDR:-$HEAD}:$PORT")']
    else:
        rdzv = ["RDZV=()"]
    step = [f"srun --nodes={slurm.nodes} --ntasks-per-node=1 --kill-on-bad-exit=1 \\",
            f"    {q(python)} -m medic.train {train} $RESUME \"${{RDZV[@]}}\" &"]
    return job_script(slurm, run_id, root, python, output, rdzv + step, pythonpath,
                      f"{slurm.nodes} node(s) x {nproc} process(es); written by medic train --launcher slurm")


def job_script(slurm: SlurmOptions, run_id: str, root: str, python: str, output: str, step: list[str],
               pythonpath: str = "", what: str = "", exports: dict[str, str] | None = None) -> str:
    """A run's batch script around its ``step`` (shell lines that start the run's processes in
    the background; ``$RESUME`` holds ``--resume <run id>`` when the run continues): the
    request, the traps, the begin and end hooks. Shared by ``medic train`` and the trials of
    ``medic sweep``, so that both requeue, warn and end the same way."""
    q = shlex.quote
    hook = f"{q(python)} -m medic.slurm.batch --root {q(root)} --run {run_id}"
    env = {"MEDIC_RUN_ID": run_id, REQUEUE_ENV: "1", "PYTHONUNBUFFERED": "1", **(exports or {})}
    lines = ["#!/bin/bash", f"# medic run {run_id}: {what}"]
    lines += [f"#SBATCH {opt}" for opt in sbatch_lines(slurm, run_id, output, 0)]
    lines += ["",
              "export " + " ".join(f"{k}={q(v)}" for k, v in env.items())
              + (f" PYTHONPATH={q(pythonpath)}${{PYTHONPATH:+:$PYTHONPATH}}" if pythonpath else ""),
              f"HOOK=({hook})",
              "# the time limit is near: a checkpoint, then this script requeues the job",
              "trap '\"${HOOK[@]}\" warn' USR2",
              "# scontrol requeue, preemption: the training processes get SIGTERM themselves and checkpoint",
              "trap 'true' TERM",
              "# a job that ends before it trains (a setup line failed): the run records why",
              "trap '\"${HOOK[@]}\" end $? --early' EXIT"]
    lines += ["", "# --slurm_setup", *slurm.slurm_setup.splitlines(), ""] if slurm.slurm_setup.strip() else []
    if slurm.cpus_per_task:  # srun (SLURM 22.05+) no longer takes it from the job
        lines.append(f"export SRUN_CPUS_PER_TASK={slurm.cpus_per_task}")
    lines += [f"cd {q(root)} || exit 1",
              "# the run starts (again): its node names and requeues; --max_requeues ends the chain here",
              'RESUME=$("${HOOK[@]}" begin) || exit 0']
    lines += step
    lines += ["STEP=$!",
              "# a trapped signal ends `wait` early: wait again while the step runs",
              "while :; do",
              "    wait $STEP; CODE=$?",
              "    [ $CODE -gt 128 ] && kill -0 $STEP 2>/dev/null && continue",
              "    break",
              "done",
              "trap '' USR2 TERM",
              "trap - EXIT",
              '"${HOOK[@]}" end "$CODE"', ""]
    return "\n".join(lines)
