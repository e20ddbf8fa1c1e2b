"""Run many ``medic`` commands from one interpreter start: ``python _cli_batch.py CASES OUT``.

CASES is a JSON list of argument lists. The interpreter imports medic (and torch) once; each
command then runs in a forked child process of its own, with its own stdout/stderr files and
exit code, exactly as ``python -m medic.cli ARGS`` would run it after its imports. Up to
``MEDIC_BATCH_PARALLEL`` (default 3) run at once. OUT gets a JSON list of
``{"args", "returncode", "stdout", "stderr", "seconds"}`` in the order of CASES.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
import traceback


def child(args: list[str], out: str, err: str) -> None:
    """In the forked child: point fds 1 and 2 at the files, run the command, exit with its code."""
    for fd, path in ((1, out), (2, err)):
        f = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(f, fd)
        os.close(f)
    code = 1
    try:
        from medic.cli import main
        sys.argv = ["medic", *args]
        code = main(args)
    except SystemExit as end:
        code = end.code if isinstance(end.code, int) else (0 if end.code is None else 1)
        if not isinstance(end.code, (int, type(None))):
            print(end.code, file=sys.stderr)
    except BaseException:  # noqa: BLE001 - an uncaught error is what the caller checks for
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code or 0)


def main() -> None:
    cases = json.loads(open(sys.argv[1]).read())
    import medic.cli  # noqa: F401 - the imports every command shares, paid once
    import medic.commands.train  # noqa: F401
    import medic.train.launch.roles  # noqa: F401
    import medic.train.loop  # noqa: F401 - torch and MONAI: a single-process resume loads them
    parallel = int(os.environ.get("MEDIC_BATCH_PARALLEL", "3"))
    work = tempfile.mkdtemp(prefix="medic-batch-")
    results: list[dict] = [{} for _ in cases]
    running: dict[int, tuple[int, float]] = {}
    pending = list(range(len(cases)))
    while pending or running:
        while pending and len(running) < parallel:
            i = pending.pop(0)
            out, err = os.path.join(work, f"{i}.out"), os.path.join(work, f"{i}.err")
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                child(cases[i], out, err)
            running[pid] = (i, time.monotonic())
        pid, status = os.wait()
        if pid not in running:
            continue
        i, t = running.pop(pid)
        results[i] = {"args": cases[i], "returncode": os.waitstatus_to_exitcode(status),
                      "stdout": open(os.path.join(work, f"{i}.out")).read(),
                      "stderr": open(os.path.join(work, f"{i}.err")).read(),
                      "seconds": time.monotonic() - t}
    with open(sys.argv[2], "w") as f:
        json.dump(results, f)


if __name__ == "__main__":
    main()
