"""Training: the only part of medic that imports torch (and then only in the modules that need
it; the entry, the start-up checks and the torchrun launcher do not, so a mistake is reported
before torch loads).

    entry       the roles: launcher or worker (``python -m medic.train``)
    start       checks before any worker starts; what a resume continues
    torchrun    starting torchrun and naming the rank whose error started a failure
    loop        one rank's training, as named steps
    sync        what the ranks agree on: the stop vote, the log intervals' global losses
    save        checkpoints, the sidecar's start record, the best epoch's pictures
    checkpoint  the checkpoint format: atomic write, safe load, RNG state
    dist, data, imagefolder, models, plugins, console
"""
