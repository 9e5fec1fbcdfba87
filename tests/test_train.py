import textwrap

import numpy as np
import pandas as pd
import pytest
import torch

from emolib.models.cnn import EmotionCNN, count_parameters
from emolib.models.train import TrainConfig, config_from_dict, load_trained, train_model
from emolib.testing import kill_when


def test_parameter_count_equals_the_original():
    # the original Bigger3DCNN for 5 classes at 80 x 80 x 35 has 424,549 parameters
    assert count_parameters(EmotionCNN(n_classes=5, in_shape=(80, 80, 35))) == 424_549
    model = EmotionCNN()
    names = [n for n, _ in model.named_children()]
    assert names[:5] == ["conv1", "block1", "block2", "block3", "block4"]
    assert {"pool", "fc"} <= set(names)
    assert model(torch.zeros(2, 1, 16, 16, 8)).shape == (2, 5)


def toy_data(seed=0, n=48, shape=(12, 12, 8), n_classes=3):
    """Volumes whose class lights up one corner: learnable in a few epochs."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % n_classes
    x = rng.normal(size=(n, *shape)).astype(np.float32)
    for c in range(n_classes):
        x[y == c, 4 * c:4 * c + 4, :4, :4] += 1.5
    return x, y


CFG = TrainConfig(epochs=4, batch_size=8, t_max=4, patience=10, seed=3)


def test_same_parameters_same_numbers_twice():
    x, y = toy_data()
    a = train_model(x[:36], y[:36], x[36:], y[36:], 3, CFG, progress=False)
    b = train_model(x[:36], y[:36], x[36:], y[36:], 3, CFG, progress=False)
    pd.testing.assert_frame_equal(a.history.drop(columns="seconds"),
                                  b.history.drop(columns="seconds"))
    for (k, va), vb in zip(a.model.state_dict().items(), b.model.state_dict().values(),
                           strict=True):
        assert torch.equal(va, vb), k
    assert a.history["train_loss"].iloc[-1] < a.history["train_loss"].iloc[0]


def test_noise_augmentation_is_seeded_and_resumable(tmp_path):
    """augment_noise: the same numbers twice, other numbers than without it, and a run
    resumed from its epoch-1 checkpoint ends as the uninterrupted one."""
    x, y = toy_data()
    cfg = TrainConfig(**{**CFG.to_dict(), "augment_noise": 0.5})
    a = train_model(x[:36], y[:36], x[36:], y[36:], 3, cfg, progress=False)
    b = train_model(x[:36], y[:36], x[36:], y[36:], 3, cfg, progress=False)
    plain = train_model(x[:36], y[:36], x[36:], y[36:], 3, CFG, progress=False)
    cols = ["train_loss", "val_loss"]
    pd.testing.assert_frame_equal(a.history[cols], b.history[cols])
    assert not np.allclose(a.history["train_loss"], plain.history["train_loss"])
    short = TrainConfig(**{**cfg.to_dict(), "epochs": 2})
    train_model(x[:36], y[:36], x[36:], y[36:], 3, short, checkpoint_dir=tmp_path,
                progress=False)
    # the checkpoint records its configuration: continue it under the full one
    ck = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    ck["config"] = cfg.to_dict()
    torch.save(ck, tmp_path / "checkpoint.pt")
    resumed = train_model(x[:36], y[:36], x[36:], y[36:], 3, cfg, checkpoint_dir=tmp_path,
                          progress=False)
    assert resumed.resumed_from == 2
    pd.testing.assert_frame_equal(resumed.history[cols], a.history[cols])


def test_early_stopping_and_best_model(tmp_path):
    x, y = toy_data()
    cfg = TrainConfig(epochs=30, batch_size=8, t_max=30, patience=2, seed=0)
    res = train_model(x[:36], y[:36], x[36:], y[36:], 3, cfg, checkpoint_dir=tmp_path,
                      progress=False)
    h = res.history
    assert res.stopped_early and len(h) < 30
    assert res.best_epoch == int(h["val_acc"].idxmax())
    assert len(h) - 1 - res.best_epoch == 2  # stopped after `patience` epochs without gain
    again = load_trained(tmp_path / "best.pt")
    xt = torch.from_numpy(x[36:]).unsqueeze(1)
    with torch.no_grad():
        np.testing.assert_allclose(again(xt).numpy(), res.model.cpu()(xt).numpy(), atol=1e-6)
    assert pd.read_csv(tmp_path / "history.csv").shape[0] == len(h)


def test_resume_refuses_other_configuration(tmp_path):
    x, y = toy_data()
    train_model(x[:36], y[:36], x[36:], y[36:], 3, CFG, checkpoint_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match="another configuration"):
        train_model(x[:36], y[:36], x[36:], y[36:], 3, TrainConfig(**{**CFG.to_dict(),
                                                                      "lr": 0.01}),
                    checkpoint_dir=tmp_path, progress=False)


KILLABLE = textwrap.dedent("""
    import sys, time
    import numpy as np
    from emolib.models.train import TrainConfig, train_model
    from tests.test_train import toy_data, CFG
    x, y = toy_data()
    def slow(epoch, row):
        print(f"epoch {epoch} done", flush=True)
        time.sleep(30)  # long enough to be killed after the checkpoint of epoch 1
    train_model(x[:36], y[:36], x[36:], y[36:], 3, CFG, checkpoint_dir=sys.argv[1],
                progress=False, on_epoch_end=slow)
""")


def test_killed_run_resumes_to_the_same_result(tmp_path):
    x, y = toy_data()
    reference = train_model(x[:36], y[:36], x[36:], y[36:], 3, CFG, progress=False)
    ckpt = tmp_path / "ckpt"
    kill_when(KILLABLE, "epoch 0 done", [ckpt], timeout=120)  # SIGKILL: no clean-up at all
    assert (ckpt / "checkpoint.pt").is_file()
    resumed = train_model(x[:36], y[:36], x[36:], y[36:], 3, CFG, checkpoint_dir=ckpt,
                          progress=False)
    assert resumed.resumed_from == 1
    pd.testing.assert_frame_equal(resumed.history.drop(columns="seconds"),
                                  reference.history.drop(columns="seconds"))
    for va, vb in zip(resumed.model.state_dict().values(), reference.model.state_dict().values(),
                      strict=True):
        assert torch.equal(va, vb)


def test_config_from_dict_names_unknown_keys():
    assert config_from_dict({"epochs": 3}).epochs == 3
    with pytest.raises(ValueError, match="learning_rate"):
        config_from_dict({"learning_rate": 0.1})


class _Payload:
    """Unpickling this would create a file: what a malicious shared checkpoint could do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_crafted_pickle_checkpoint_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    bad = tmp_path / "best.pt"
    state = EmotionCNN(n_classes=2, in_shape=(8, 8, 6)).state_dict()
    torch.save({"model": state, "n_classes": 2, "in_shape": [8, 8, 6], "dropout": 0.3,
                "extra": _Payload(marker)}, bad)
    assert not marker.exists()
    with pytest.raises(ValueError, match="not a plain checkpoint"):
        load_trained(bad)
    assert not marker.exists()  # the payload never ran
    # the resume checkpoint is read the same way
    ckpt = tmp_path / "run"
    ckpt.mkdir()
    torch.save({"epoch": 0, "evil": _Payload(marker)}, ckpt / "checkpoint.pt")
    x = np.zeros((4, 8, 8, 6), np.float32)
    with pytest.raises(ValueError, match="not a plain checkpoint"):
        train_model(x, np.array([0, 1, 0, 1]), x, np.array([0, 1, 0, 1]), 2,
                    TrainConfig(epochs=1), checkpoint_dir=ckpt, progress=False)
    assert not marker.exists()
