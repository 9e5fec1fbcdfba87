"""Streamed (disk-backed, bounded-memory) layer RDMs against rsatoolbox and the in-memory path.

Small and seeded: a random-init ResNet-50 on a dozen 64 x 64 inputs, and a tiny torch model
for the generic engine's bookkeeping (resume, stale stores, disk check).
"""

from __future__ import annotations

import errno
import json
import logging
import re
import shutil
from collections import namedtuple

import numpy as np
import pytest
import torch
from PIL import Image
from rsatoolbox.data import Dataset
from rsatoolbox.rdm import calc_rdm
from torchvision.models.feature_extraction import (
    create_feature_extractor,
    get_graph_node_names,
)

from emolib import rsa
from emolib.bold5000.resnet import calc_resnet50_rdms
from emolib.errors import InputDataError
from emolib.models import extract_activations
from emolib.models.resnet import (
    CONV1_NODES,
    iter_image_batches,
    load_resnet50,
    make_image_transform,
)
from emolib.rsa.streamed import PROGRESS_FILE, STREAM_METHODS

LAYERS = ["conv1", "layer1", "layer2", "layer3", "layer4"]
N = 10
#: float16 rows: measured max relative deviation 1.4e-4 (correlation) and 2.5e-4 (euclidean)
#: on random-init ResNet-50 (float16 keeps 11 significant bits, 4.9e-4 relative per entry,
#: errors averaging over the units); 1e-3 leaves a margin of four.
F16_RTOL = 1e-3


@pytest.fixture(scope="module")
def resnet():
    return load_resnet50(None, seed=0)


@pytest.fixture(scope="module")
def inputs():
    return torch.from_numpy(np.random.default_rng(0).standard_normal((N, 3, 64, 64))).float()


@pytest.fixture(scope="module")
def acts(resnet, inputs):
    return extract_activations(resnet, inputs, LAYERS, backend="fx", batch_size=4,
                               dtype=np.float64)


def _from(x, batch=4):
    """A resumable batch source: start -> batches of x from image start on."""
    return lambda start: torch.split(x[start:], batch)


class TinyNet(torch.nn.Module):
    """Activations of rank 4 (conv), 2 (fc) and 3 (a reshaped map)."""

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.fc = torch.nn.Linear(4 * 8 * 8, 6)
        self.seq = torch.nn.Identity()

    def forward(self, x):
        c = torch.relu(self.conv(x))
        self.seq(c.reshape(c.shape[0], 4, 64))
        return self.fc(c.flatten(1))


TINY_LAYERS = ["conv", "fc", "seq"]


@pytest.fixture()
def tiny_inputs():
    return torch.from_numpy(np.random.default_rng(1).standard_normal((12, 3, 8, 8))).float()


def _tiny(tiny_inputs, store, model=None, **kw):
    kw.setdefault("backend", "hooks")
    kw.setdefault("progress", False)
    return rsa.calc_rdms_streamed(model or TinyNet(), kw.pop("batches", _from(tiny_inputs)),
                                  kw.pop("ids", [f"s{i}" for i in range(12)]), TINY_LAYERS,
                                  store_dir=store, **kw)


# ------------------------------------------------------------------ the first stage


def test_conv1_nodes_are_fx_nodes_and_differ(resnet):
    _, nodes = get_graph_node_names(resnet)
    assert set(CONV1_NODES) <= set(nodes)
    out = create_feature_extractor(resnet, {n: n for n in CONV1_NODES})(torch.zeros(1, 3, 64, 64)
                                                                         + 0.5)
    assert out["conv1"].shape == out["relu"].shape == (1, 64, 32, 32)
    assert out["maxpool"].shape == (1, 64, 16, 16)
    assert (out["conv1"] < 0).any() and not (out["relu"] < 0).any()  # before / after bn + ReLU


# ------------------------------------------------------------------ against references


@pytest.mark.parametrize("store_dtype", ["float32", "float16"])
@pytest.mark.parametrize("method", STREAM_METHODS)
def test_streamed_equals_rsatoolbox(resnet, inputs, acts, tmp_path, method, store_dtype):
    rdms = rsa.calc_rdms_streamed(resnet, _from(inputs), list(range(N)), LAYERS,
                                  store_dir=tmp_path, method=method, store_dtype=store_dtype,
                                  progress=False)
    ref = np.stack([calc_rdm(Dataset(acts[name]), method=method).dissimilarities[0]
                    for name in LAYERS])
    rtol = 1e-6 if store_dtype == "float32" else F16_RTOL
    np.testing.assert_allclose(rdms.dissimilarities, ref, rtol=rtol, atol=0)
    # the stored rows take n_images x n_units x itemsize on disk
    units = json.loads((tmp_path / PROGRESS_FILE).read_text())["units"]
    assert units == [acts[name].shape[1] for name in LAYERS]


def test_streamed_equals_calc_rdms_from_model(resnet, inputs, tmp_path):
    ids = [f"img{i:02d}" for i in range(N)]
    kw = {"rdm_descriptors": {"model": "resnet50"}}
    mem = rsa.calc_rdms_from_model(resnet, inputs, ids, LAYERS, backend="fx", batch_size=4, **kw)
    disk = rsa.calc_rdms_streamed(resnet, _from(inputs), ids, LAYERS, store_dir=tmp_path,
                                  progress=False, **kw)
    assert disk.dissimilarities.dtype == mem.dissimilarities.dtype == np.float64
    np.testing.assert_allclose(disk.dissimilarities, mem.dissimilarities, rtol=1e-6)
    assert disk.rdm_descriptors == mem.rdm_descriptors
    assert disk.pattern_descriptors == mem.pattern_descriptors
    assert disk.dissimilarity_measure == mem.dissimilarity_measure == "correlation"
    assert disk.n_rdm == 5 and disk.n_cond == N


def test_result_does_not_depend_on_the_memory_limit(resnet, inputs, tmp_path, capsys):
    big = rsa.calc_rdms_streamed(resnet, _from(inputs), list(range(N)), LAYERS,
                                 store_dir=tmp_path / "a", progress=False)
    small = rsa.calc_rdms_streamed(resnet, _from(inputs), list(range(N)), LAYERS,
                                   store_dir=tmp_path / "b", memory_limit_gb=3e-4)
    totals = [int(t) for t in re.findall(r"Gram chunks: 100%.*?\| *\d+/(\d+)",
                                         capsys.readouterr().err)]
    assert totals and totals[-1] > 3 * len(LAYERS)  # several column chunks per layer
    np.testing.assert_allclose(small.dissimilarities, big.dissimilarities, rtol=1e-12)
    with pytest.raises(ValueError, match="too small"):
        rsa.calc_rdms_streamed(resnet, _from(inputs), list(range(N)), LAYERS,
                               store_dir=tmp_path / "b", memory_limit_gb=1e-9, progress=False)


def test_activations_of_any_rank_are_flattened(tiny_inputs, tmp_path):
    model = TinyNet()
    rdms = _tiny(tiny_inputs, tmp_path, model=model, method="euclidean", dtype=np.float32)
    assert rdms.dissimilarities.dtype == np.float32
    acts = extract_activations(model, tiny_inputs, TINY_LAYERS, dtype=np.float64)
    assert [a.shape[1] for a in acts.values()] == [256, 6, 256]
    for k, name in enumerate(TINY_LAYERS):
        ref = calc_rdm(Dataset(acts[name]), method="euclidean").dissimilarities[0]
        np.testing.assert_allclose(rdms.dissimilarities[k], ref, rtol=1e-6)


# ------------------------------------------------------------------ resumable, never stale


def test_kill_and_resume_equals_an_uninterrupted_run(tiny_inputs, tmp_path, caplog):
    whole = _tiny(tiny_inputs, tmp_path / "whole")
    starts = []

    def dying(start):
        starts.append(start)
        for i, b in enumerate(torch.split(tiny_inputs[start:], 4)):
            if i == 2:
                raise RuntimeError("killed")
            yield b

    with pytest.raises(RuntimeError, match="killed"):
        _tiny(tiny_inputs, tmp_path / "run", batches=dying)
    assert json.loads((tmp_path / "run" / PROGRESS_FILE).read_text())["n_done"] == 8
    with caplog.at_level(logging.INFO, logger="emolib.rsa.streamed"):
        resumed = _tiny(tiny_inputs, tmp_path / "run", batches=_from(tiny_inputs))
    assert "resuming, 8 of 12" in caplog.text
    np.testing.assert_array_equal(resumed.dissimilarities, whole.dissimilarities)

    # an iterable source: finished batches are skipped without a forward pass
    def dying_iter():
        for i, b in enumerate(torch.split(tiny_inputs, 4)):
            if i == 1:
                raise RuntimeError("killed")
            yield b

    with pytest.raises(RuntimeError):
        _tiny(tiny_inputs, tmp_path / "iter", batches=dying_iter())
    again = _tiny(tiny_inputs, tmp_path / "iter", batches=iter(torch.split(tiny_inputs, 4)))
    np.testing.assert_array_equal(again.dissimilarities, whole.dissimilarities)

    # a finished store: neither the forward pass nor the Gram phase runs again
    def never(start):
        raise AssertionError("batches were read for a finished store")

    done = _tiny(tiny_inputs, tmp_path / "run", batches=never)
    np.testing.assert_array_equal(done.dissimilarities, whole.dissimilarities)


KILLED_STORE = """
import sys, time
import numpy as np, torch
import emolib.rsa.streamed as streamed
from tests.test_resnet_rdms import TINY_LAYERS, TinyNet

x = torch.from_numpy(np.random.default_rng(1).standard_normal((12, 3, 8, 8))).float()
where = sys.argv[2]


def batches(start):
    for i, b in enumerate(torch.split(x[start:], 4)):
        if where == "activations" and start == 0 and i == 2:  # 8 of 12 images stored
            print("killed here", flush=True)
            time.sleep(600)
        yield b


write = streamed.write_json


def write_then_die(path, state, **kw):
    write(path, state, **kw)
    if where == "rdms" and len(state.get("rdms_done", [])) == 1:  # first RDM stored
        print("killed here", flush=True)
        time.sleep(600)


streamed.write_json = write_then_die
streamed.calc_rdms_streamed(TinyNet(), batches, [f"s{i}" for i in range(12)], TINY_LAYERS,
                            store_dir=sys.argv[1], backend="hooks", progress=False)
"""


@pytest.mark.parametrize("where", ["activations", "rdms"])
def test_sigkill_and_resume_equals_an_uninterrupted_run(tiny_inputs, tmp_path, caplog, where):
    """A real SIGKILL (no exception handling, no clean-up) while activations are streamed
    or while the RDMs are computed: the rerun resumes and ends with the uninterrupted
    run's RDMs and the same store files."""
    from emolib.testing import kill_when

    whole = _tiny(tiny_inputs, tmp_path / "whole")
    store = tmp_path / "store"
    kill_when(KILLED_STORE, "killed here", [store, where])
    progress = json.loads((store / PROGRESS_FILE).read_text())
    assert progress["n_done"] == (8 if where == "activations" else 12)
    with caplog.at_level(logging.INFO, logger="emolib.rsa.streamed"):
        resumed = _tiny(tiny_inputs, store)
    if where == "activations":
        assert "resuming, 8 of 12" in caplog.text
    np.testing.assert_array_equal(resumed.dissimilarities, whole.dissimilarities)
    names = sorted(p.name for p in store.iterdir())
    assert names == sorted(p.name for p in (tmp_path / "whole").iterdir())
    for name in names:
        if name.endswith(".npy"):
            np.testing.assert_array_equal(np.load(store / name),
                                          np.load(tmp_path / "whole" / name), err_msg=name)


Change = namedtuple("Change", "what kw")


@pytest.mark.parametrize("change", [
    Change("model", {"model": TinyNet(seed=1)}),
    Change("ids", {"ids": [f"t{i}" for i in range(12)]}),
    Change("method", {"method": "euclidean"}),
    Change("store_dtype", {"store_dtype": "float16"}),
    Change("input_key", {"input_key": "other images"}),
], ids=lambda c: c.what)
def test_a_changed_job_recomputes_and_says_so(tiny_inputs, tmp_path, caplog, change):
    _tiny(tiny_inputs, tmp_path / "store")
    with caplog.at_level(logging.WARNING, logger="emolib.rsa.streamed"):
        redone = _tiny(tiny_inputs, tmp_path / "store", **change.kw)
    assert re.search(rf"different job \(.*{change.what}.*changed\)", caplog.text)
    fresh = _tiny(tiny_inputs, tmp_path / "fresh", **change.kw)
    np.testing.assert_array_equal(redone.dissimilarities, fresh.dissimilarities)
    assert redone.pattern_descriptors == fresh.pattern_descriptors


def test_bad_arguments_and_too_little_disk(tiny_inputs, tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="correlation.*euclidean"):
        _tiny(tiny_inputs, tmp_path, method="cosine")
    with pytest.raises(ValueError, match="store_dtype"):
        _tiny(tiny_inputs, tmp_path, store_dtype="int8")
    with pytest.raises(ValueError, match="12 ids"):
        _tiny(tiny_inputs, tmp_path, batches=_from(tiny_inputs[:9]))
    Usage = namedtuple("Usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda _p: Usage(10**6, 10**6 - 100, 100))
    with pytest.raises(OSError, match="GiB free") as err:
        _tiny(tiny_inputs, tmp_path / "full", resume=False)
    assert err.value.errno == errno.ENOSPC


# ------------------------------------------------------------------ images and the study


def _image_folder(tmp_path, n=8):
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(2)
    for i in range(n):
        pixels = rng.integers(0, 255, size=(64, 72, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"im{i}.jpg")
    return folder


def test_resnet50_rdms_streamed_equal_in_memory(resnet, tmp_path):
    folder = _image_folder(tmp_path)
    kw = {"weights": resnet, "image_size": 64, "batch_size": 3}
    mem = calc_resnet50_rdms(folder, **kw)
    disk = calc_resnet50_rdms(folder, store_dir=tmp_path / "store", **kw)
    assert disk.rdm_descriptors == mem.rdm_descriptors
    assert disk.rdm_descriptors["layer"] == LAYERS
    assert disk.pattern_descriptors["id"] == [f"im{i}.jpg" for i in range(8)]
    np.testing.assert_allclose(disk.dissimilarities, mem.dissimilarities, rtol=1e-6)
    # a list of files with ids; another first stage is named as the node it is
    files = sorted(folder.iterdir())[::-1]
    pool = calc_resnet50_rdms(files, ids=[f"x{i}" for i in range(8)], conv1_node="maxpool",
                              store_dir=tmp_path / "pool", **kw)
    assert pool.rdm_descriptors["layer"] == ["maxpool", *LAYERS[1:]]
    assert pool.pattern_descriptors["id"] == [f"x{i}" for i in range(8)]
    with pytest.raises(ValueError, match="conv1_node"):
        calc_resnet50_rdms(folder, conv1_node="bn1", **kw)


def test_an_unreadable_image_is_named(resnet, tmp_path):
    folder = _image_folder(tmp_path, n=3)
    (folder / "broken.jpg").write_bytes(b"not a jpeg at all")
    files = sorted(folder.iterdir())
    with pytest.raises(InputDataError, match="broken.jpg.*cannot read image"):
        list(iter_image_batches(files, make_image_transform(64), 2))
    with pytest.raises(InputDataError, match="broken.jpg"):
        calc_resnet50_rdms(folder, weights=resnet, image_size=64, store_dir=tmp_path / "s")
