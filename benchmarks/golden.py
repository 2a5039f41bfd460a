"""Golden outputs for refactors: parameters and logged metrics after a few steps of every algorithm.

    python benchmarks/golden.py record DIR     # before a change (fixed seeds, synthetic data)
    python benchmarks/golden.py record DIR2    # after it
    python benchmarks/golden.py compare DIR DIR2

``record`` trains each case (the ``:smoke`` variant of an experiment config, a few steps through
``jdtp.train.train_and_evaluate``) and stores the final forward and feedback parameters (``.npz``)
and ``metrics.jsonl`` (``.json``). ``compare`` prints the largest relative parameter and metric
differences per case: behaviour that was right should stay bit-for-bit or float32-rounding equal.
Not a test: it compares two recordings of the code, never a stored number.
"""

import json
import os
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

LR = 0.03618358843718276  # LeNet/CIFAR-10's DTP lr, kept for the untuned vanilla DTP case
CASES = {
    "dtp_set": ("lenet_cifar10.py", "smoke", {}),
    "dtp_add": ("lenet_cifar10.py", "smoke", {"dtp.unpool_mode": "add"}),
    "dtp_jvp": ("lenet_cifar10.py", "smoke", {"dtp.probe": "jvp"}),
    "dtp_autodiff": ("lenet_cifar10.py", "smoke", {"dtp.ldrl_closed_form": False}),
    "dtp_mnist": ("lenet_mnist.py", "smoke", {}),
    "vanilla_dtp": ("lenet_cifar10.py", "vanilla_dtp,smoke", {"optim.lr": LR}),
    "tp": ("lenet_cifar10.py", "tp,smoke", {"optim.lr": 1e-3, "tp.fb_lr": (1e-4, 1e-4, 1e-3)}),
    "bp": ("lenet_cifar10.py", "bp,smoke", {}),
    "vgg_dtp": ("vgg_cifar10.py", "smoke", {}),
    "vgg_bp": ("vgg_cifar10.py", "bp,smoke", {}),
    "parallel_dtp": ("lenet_cifar10.py", "parallel_dtp,smoke", {}),
    "resnet_dtp": ("resnet18_cifar10.py", "smoke", {"model.width": 4}),
    "sddtp": ("ddtp_mnist.py", "smoke", {}),
    "pddtp": ("ddtp_mnist.py", "p,smoke", {}),
    "ddtp_original": ("ddtp_mnist.py", "p,smoke", {"ddtp.semantics": "original"}),
    "ddtp_f64": ("ddtp_cifar10.py", "p,smoke", {"ddtp.float64": True}),
    # Longer feedback loops (several chunks of hoisted terms), both feedback modes.
    "dtp_k": ("lenet_cifar10.py", "smoke", {"dtp.num_fb_iters": (5, 7, 3)}),
    "dtp_k_add_concurrent": (
        "lenet_cifar10.py",
        "smoke",
        {"dtp.num_fb_iters": (5, 7, 3), "dtp.unpool_mode": "add", "dtp.feedback_mode": "concurrent"},
    ),
    "vgg_dtp_k": ("vgg_cifar10.py", "smoke", {"dtp.num_fb_iters": (3, 5, 2, 4, 3)}),
    "resnet_dtp_k": ("resnet18_cifar10.py", "smoke", {"model.width": 4, "dtp.num_fb_iters": (3, 2, 4, 2, 3)}),
    "vanilla_dtp_k": (
        "lenet_cifar10.py",
        "vanilla_dtp,smoke",
        {"optim.lr": LR, "vanilla_dtp.num_fb_iters": (4, 3, 5)},
    ),
}


def record(out_dir: str, only=None) -> None:
    from jdtp import config_base, train

    configs = os.path.join(os.path.dirname(__file__), "..", "configs")
    os.makedirs(out_dir, exist_ok=True)
    for name, (path, variant, overrides) in CASES.items():
        if only and name not in only:
            continue
        config = config_base.load_config_file(os.path.join(configs, path), variant)
        for k, v in overrides.items():
            config_base.set_dotted(config, k, v)
        config.mesh_devices = 1
        captured = {}
        with tempfile.TemporaryDirectory() as wd:
            r = train.train_and_evaluate(
                config, wd, callbacks=[lambda step, state: captured.update(state=state)]
            )
            with open(os.path.join(wd, "metrics.jsonl")) as f:
                records = [json.loads(line) for line in f]
        state = captured["state"]
        flat = {}
        for kind, params in (("fwd", state.fwd_params), ("fb", state.fb_params)):
            for i, p in enumerate(params):
                for k, v in p.items():
                    flat[f"{kind}/{i}/{k}"] = np.asarray(v)
        np.savez(os.path.join(out_dir, name + ".npz"), **flat)
        with open(os.path.join(out_dir, name + ".json"), "w") as f:
            json.dump({"records": records, "accuracy": r["final_test_accuracy"]}, f)
        print(f"{name}: recorded ({r['steps']} steps)", flush=True)


def _metrics(path):
    with open(path) as f:
        records = json.load(f)["records"]
    return {
        (r["step"], k): v for r in records for k, v in r.items() if k != "step" and not k.startswith("perf/")
    }


def compare(a_dir: str, b_dir: str) -> None:
    for name in CASES:
        a_path, b_path = os.path.join(a_dir, name + ".npz"), os.path.join(b_dir, name + ".npz")
        if not (os.path.exists(a_path) and os.path.exists(b_path)):
            print(f"{name:14s} missing in one of the recordings")
            continue
        a, b = np.load(a_path), np.load(b_path)
        worst = max(
            (
                np.abs(a[k].astype(np.float64) - b[k]).max() / max(np.abs(a[k]).max(), 1e-30)
                for k in a.files
                if k in b.files
            ),
            default=0.0,
        )
        only = sorted(set(a.files) ^ set(b.files))
        ma, mb = _metrics(a_path[:-4] + ".json"), _metrics(b_path[:-4] + ".json")
        # relative for large values, absolute below 1 (angles near 0°, losses near 0)
        mworst = max((abs(ma[k] - mb[k]) / max(abs(ma[k]), 1.0) for k in ma.keys() & mb.keys()), default=0.0)
        monly = sorted({k[1] for k in ma.keys() ^ mb.keys()})
        print(
            f"{name:14s} params max rel diff {worst:.2e}, metrics max rel diff {mworst:.2e}"
            + (f", params in one only: {only}" if only else "")
            + (f", metrics in one only: {monly}" if monly else "")
        )


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "record":
        record(sys.argv[2], sys.argv[3:] or None)
    elif len(sys.argv) == 4 and sys.argv[1] == "compare":
        compare(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)
