"""Step-time, FLOP and memory benchmark of train steps (by default DTP against BP).

    python -m jdtp.benchmark --configs=lenet,vgg --repeats=5 --out=results/benchmark.json
    python -m jdtp.benchmark --configs=lenet --batch_size=lenet=100 [--algos=dtp,bp]
    python -m jdtp.benchmark --configs=vgg --set=dtp.fb_chunk_mib=1024 \
        --variant=dtp_concurrent:dtp.feedback_mode=concurrent

For each experiment config (``configs/lenet_cifar10.py`` as ``lenet``,
``configs/vgg_cifar10.py`` as ``vgg``, or any config file) it builds the real
network and hyperparameters, feeds random inputs of the real shapes to the jitted
steps of each algorithm in ``--algos`` (the experiment's own, or another on the same
network: ``jdtp.algorithms.switch``) and of each ``--variant`` (the first algorithm with
other values), and records (after compilation and one warm-up step) their median step
times, interleaved so that machine noise hits all alike, with what each algorithm
records about its step (``Algorithm.benchmark_record``: settings and analytic FLOPs). In the same run it
measures the machine's speed on a large matrix product and on the network's
largest convolution, so every time can be read as a fraction of peak.

FLOPs come from two sources, both recorded:

* ``flops_xla``: XLA's ``compiled.cost_analysis()`` of the whole step. XLA's
  HLO cost analysis counts the body of a ``while`` loop (our ``lax.scan`` over
  the K L-DRL iterations) only once, so for DTP it undercounts by about K.
* ``flops_analytic``: the matrix products and convolutions of the algorithm
  as jdtp computes it (elementwise work left out, a few percent at most). The
  ratios and GFLOP/s use this count.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import sys
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import app, flags, logging

from jdtp import algorithms, config_base, datasets, environment, train
from jdtp import blocks as blk
from jdtp import conv as convs
from jdtp import networks as nets

# Benchmark names and the experiment configs they time (their networks, hyperparameters and batch
# sizes; ``--batch_size`` overrides the batch). Any config file path works as a name too.
CONFIGS = {"lenet": "lenet_cifar10.py", "vgg": "vgg_cifar10.py"}


def config_path(name: str) -> str:
    if name in CONFIGS:
        return os.path.join(os.path.dirname(__file__), "..", "configs", CONFIGS[name])
    return name


def load_config(name: str, overrides: dict | None = None) -> ml_collections.ConfigDict:
    """The DTP config behind a benchmark name, on synthetic data of the experiment's shapes."""
    c = config_base.load_config_file(config_path(name))
    info = datasets.get_info(c.data.name, c.data)
    c.data.synthetic_shape = tuple(info.shape)
    c.data.synthetic_num_classes = info.num_classes
    c.data.name = "synthetic"
    for dotted, value in (overrides or {}).items():
        config_base.set_dotted(c, dotted, value)
    return c


def _xla_flops(compiled) -> float | None:
    try:
        cost = compiled.cost_analysis()
    except Exception:  # noqa: BLE001 - not every backend implements it
        return None
    if isinstance(cost, list | tuple):
        cost = cost[0] if cost else None
    if not cost or "flops" not in cost:
        return None
    return float(cost["flops"])


def _memory_analysis(compiled) -> dict | None:
    try:
        mem = compiled.memory_analysis()
    except Exception:  # noqa: BLE001
        return None
    if mem is None:
        return None
    fields = ("temp_size_in_bytes", "argument_size_in_bytes", "output_size_in_bytes", "alias_size_in_bytes")
    return {f: int(getattr(mem, f)) for f in fields if hasattr(mem, f)}


# ---------------------------------------------------------------------------
# Peak measurements.


def _time_fn(fn, args, repeats: int) -> float:
    """Median wall time of ``fn(*args)`` after one warm-up call."""
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def matmul_peak(n: int = 2048, repeats: int = 5) -> dict:
    """GFLOP/s of one ``n × n × n`` float32 matrix product."""
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
    seconds = _time_fn(jax.jit(jnp.matmul), (a, b), repeats)
    return {"shape": [n, n, n], "seconds": seconds, "gflops": 2 * n**3 / seconds / 1e9}


def largest_conv(net: nets.Network) -> blk.ConvBlock | None:
    convs = [b for b in net.blocks if isinstance(b, blk.ConvBlock)]  # the peak is measured for convs only
    return max(convs, key=lambda b: b.linear_flops(1)) if convs else None


def conv_peak(block: blk.ConvBlock, batch: int, impl: str, repeats: int = 5) -> dict:
    """GFLOP/s of ``block``'s forward convolution (no bias/activation/pool) with ``impl``."""
    x = jax.random.normal(jax.random.key(0), (batch, *block.in_shape), jnp.float32)
    k, cin = block.kernel_size, block.in_shape[2]
    w = jax.random.normal(jax.random.key(1), (k, k, cin, block.features), jnp.float32)
    fn = jax.jit(lambda x, w: convs.conv(x, w, block.stride, block.padding, impl))
    seconds = _time_fn(fn, (x, w), repeats)
    flops = block.linear_flops(batch)
    return {
        "block": block.name,
        "impl": impl,
        "flops": flops,
        "seconds": seconds,
        "gflops": flops / seconds / 1e9,
    }


# ---------------------------------------------------------------------------
# Train-step benchmark.


def _rss_mib() -> float:
    """Peak resident set size of this process so far (Linux reports KiB, macOS bytes)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (2**20 if sys.platform == "darwin" else 2**10)


def _device_memory() -> dict | None:
    try:
        stats = jax.devices()[0].memory_stats()
    except Exception:  # noqa: BLE001
        return None
    if not stats:
        return None
    keep = ("peak_bytes_in_use", "bytes_in_use", "bytes_limit")
    return {k: int(v) for k, v in stats.items() if k in keep}


def _configs(config: ml_collections.ConfigDict, algos, variants) -> dict[str, ml_collections.ConfigDict]:
    """``{label: config}``: each algorithm of ``algos`` on the experiment's network, then each variant."""
    out = {}
    for name in algos:
        c = ml_collections.ConfigDict(config.to_dict())
        if name != c.algorithm:
            algorithms.switch(c, name)
        out[name] = c
    for label, overrides in variants:
        c = ml_collections.ConfigDict(out[algos[0]].to_dict())
        for dotted, value in overrides.items():
            config_base.set_dotted(c, dotted, value)
        out[label] = c
    return out


def _algorithm(config: ml_collections.ConfigDict):
    """The config's algorithm on its network, checked as a run checks it (``jdtp.train.setup``)."""
    return train.setup(config).algo.bind(390)


def benchmark_config(
    name: str,
    config: ml_collections.ConfigDict,
    repeats: int = 5,
    measure_peaks: bool = True,
    seed: int = 0,
    matmul_n: int = 2048,
    algos: Sequence[str] = ("dtp", "bp"),
    variants: Sequence[tuple[str, dict]] = (),
) -> dict:
    """Compile and time one train step per algorithm and variant of ``config``; see the module docstring.

    Args:
      algos: algorithm names; the first two give the ratios ``time_ratio_A_B`` and ``flop_ratio_A_B``.
      variants: ``(label, {dotted key: value})``: the first algorithm again with these values.
    """
    b = int(config.data.batch_size)
    key = jax.random.key(seed)
    runs, algos_by_label = {}, {}
    for label, c in _configs(config, list(algos), variants).items():
        algo = algos_by_label[label] = _algorithm(c)
        net = algo.net
        images = jax.random.normal(jax.random.fold_in(key, 1), (b, *net.input_shape), jnp.float32)
        labels = jax.random.randint(jax.random.fold_in(key, 2), (b,), 0, net.num_classes)
        batch = {"image": images, "label": labels}
        state = algo.init_state(jax.random.fold_in(key, 3))
        step = algorithms.make_train_steps(algo)[algo.phases[0]]
        t0 = time.perf_counter()
        compiled = step.lower(state, batch, key).compile()
        compile_s = time.perf_counter() - t0
        state, metrics = compiled(state, batch, jax.random.fold_in(key, 100))  # warm-up
        jax.block_until_ready((state, metrics))
        runs[label] = {
            "compiled": compiled,
            "state": state,
            "compile_s": compile_s,
            "times": [],
            "batch": batch,
        }

    # Interleaved, so that load from other jobs affects every algorithm alike.
    for r in range(repeats):
        for label, run in runs.items():
            t0 = time.perf_counter()
            run["state"], metrics = run["compiled"](run["state"], run["batch"], jax.random.fold_in(key, r))
            jax.block_until_ready((run["state"], metrics))
            run["times"].append(time.perf_counter() - t0)
            if not all(bool(jnp.all(jnp.isfinite(v))) for v in jax.tree.leaves(metrics)):
                raise FloatingPointError(f"{name} {label}: non-finite metrics {metrics}")

    net = algos_by_label[algos[0]].net
    out: dict[str, Any] = {
        "config": name,
        "config_file": config_path(name),
        "arch": net.name,
        "batch_size": b,
        "input_shape": list(net.input_shape),
        "conv_impls": sorted({getattr(x, "conv_impl", "") for x in net.blocks} - {""}),
        "repeats": repeats,
        "labels": list(runs),
    }
    for label, run in runs.items():
        t = statistics.median(run["times"])
        record = algos_by_label[label].benchmark_record(b)
        flops = record.get("flops_analytic")
        out[label] = {
            "algorithm": algos_by_label[label].name,
            "compile_s": run["compile_s"],
            "step_s_median": t,
            "step_s_all": run["times"],
            "images_per_s": b / t,
            "flops_xla": _xla_flops(run["compiled"]),
            "gflops_achieved": None if flops is None else flops / t / 1e9,
            "memory_analysis": _memory_analysis(run["compiled"]),
            **record,
        }
    if len(algos) >= 2:
        first, second = out[algos[0]], out[algos[1]]
        pair = f"{algos[0]}_{algos[1]}"
        out[f"time_ratio_{pair}"] = first["step_s_median"] / second["step_s_median"]
        if first.get("flops_analytic") and second.get("flops_analytic"):
            out[f"flop_ratio_{pair}"] = first["flops_analytic"] / second["flops_analytic"]
            out["time_ratio_over_flop_ratio"] = out[f"time_ratio_{pair}"] / out[f"flop_ratio_{pair}"]
    out["host_peak_rss_mib"] = _rss_mib()
    out["device_memory"] = _device_memory()

    if measure_peaks:
        blk = largest_conv(net)
        peaks: dict[str, Any] = {"matmul": matmul_peak(matmul_n, max(repeats, 3))}
        achieved = {label: out[label]["gflops_achieved"] for label in runs}
        if blk is not None:
            # The forward convolution of each implementation ('mixed' runs XLA's).
            fwd_impl = "xla" if blk.conv_impl == "mixed" else blk.conv_impl
            peaks["largest_conv"] = {i: conv_peak(blk, b, i, max(repeats, 3)) for i in ("im2col", "xla")}
            peaks["largest_conv_jdtp"] = fwd_impl
            conv_gflops = peaks["largest_conv"][fwd_impl]["gflops"]
            for label, g in achieved.items():
                if g is not None:
                    out[f"{label}_fraction_of_conv_peak"] = g / conv_gflops
        for label, g in achieved.items():
            if g is not None:
                out[f"{label}_fraction_of_matmul_peak"] = g / peaks["matmul"]["gflops"]
        out["peaks"] = peaks
    return out


def summary_line(r: dict) -> str:
    """One line per config: each label's step time (images/s, GFLOP/s) and the first pair's ratios."""
    parts = []
    for label in r["labels"]:
        d = r[label]
        g = "" if d["gflops_achieved"] is None else f", {d['gflops_achieved']:.1f} GFLOP/s"
        parts.append(
            f"{label} {d['step_s_median']:.3f} s ({d['images_per_s']:.1f} img/s{g}, compile {d['compile_s']:.1f} s)"
        )
    ratios = [f"{k} {v:.2f}" for k, v in r.items() if k.startswith(("time_ratio", "flop_ratio"))]
    return f"{r['config']} B={r['batch_size']}: " + " | ".join(parts + ratios)


def run(
    configs=("lenet", "vgg"),
    repeats: int = 5,
    batch_sizes: dict | None = None,
    out: str | None = None,
    overrides: dict | None = None,
    matmul_n: int = 2048,
    algos: Sequence[str] = ("dtp", "bp"),
    variants: Sequence[tuple[str, dict]] = (),
) -> dict:
    """Benchmark each named config and optionally write JSON to ``out``.

    Args:
      configs: benchmark names (:data:`CONFIGS`) or config file paths.
      repeats: timed steps per algorithm.
      batch_sizes: ``{name: batch}`` overrides.
      out: JSON path.
      overrides: dotted config keys applied to every config (e.g. ``{'dtp.unroll': 2}``).
      matmul_n: size of the matmul peak measurement.
      algos, variants: as :func:`benchmark_config`.
    """
    env = {**environment.describe(), "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    results = {"environment": env, "results": []}
    for name in configs:
        config = load_config(name, overrides)
        if batch_sizes and name in batch_sizes:
            config.data.batch_size = int(batch_sizes[name])
        with jax.default_matmul_precision(config.matmul_precision):
            r = benchmark_config(name, config, repeats, matmul_n=matmul_n, algos=algos, variants=variants)
        logging.info("%s", summary_line(r))
        peaks = r.get("peaks", {})
        if peaks:
            conv = ", ".join(f"{i} {p['gflops']:.1f}" for i, p in peaks.get("largest_conv", {}).items())
            logging.info(
                "       peaks GFLOP/s: matmul %d^3 %.1f; %s", matmul_n, peaks["matmul"]["gflops"], conv
            )
        results["results"].append(r)
    if out:
        os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
        with open(out, "w") as f:
            json.dump(results, f, indent=2, default=_json_default)
    return results


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o)}")


def _parse_batch_sizes(values, configs) -> dict:
    """``['100']`` applies to every config; ``['lenet=100', 'vgg=64']`` per config."""
    out = {}
    for v in values or ():
        if "=" in v:
            name, size = v.split("=", 1)
            out[name] = int(size)
        else:
            out.update({c: int(v) for c in configs})
    return out


def _parse_variants(items: Sequence[str]) -> list[tuple[str, dict]]:
    """``['dtp_concurrent:dtp.feedback_mode=concurrent;dtp.unroll=2']`` -> ``[(label, overrides)]``."""
    out = []
    for item in items:
        label, sep, rest = item.partition(":")
        config_base.cc.check(
            bool(sep and label and rest),
            f"--variant={item!r}: expected LABEL:KEY=VALUE[;KEY=VALUE...], e.g. "
            "dtp_concurrent:dtp.feedback_mode=concurrent",
        )
        out.append((label, config_base.parse_assignments(rest.split(";"), "--variant")))
    return out


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    f = flags.FLAGS
    configs = [c for c in f.configs if c]
    overrides = {"model.conv_impl": f.conv_impl, **config_base.parse_assignments(f.set)}
    run(
        configs,
        f.repeats,
        _parse_batch_sizes(f.batch_size, configs),
        f.out,
        overrides,
        algos=tuple(f.algos),
        variants=_parse_variants(f.variant),
    )


def _define_flags():
    flags.DEFINE_list(
        "configs",
        ["lenet", "vgg"],
        f"Benchmark names {sorted(CONFIGS)} (configs/{{...}}) or config file paths.",
    )
    flags.DEFINE_list("algos", ["dtp", "bp"], "Algorithms to time; the first two give the ratios.")
    flags.DEFINE_integer("repeats", 5, "Timed steps per algorithm (median reported).")
    flags.DEFINE_list("batch_size", [], "Batch size for all configs (N) or per config (name=N,...).")
    flags.DEFINE_string(
        "conv_impl",
        "auto",
        "model.conv_impl: 'auto' (mixed on CPU, xla elsewhere), 'xla', 'im2col' or 'mixed'.",
    )
    flags.DEFINE_multi_string(
        "set", [], "KEY=VALUE config override for every run, e.g. dtp.fb_chunk_mib=1024."
    )
    flags.DEFINE_multi_string(
        "variant",
        [],
        "LABEL:KEY=VALUE[;KEY=VALUE...]: also time the first algorithm with these values, e.g. "
        "dtp_concurrent:dtp.feedback_mode=concurrent.",
    )
    flags.DEFINE_string("out", "results/benchmark.json", "Where to write the JSON results.")


if __name__ == "__main__":
    _define_flags()
    app.run(main)
