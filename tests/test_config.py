import os
from dataclasses import fields

import pytest

from medic.config import PATH_OPTIONS, TrainConfig, parse_args
from medic.errors import MedicError


def test_defaults_follow_the_guide():
    cfg = TrainConfig()
    assert (cfg.epochs, cfg.batch_size, cfg.lr, cfg.log_interval, cfg.save_interval) == (200, 4, 0.001, 10, 10)
    assert cfg.num_samples == 684 and cfg.num_samples // cfg.batch_size == 171
    assert cfg.lr_scheduler == "none" and cfg.monitor == "Avg_Loss" and not cfg.log_batch_metrics


def test_every_option_is_a_flag_in_both_spellings():
    for f in fields(TrainConfig):
        spellings = {f"--{f.name}", f"--{f.name.replace('_', '-')}"}
        for flag in spellings:
            if f.type == "bool":
                assert getattr(parse_args([flag])[0], f.name) is True
            elif f.metadata.get("choices"):
                value = f.metadata["choices"][-1]
                extra = ["--val_fraction", "0.2"] if f.name == "monitor" else []
                assert getattr(parse_args([flag, value, *extra])[0], f.name) == value
            elif f.metadata.get("multi"):  # several values: one space-separated string
                assert getattr(parse_args([flag, "32", "32", "16"])[0], f.name) == "32 32 16"
            elif f.type == "str":
                value = {"model": "x.y:z", "dataset": "x.y:z", "monitor": "Val_Dice_class_1",
                         "val_metrics": "dice,nsd"}.get(f.name, "abc")
                extra = ["--val_fraction", "0.2"] if f.name == "monitor" else []
                expected = os.path.abspath(value) if f.name in PATH_OPTIONS else value
                assert getattr(parse_args([flag, value, *extra])[0], f.name) == expected
    cfg, _ = parse_args(["--log-batch-metrics", "--log_interval", "5", "--batch-size", "8"])
    assert cfg.log_batch_metrics and cfg.log_interval == 5 and cfg.batch_size == 8


@pytest.mark.parametrize("argv, words", [
    (["--epochs", "0"], "epochs must be > 0"),
    (["--epochs", "-3"], "epochs must be > 0"),
    (["--batch_size", "0"], "batch_size must be > 0"),
    (["--lr", "0"], "lr must be > 0"),
    (["--lr", "-0.001"], "lr must be > 0"),
    (["--log_interval", "0"], "log_interval must be > 0"),
    (["--save_interval", "-1"], "save_interval must be > 0"),
    (["--lr_scheduler", "linear"], "invalid choice"),
    (["--monitor", "Val_Dice"], "needs validation"),
    (["--val_fraction", "1.5"], "val_fraction"),
    (["--image_size", "30"], "multiple of 16"),
    (["--model", "nocolon"], "package.module:function"),
    (["--epochs", "ten"], "invalid int value"),
    (["--bogus_flag", "1"], "unrecognized argument"),
])
def test_bad_values_are_one_clear_error(argv, words):
    with pytest.raises(MedicError, match=words):
        parse_args(argv)


def test_torchrun_rendezvous_flags_are_passed_through():
    cfg, rest = parse_args(["--epochs", "2", "--nnodes", "2", "--node_rank=1", "--rdzv_endpoint", "127.0.0.1:29400"])
    assert cfg.epochs == 2 and rest == ["--nnodes", "2", "--node_rank=1", "--rdzv_endpoint", "127.0.0.1:29400"]


def test_to_args_round_trips():
    cfg = TrainConfig(epochs=7, lr=0.01, log_batch_metrics=True, monitor="Val_Dice", val_fraction=0.2).validate()
    again, _ = parse_args(cfg.to_args())
    assert again == cfg
    full, _ = parse_args(cfg.to_args(full=True))
    assert full == cfg


def test_from_dict_is_strict():
    with pytest.raises(MedicError, match="did you mean 'epochs'"):
        TrainConfig.from_dict({"epoch": 3})
    with pytest.raises(MedicError, match="must be int"):
        TrainConfig.from_dict({"epochs": "3"})
    assert TrainConfig.from_dict({"lr": 1}).lr == 1.0


def test_paths_are_recorded_absolute_whatever_the_working_folder(tmp_path, monkeypatch):
    """The same folder typed relative or absolute is one value (no difference in medic compare),
    and a plug-in file is found from anywhere."""
    (tmp_path / "Task99_Toy").mkdir()
    monkeypatch.chdir(tmp_path)
    typed, _ = parse_args(["--data", "Task99_Toy", "--cache_dir", "cache", "--model", "nets/unet.py:build"])
    full, _ = parse_args(["--data", str(tmp_path / "Task99_Toy")])
    assert typed.data == full.data == str(tmp_path / "Task99_Toy")
    assert typed.cache_dir == str(tmp_path / "cache") and typed.model == f"{tmp_path}/nets/unet.py:build"
    assert TrainConfig.from_dict(typed.to_dict()).to_dict() == typed.to_dict()
    with pytest.raises(MedicError, match="'path/to/file.py:function'"):
        parse_args(["--model", "a:b:c"])
