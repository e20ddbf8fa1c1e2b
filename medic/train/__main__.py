"""``python -m medic.train`` (and ``torchrun ... -m medic.train``): see ``medic.train.launch.roles``."""

from medic.train.launch.roles import end_process, main

end_process(main)
