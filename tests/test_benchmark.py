"""The step benchmark on tiny shapes: JSON layout, positive times, FLOP counts."""

import json

from jdtp import benchmark
from jdtp import networks as nets

TINY = {"model.channels": (4, 8), "model.hidden": 16, "dtp.num_fb_iters": (1, 1, 1)}


def test_benchmark_writes_self_describing_json(tmp_path):
    out = tmp_path / "bench.json"
    results = benchmark.run(
        ["lenet"], repeats=1, batch_sizes={"lenet": 4}, out=str(out), overrides=TINY, matmul_n=128
    )
    assert json.loads(out.read_text()) == json.loads(json.dumps(results))
    env = results["environment"]
    for k in ("jax_version", "backend", "device_kind", "cpu_count"):
        assert k in env
    (r,) = results["results"]
    assert r["batch_size"] == 4 and r["num_fb_iters"] == [1, 1, 1]
    assert r["config_file"].endswith("configs/lenet_cifar10.py")  # the experiment's own hyperparameters
    assert r["beta"] == benchmark.load_config("lenet").dtp.beta
    for algo in ("dtp", "bp"):
        assert r[algo]["step_s_median"] > 0 and r[algo]["compile_s"] > 0
        assert r[algo]["flops_analytic"] > 0 and r[algo]["gflops_achieved"] > 0
        assert len(r[algo]["step_s_all"]) == 1
    assert r["time_ratio_dtp_bp"] > 0 and r["flop_ratio_dtp_bp"] > 1
    assert r["host_peak_rss_mib"] > 0
    assert r["peaks"]["matmul"]["gflops"] > 0
    assert set(r["peaks"]["largest_conv"]) == {"im2col", "xla"}
    assert r["dtp_fraction_of_conv_peak"] > 0


def test_analytic_flops_lenet():
    net = nets.lenet(conv_impl="xla")
    m = [b.linear_flops(1) for b in net.blocks]
    assert m[0] == 2 * 32 * 32 * 25 * 3 * 32 and m[2] == 2 * 4096 * 512
    f = benchmark.analytic_flops(net, 1, (2, 3, 4), closed_form=True)
    assert f["dtp_feedback"] == 4 * (2 * m[1] + 3 * m[2] + 4 * m[3])
    assert f["bp"] == 3 * sum(m) - m[0]
    assert f["dtp"] == f["dtp_feedback"] + 3 * sum(m) - m[0]
