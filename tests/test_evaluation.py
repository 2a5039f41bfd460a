"""Evaluation: masked sums over padded batches give the exact top-1 / top-5 accuracy and loss."""

import jax.numpy as jnp
import numpy as np

from jdtp import blocks as blk
from jdtp import evaluation
from jdtp import networks as nets


def test_eval_with_padding_matches_hand_computed_top1_top5_and_loss():
    # Identity "network": the logits are the inputs, so every number can be computed by hand.
    net = nets.Network("id", (blk.DenseBlock("out", (7,), 7, "identity", use_bias=False),))
    params = ({"kernel": jnp.eye(7)},)
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(11, 7)).astype(np.float32)
    labels = rng.integers(0, 7, size=11).astype(np.int32)
    step = evaluation.make_eval_step(net)
    # Batches of 4: the last holds 3 real examples and one padding row whose label would count.
    batches = []
    for start in range(0, 12, 4):
        idx = np.arange(start, start + 4)
        real = idx < 11
        safe = np.where(real, idx, 0)
        image = np.where(real[:, None], logits[safe], 100.0 * np.eye(7)[0])  # padding: "predicts" class 0
        batches.append(
            {"image": image, "label": np.where(real, labels[safe], 0), "mask": real.astype(np.float32)}
        )
    out = evaluation.evaluate(step, params, batches)
    top1 = np.mean(np.argmax(logits, 1) == labels)
    top5 = np.mean([labels[i] in np.argsort(-logits[i])[:5] for i in range(11)])
    shifted = logits - logits.max(1, keepdims=True)
    ce = -(shifted[np.arange(11), labels] - np.log(np.exp(shifted).sum(1)))
    np.testing.assert_allclose(out["eval/accuracy"], top1, rtol=1e-6)
    np.testing.assert_allclose(out["eval/top5_accuracy"], top5, rtol=1e-6)
    np.testing.assert_allclose(out["eval/loss"], ce.mean(), rtol=1e-5)
    assert 0 < top1 < top5 < 1  # the case distinguishes top-1 from top-5
    # Without the mask the padded row (a correct prediction of class 0) would change the accuracy.
    unmasked = evaluation.evaluate(
        step, params, [{k: v for k, v in b.items() if k != "mask"} for b in batches]
    )
    assert unmasked["eval/accuracy"] != out["eval/accuracy"]
