"""The ``medic`` subcommands, one small module each: parse, call, print (``medic.cli`` dispatches;
``medic train`` lives with the trainer in ``medic.train.launch.roles``)."""
