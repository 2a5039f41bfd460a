"""Step-time, FLOP and memory benchmark of the DTP and BP train steps.

    python -m jdtp.benchmark --configs=lenet,vgg --repeats=5 --out=results/benchmark.json
    python -m jdtp.benchmark --configs=lenet --batch_size=lenet=100

For each experiment config (``configs/lenet_cifar10.py`` as ``lenet``,
``configs/vgg_cifar10.py`` as ``vgg``, or any config file) it builds the real
network and hyperparameters, feeds
random inputs of the real shapes to the jitted steps of ``jdtp.algorithms``, and
records (after compilation and one warm-up step) the median step time of DTP
and BP, interleaved so that machine noise hits both alike. In the same run it
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
import platform
import resource
import statistics
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from jdtp import algorithms, config_base, feedback, input_pipeline, targets
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
    info = input_pipeline.get_info(c.data.name, c.data)
    c.data.synthetic_shape = tuple(info.shape)
    c.data.synthetic_num_classes = info.num_classes
    c.data.name = "synthetic"
    for dotted, value in (overrides or {}).items():
        config_base.set_dotted(c, dotted, value)
    return c


# ---------------------------------------------------------------------------
# Analytic FLOPs.


def fb_iteration_linear_maps(closed_form: bool) -> dict[str, int]:
    """Linear maps (each of one block's FLOPs) per L-DRL iteration, as jdtp computes it.

    ``hoisted``: what does not depend on G, computed before the sequential loop
    (``feedback.LayerLoss.prepare``); ``chain``: what each sequential iteration runs.
    Closed form (``feedback.ldrl_layer_loss``): hoisted F(x+dx) and the constant weight
    gradient wg(Δ1, −2dx/B); in the chain G's map L_W(Δ2) and the weight gradient
    wg(Δ2, 2L_W(Δ2)/B): 2 + 2 (before hoisting all 4 were in the chain). Autodiff form:
    hoisted F(x+dx); in the chain G's map on both differences and their two weight gradients:
    1 + 4. Kernel gradients are counted as the direct product, whichever form computes them
    (the FFT form of 5×5 kernels needs fewer FLOPs).
    """
    return {"hoisted": 2, "chain": 2} if closed_form else {"hoisted": 1, "chain": 4}


def analytic_flops(net: nets.Network, batch: int, num_fb_iters, closed_form: bool = True) -> dict:
    """Matrix-product/convolution FLOPs of one DTP step and one BP step.

    DTP: Σ_n K_n × (maps per iteration) × M_n for the feedback phase, split into the hoisted
    part and the sequential chain (:func:`fb_iteration_linear_maps`), plus the forward
    update: forward pass (M_n each), target propagation (one G map per n ≥ 1) and the weight
    gradients (M_n each). BP: forward, weight gradients, and input gradients for every block
    but the first.
    """
    m = [b.linear_flops(batch) for b in net.blocks]
    maps = fb_iteration_linear_maps(closed_form)
    per_layer = [int(k) * m[n] for n, k in enumerate(num_fb_iters, start=1)]
    hoisted = maps["hoisted"] * sum(per_layer)
    chain = maps["chain"] * sum(per_layer)
    fwd_update = 2 * sum(m) + sum(m[1:])
    bp = 3 * sum(m) - m[0]
    return {
        "dtp": hoisted + chain + fwd_update,
        "dtp_feedback": hoisted + chain,
        "dtp_feedback_hoisted": hoisted,
        "dtp_feedback_chain": chain,
        "dtp_forward_update": fwd_update,
        "bp": bp,
    }


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


def _algorithm(config: ml_collections.ConfigDict, name: str):
    """The algorithm ``name`` (switched from the config's own if needed) on the config's network."""
    c = ml_collections.ConfigDict(config.to_dict())
    if name != c.algorithm:
        algorithms.switch(c, name)
    info = input_pipeline.get_info(c.data.name, c.data)
    net = nets.build_from_config(c.model, info.shape, info.num_classes)
    algo = algorithms.create(c, net, steps_per_epoch=390)
    return algo


def _fb_chunks(algo, state, images) -> list[int]:
    """Iterations per chunk of hoisted terms, per trainable G^n (``feedback.chunk_size``)."""
    chunks = []

    def trace(fwd_params, x):
        s, aux = targets.forward_pass(algo.net, fwd_params, x)
        for n in range(1, algo.net.num_blocks):
            layer = algo.layer_loss(n, fwd_params[n], s[n], s[n + 1], aux[n])
            chunks.append(feedback.chunk_size(layer, algo.hp.num_fb_iters[n - 1], algo.hp.fb_chunk_mib))
        return 0

    jax.eval_shape(trace, state.fwd_params, images)
    return chunks


def benchmark_config(
    name: str,
    config: ml_collections.ConfigDict,
    repeats: int = 5,
    measure_peaks: bool = True,
    seed: int = 0,
    matmul_n: int = 2048,
    concurrent: bool = False,
) -> dict:
    """Compile and time one DTP and one BP train step of ``config``; see the module docstring.

    With ``concurrent``, also the DTP step in the other feedback mode (``dtp.feedback_mode``), as
    ``dtp_concurrent`` (or ``dtp_sequential``), interleaved with the others.
    """
    b = int(config.data.batch_size)
    key = jax.random.key(seed)
    runs, algos = {}, {}
    names = ["dtp", "bp"]
    if concurrent:
        other = "sequential" if config.dtp.feedback_mode == "concurrent" else "concurrent"
        names.append(f"dtp_{other}")
    for algo_name in names:
        c = config
        if algo_name.startswith("dtp_"):
            c = ml_collections.ConfigDict(config.to_dict())
            c.dtp.feedback_mode = algo_name.split("_", 1)[1]
        algo = algos[algo_name] = _algorithm(c, algo_name.split("_")[0])
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
        runs[algo_name] = {
            "compiled": compiled,
            "state": state,
            "compile_s": compile_s,
            "times": [],
            "batch": batch,
        }

    # Interleave DTP and BP so that load from other jobs affects both alike.
    for r in range(repeats):
        for algo_name in names:
            run = runs[algo_name]
            t0 = time.perf_counter()
            run["state"], metrics = run["compiled"](run["state"], run["batch"], jax.random.fold_in(key, r))
            jax.block_until_ready((run["state"], metrics))
            run["times"].append(time.perf_counter() - t0)
            if not all(bool(jnp.all(jnp.isfinite(v))) for v in jax.tree.leaves(metrics)):
                raise FloatingPointError(f"{name} {algo_name}: non-finite metrics {metrics}")

    dtp_algo = algos["dtp"]
    net, hp = dtp_algo.net, dtp_algo.hp
    probe, unroll = dtp_algo.probe, hp.unroll
    closed_form = probe == "difference" and dtp_algo.closed_form
    flops = analytic_flops(net, b, hp.num_fb_iters, closed_form)
    out: dict[str, Any] = {
        "config": name,
        "config_file": config_path(name),
        "arch": net.name,
        "batch_size": b,
        "input_shape": list(net.input_shape),
        "num_fb_iters": list(hp.num_fb_iters),
        "noise_scale": list(hp.noise_scale),
        "fb_lr": list(hp.fb_lr),
        "beta": hp.beta,
        "probe": probe,
        "unroll": unroll,
        "ldrl_closed_form": closed_form,
        "conv_impls": sorted({getattr(x, "conv_impl", "") for x in net.blocks} - {""}),
        "repeats": repeats,
        "feedback_mode": hp.feedback_mode,
        # Sequential loop iterations of the feedback phase per step (the latency bound on devices
        # where an iteration is a few small kernels): ΣK_n sequentially, max K_n concurrently.
        "fb_loop_iterations": {"sequential": sum(hp.num_fb_iters), "concurrent": max(hp.num_fb_iters)},
        "fb_chunk_mib": hp.fb_chunk_mib,
        "fb_chunks": _fb_chunks(dtp_algo, runs["dtp"]["state"], runs["dtp"]["batch"]["image"]),
    }
    for algo_name, run in runs.items():
        t = statistics.median(run["times"])
        out[algo_name] = {
            "compile_s": run["compile_s"],
            "step_s_median": t,
            "step_s_all": run["times"],
            "images_per_s": b / t,
            "flops_analytic": flops[algo_name.split("_")[0]],
            "flops_xla": _xla_flops(run["compiled"]),
            "gflops_achieved": flops[algo_name.split("_")[0]] / t / 1e9,
            "memory_analysis": _memory_analysis(run["compiled"]),
        }
    out["dtp"]["flops_analytic_feedback"] = flops["dtp_feedback"]
    # Outside and inside the sequential L-DRL loop (the chain of dependent iterations).
    out["dtp"]["flops_analytic_feedback_hoisted"] = flops["dtp_feedback_hoisted"]
    out["dtp"]["flops_analytic_feedback_chain"] = flops["dtp_feedback_chain"]
    out["dtp"]["flops_analytic_forward_update"] = flops["dtp_forward_update"]
    out["time_ratio_dtp_bp"] = out["dtp"]["step_s_median"] / out["bp"]["step_s_median"]
    out["flop_ratio_dtp_bp"] = flops["dtp"] / flops["bp"]
    out["time_ratio_over_flop_ratio"] = out["time_ratio_dtp_bp"] / out["flop_ratio_dtp_bp"]
    out["host_peak_rss_mib"] = _rss_mib()
    out["device_memory"] = _device_memory()

    if measure_peaks:
        blk = largest_conv(net)
        peaks: dict[str, Any] = {"matmul": matmul_peak(matmul_n, max(repeats, 3))}
        if blk is not None:
            # The forward convolution of each implementation ('mixed' runs XLA's).
            fwd_impl = "xla" if blk.conv_impl == "mixed" else blk.conv_impl
            peaks["largest_conv"] = {i: conv_peak(blk, b, i, max(repeats, 3)) for i in ("im2col", "xla")}
            peaks["largest_conv_jdtp"] = fwd_impl
            conv_gflops = peaks["largest_conv"][fwd_impl]["gflops"]
            out["dtp_fraction_of_conv_peak"] = out["dtp"]["gflops_achieved"] / conv_gflops
            out["bp_fraction_of_conv_peak"] = out["bp"]["gflops_achieved"] / conv_gflops
        out["dtp_fraction_of_matmul_peak"] = out["dtp"]["gflops_achieved"] / peaks["matmul"]["gflops"]
        out["peaks"] = peaks
    return out


def environment() -> dict:
    dev = jax.devices()[0]
    return {
        "jax_version": jax.__version__,
        "backend": jax.default_backend(),
        "device_kind": dev.device_kind,
        "device_count": jax.device_count(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def summary_line(r: dict) -> str:
    d, b = r["dtp"], r["bp"]
    frac = r.get("dtp_fraction_of_conv_peak")
    frac_s = f"{frac:.0%}" if frac is not None else "n/a"
    other = next(
        (k for k in r if k.startswith("dtp_") and isinstance(r[k], dict) and "step_s_median" in r[k]), None
    )
    extra = f" | DTP {other[4:]} {r[other]['step_s_median']:.3f} s" if other else ""
    return (
        f"{r['config']:6s} B={r['batch_size']:<4d} DTP {d['step_s_median']:8.3f} s "
        f"({d['images_per_s']:7.1f} img/s, {d['gflops_achieved']:6.1f} GFLOP/s, compile {d['compile_s']:.1f} s) | "
        f"BP {b['step_s_median']:7.3f} s ({b['gflops_achieved']:6.1f} GFLOP/s) | "
        f"time ratio {r['time_ratio_dtp_bp']:6.1f}, FLOP ratio {r['flop_ratio_dtp_bp']:6.1f}, "
        f"time/FLOP ratio {r['time_ratio_over_flop_ratio']:.2f} | DTP at {frac_s} of conv peak"
        f" ({r['feedback_mode']}){extra}"
    )


def run(
    configs=("lenet", "vgg"),
    repeats: int = 5,
    batch_sizes: dict | None = None,
    out: str | None = None,
    overrides: dict | None = None,
    matmul_n: int = 2048,
    concurrent: bool = False,
) -> dict:
    """Benchmark each named config and optionally write JSON to ``out``.

    Args:
      configs: benchmark names (:data:`CONFIGS`) or config file paths.
      repeats: timed steps per algorithm.
      batch_sizes: ``{name: batch}`` overrides.
      out: JSON path.
      overrides: dotted config keys applied to every config (e.g. ``{'dtp.unroll': 2}``).
      matmul_n: size of the matmul peak measurement.
    """
    results = {"environment": environment(), "results": []}
    for name in configs:
        config = load_config(name, overrides)
        if batch_sizes and name in batch_sizes:
            config.data.batch_size = int(batch_sizes[name])
        with jax.default_matmul_precision(config.matmul_precision):
            r = benchmark_config(name, config, repeats, matmul_n=matmul_n, concurrent=concurrent)
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


def main(argv):
    del argv
    from absl import flags

    f = flags.FLAGS
    configs = [c for c in f.configs if c]
    overrides = {"model.conv_impl": f.conv_impl, "dtp.probe": f.probe, "dtp.unroll": f.unroll}
    overrides["dtp.ldrl_closed_form"] = f.ldrl_closed_form
    if f.feedback_mode:
        overrides["dtp.feedback_mode"] = f.feedback_mode
    if f.fb_chunk_mib is not None:
        overrides["dtp.fb_chunk_mib"] = f.fb_chunk_mib
    run(
        configs,
        f.repeats,
        _parse_batch_sizes(f.batch_size, configs),
        f.out,
        overrides,
        concurrent=f.both_modes,
    )


def _define_flags():
    from absl import flags

    flags.DEFINE_list(
        "configs",
        ["lenet", "vgg"],
        f"Benchmark names {sorted(CONFIGS)} (configs/{{...}}) or config file paths.",
    )
    flags.DEFINE_integer("repeats", 5, "Timed steps per algorithm (median reported).")
    flags.DEFINE_list("batch_size", [], "Batch size for all configs (N) or per config (name=N,...).")
    flags.DEFINE_string(
        "conv_impl", "auto", "'auto' (mixed on CPU, xla elsewhere), 'xla', 'im2col' or 'mixed'."
    )
    flags.DEFINE_bool("ldrl_closed_form", True, "Closed-form L-DRL gradient (else autodiff).")
    flags.DEFINE_string("probe", "difference", "L-DRL probe: 'difference' or 'jvp'.")
    flags.DEFINE_integer("unroll", 1, "lax.scan unroll of the L-DRL iterations.")
    flags.DEFINE_string(
        "feedback_mode", "", "dtp.feedback_mode: 'sequential' or 'concurrent' (default: the config's)."
    )
    flags.DEFINE_bool("both_modes", False, "Also time the DTP step in the other feedback mode.")
    flags.DEFINE_float(
        "fb_chunk_mib",
        None,
        "dtp.fb_chunk_mib: MiB of hoisted terms per chunk (0: automatic; tiny: one iteration per chunk).",
    )
    flags.DEFINE_string("out", "results/benchmark.json", "Where to write the JSON results.")


if __name__ == "__main__":
    from absl import app

    _define_flags()
    app.run(main)
