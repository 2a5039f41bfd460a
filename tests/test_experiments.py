"""Tiny end-to-end runs of the Fig. 2, Fig. 3 and Fig. 4 tools (``jdtp.experiments``)."""

import json
import os

import numpy as np
import pytest
from helpers import CONFIG_DIR

from jdtp import config_base
from jdtp import experiments as ex
from jdtp.experiments import angles_plot, gmp, jmc


def _config(name, **overrides):
    c = config_base.load_config_file(os.path.join(CONFIG_DIR, "figures", name))
    for k, v in overrides.items():
        c[k] = v
    return c


def _png(path):
    with open(path, "rb") as f:
        return f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_jmc_tiny_run_writes_png_and_json(tmp_path):
    args = _config(
        "fig2_jmc.py", seeds=2, iterations=20, record_every=5, batch_size=8, synthetic_shape=(8, 8, 3)
    )
    result = jmc.run(args, str(tmp_path))
    assert _png(tmp_path / "jmc.png")
    with open(tmp_path / "jmc.json") as f:
        saved = json.load(f)
    assert saved["iterations"] == [0, 5, 10, 15, 20]
    assert saved["seeds"] == [123, 234]
    assert saved["budget"]["iterations"] == 20 and saved["budget"]["seeds"] == 2
    for arm in jmc.ARMS:
        entry = saved["arms"][arm]
        assert set(entry) >= {"final_angle", "final_distance", "initial_angle", "per_seed"}
        assert set(entry["final_angle"]) >= {"mean", "std", "per_seed"}
        for curve in entry["per_seed"].values():
            assert len(curve["angle"]) == len(curve["distance"]) == 5
    # Both arms start from random feedback (≈ 90°); DRL's Adam moves fast enough to drop within 20 calls.
    assert 70 < saved["arms"]["L-DRL"]["initial_angle"]["mean"] < 110
    drl_arm = saved["arms"]["DRL"]
    assert drl_arm["final_angle"]["mean"] < drl_arm["initial_angle"]["mean"] - 10
    assert result["arms"]["DRL"]["final_angle"]["mean"] == pytest.approx(drl_arm["final_angle"]["mean"])


def test_jmc_rejects_a_budget_that_is_not_a_multiple_of_record_every(tmp_path):
    with pytest.raises(ValueError, match="multiple"):
        jmc.run(_config("fig2_jmc.py", iterations=7, record_every=5), str(tmp_path))


@pytest.mark.slow
def test_gmp_tiny_run_writes_png_and_json(tmp_path):
    # ~10 conv programs to compile (pre-training per layer and mode, DTP/DDTP/BP gradients): the slowest test.
    args = _config(
        "fig3_gmp.py", seeds=1, batch_size=8, iterations=4, chunk=2, unroll=1, synthetic_shape=(8, 8, 3)
    )
    gmp.run(args, str(tmp_path))
    assert _png(tmp_path / "gmp.png")
    with open(tmp_path / "gmp.json") as f:
        saved = json.load(f)
    expected = {"DRL_random", "DRL"} | {f"{s}/{m}" for s in gmp.LDRL_SCHEMES for m in ("set", "add")}
    assert set(saved["results"]) == expected
    assert saved["layers"] == list(gmp.LAYERS)
    assert saved["budget"]["ldrl_iters"] == [4, 4, 4] and saved["budget"]["drl_iters_per_layer"] == 4
    for label, entry in saved["results"].items():
        assert set(entry["angle"]) == set(gmp.LAYERS)
        for layer in gmp.LAYERS:
            assert set(entry["angle"][layer]) >= {"mean", "std", "per_seed"}
            assert len(entry["angle"][layer]["per_seed"]) == 1
        # The output target involves no feedback weights: fc2 is aligned under every scheme.
        assert entry["angle"]["fc2"]["mean"] < 1.0, label
    sym = saved["results"]["L-DRL_sym/add"]["angle"]
    assert sym["fc1"]["mean"] < 1.0  # G^3 = F^3ᵀ of a linear block: exact JMC
    assert saved["results"]["L-DRL_random/set"]["angle"]["fc1"]["mean"] > 30
    # Unpool mode only changes G^1, i.e. only conv_0's target.
    for scheme in gmp.LDRL_SCHEMES:
        a, b = saved["results"][f"{scheme}/set"]["angle"], saved["results"][f"{scheme}/add"]["angle"]
        for layer in ("conv_1", "fc1", "fc2"):
            assert a[layer]["mean"] == pytest.approx(b[layer]["mean"], abs=1e-4)


def test_gmp_validates_per_layer_lists(tmp_path):
    with pytest.raises(ValueError, match="ldrl_sigma"):
        gmp.run(_config("fig3_gmp.py", ldrl_sigma=(0.2, 0.1)), str(tmp_path))


def _write_metrics(workdir, records):
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
        for r in records:
            f.write((r if isinstance(r, str) else json.dumps(r)) + "\n")


def test_angles_plot_reads_gmp_lines_and_writes_png_and_json(tmp_path):
    dtp_dir, bp_dir = str(tmp_path / "dtp_run"), str(tmp_path / "other")
    _write_metrics(
        dtp_dir,
        [
            {"step": 10, "epoch": 0.5, "train/loss": 2.0},  # not a GMP line
            {"step": 20, "epoch": 1.0, "gmp_angle/conv_0": 50.0, "gmp_angle/fc1": 5.0},
            "",
            {"step": 40, "epoch": 2.0, "gmp_angle/conv_0": 40.0, "gmp_angle/fc1": 4.0},
            {"step": 40, "epoch": 2.0, "gmp_angle/conv_0": 35.0, "gmp_angle/fc1": 3.5},  # resumed run
        ],
    )
    _write_metrics(bp_dir, [{"step": 5, "gmp_angle/conv_0": 70.0}, {"step": 15, "gmp_angle/conv_0": 60.0}])
    out = str(tmp_path / "figs" / "fig4.png")
    result = angles_plot.run([dtp_dir, bp_dir], out, ["DTP", "no-epoch"])
    assert _png(out)
    with open(str(tmp_path / "figs" / "fig4.json")) as f:
        saved = json.load(f)
    assert saved == json.loads(json.dumps(result))
    assert saved["layers"] == ["conv_0", "fc1"]
    dtp_run = saved["runs"]["DTP"]
    assert dtp_run["x_key"] == "epoch"
    assert dtp_run["layers"]["conv_0"] == {"x": [1.0, 2.0], "step": [20, 40], "angle": [50.0, 35.0]}
    assert dtp_run["layers"]["fc1"]["angle"] == [5.0, 3.5]
    other = saved["runs"]["no-epoch"]
    assert other["x_key"] == "step" and other["layers"]["conv_0"]["x"] == [5, 15]
    assert "fc1" not in other["layers"]


def test_angles_plot_default_labels_and_missing_workdir(tmp_path):
    run_dir = str(tmp_path / "lenet_dtp")
    _write_metrics(run_dir, [{"step": 1, "epoch": 1.0, "gmp_angle/fc2": 0.1}])
    result = angles_plot.run([run_dir], str(tmp_path / "f.png"))
    assert list(result["runs"]) == ["lenet_dtp"]
    with pytest.raises(FileNotFoundError):
        angles_plot.run([str(tmp_path / "nope")], str(tmp_path / "g.png"))


def test_stats_and_seed_lists():
    s = ex.stats([1.0, 3.0])
    assert s["mean"] == 2.0 and s["std"] == 1.0 and s["per_seed"] == [1.0, 3.0]
    assert ex.seed_list(5, 123, 111) == [123, 234, 345, 456, 567]  # Fig. 2 seeds (design §7.1)
    assert ex.seed_list(3) == [123, 124, 125]  # Fig. 3 seeds (design §7.2)
    x1, y1 = ex.single_batch("synthetic", "", 4, 7, (8, 8, 3))
    x2, _ = ex.single_batch("synthetic", "", 4, 8, (8, 8, 3))
    assert x1.shape == (4, 8, 8, 3) and y1.shape == (4,)
    assert not np.allclose(x1, x2)  # different batches across seeds
    np.testing.assert_array_equal(x1, ex.single_batch("synthetic", "", 4, 7, (8, 8, 3))[0])
