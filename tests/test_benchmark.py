"""The step benchmark on tiny shapes: JSON layout, positive times, FLOP counts."""

import json

from jdtp import algorithms, benchmark
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
    assert r["batch_size"] == 4 and r["dtp"]["num_fb_iters"] == [1, 1, 1]
    assert r["config_file"].endswith("configs/lenet_cifar10.py")  # the experiment's own hyperparameters
    assert r["dtp"]["beta"] == benchmark.load_config("lenet").dtp.beta
    assert r["labels"] == ["dtp", "bp"] and r["bp"]["algorithm"] == "bp"
    for algo in ("dtp", "bp"):
        assert r[algo]["step_s_median"] > 0 and r[algo]["compile_s"] > 0
        assert r[algo]["flops_analytic"] > 0 and r[algo]["gflops_achieved"] > 0
        assert len(r[algo]["step_s_all"]) == 1
    assert r["time_ratio_dtp_bp"] > 0 and r["flop_ratio_dtp_bp"] > 1
    assert r["host_peak_rss_mib"] > 0
    assert r["peaks"]["matmul"]["gflops"] > 0
    assert set(r["peaks"]["largest_conv"]) == {"im2col", "xla"}
    assert r["dtp_fraction_of_conv_peak"] > 0


def test_a_variant_is_the_first_algorithm_with_other_values(tmp_path):
    variants = benchmark._parse_variants(["dtp_jvp:dtp.probe='jvp';dtp.unroll=2"])
    assert variants == [("dtp_jvp", {"dtp.probe": "jvp", "dtp.unroll": 2})]
    (r,) = benchmark.run(
        ["lenet"],
        repeats=1,
        batch_sizes={"lenet": 2},
        overrides=TINY,
        matmul_n=64,
        algos=("dtp",),
        variants=variants,
    )["results"]
    assert r["labels"] == ["dtp", "dtp_jvp"]
    assert (r["dtp"]["probe"], r["dtp_jvp"]["probe"]) == ("difference", "jvp")
    assert r["dtp_jvp"]["unroll"] == 2 and r["dtp_jvp"]["algorithm"] == "dtp"


def test_analytic_flops_lenet():
    net = nets.lenet(conv_impl="xla")
    m = [b.linear_flops(1) for b in net.blocks]
    assert m[0] == 2 * 32 * 32 * 25 * 3 * 32 and m[2] == 2 * 4096 * 512
    config = benchmark.load_config("lenet", {"model.conv_impl": "xla", "dtp.num_fb_iters": (2, 3, 4)})
    dtp = algorithms.create(config, net, 1).benchmark_record(1)
    assert dtp["flops_analytic_feedback"] == 4 * (2 * m[1] + 3 * m[2] + 4 * m[3])
    assert dtp["flops_analytic_feedback_hoisted"] == dtp["flops_analytic_feedback_chain"]
    assert dtp["flops_analytic"] == dtp["flops_analytic_feedback"] + 3 * sum(m) - m[0]
    algorithms.switch(config, "bp")
    assert algorithms.create(config, net, 1).benchmark_record(1)["flops_analytic"] == 3 * sum(m) - m[0]
