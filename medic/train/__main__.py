"""``python -m medic.train`` (and ``torchrun ... -m medic.train``): see ``medic.train.entry``."""

from medic.train.entry import end_process, main

end_process(main)
