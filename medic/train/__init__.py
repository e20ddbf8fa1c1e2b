"""Training: the only part of medic that imports torch (and then only in the modules that need
it: ``launch/`` never does, so a mistake is reported before torch loads; tests enforce it).

    launch/     starting a run, without torch
      roles       ``python -m medic.train``: launcher or worker
      checks      checks before any worker starts; what a resume continues
      torchrun    starting torchrun and naming the rank whose error started a failure
    data/       what a run trains on
      sets        the built-in set, a plug-in's, the split and the shards (``Data``)
      folders     2D images/ and masks/ folders (checked without torch)
      layouts     Decathlon and nnU-Net layouts (read and checked without torch)
      volumes     3D volumes through MONAI's transforms and caches
      heap        what the process does with large freed buffers, while the cache fills and after
      splits      k-fold splits, nnU-Net's included
      caseinfo    the train/val case names and the data set's fingerprint in the sidecar
      monai_loader  MONAI, loaded for what a run uses while the process group forms
    outputs/    what a run leaves
      checkpoint  the checkpoint format: atomic write, safe load, RNG state
      save        checkpoints as a run trains, the sidecar's start record, the state they restore
      writer      background writers of an epoch's outputs; the best masks and picture from
                  the validation's own predictions
      best        a best epoch's files in order: every process's masks, then best_model.pth
      gate        the writers wait while the training loop runs, and work while the model validates
      casefiles   per-case tables of each validation, top-k checkpoints
      pictures    the best epoch's picture, best masks and the validation strip
      overlay     drawing masks over images (one style for every picture)
      restore     ``medic.load_model``
    loop        one rank's training, as named steps
    stopping    a rank's wish to stop: signals, the stop-request file, the heartbeat
    sync        what the ranks agree on: the stop vote, the log intervals' global losses
    validation  one validation pass over every rank's shard
    metrics     segmentation metrics independent of the number of processes
    selection   the best epoch, its EMA, top-k and early stopping
    telemetry   where an epoch's time goes
    sliding     sliding-window inference (validation and prediction)
    predict     ``medic predict``; evaluate: ``medic evaluate``
    console     what a person reads while training
    dist, models, plugins
"""
