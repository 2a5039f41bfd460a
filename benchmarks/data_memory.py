"""Peak host memory of one process reading training batches from an ImageNet-32-sized split.

    python benchmarks/data_memory.py [--num_examples=1281167] [--batch=256] [--steps=3]

The split is TFDS mock data (``tfds.testing.mock_data``: random 32×32×3 images served through
``tfds.data_source``, no download), so the figure measures jdtp's reading path only: each
process takes its rows of every step's batch by random access (``jdtp.batching``) instead of
decoding the whole split. Prints the process's peak RSS and the wall time.
"""

import resource
import time

import tensorflow_datasets as tfds
from absl import app, flags

from jdtp import batching, config_base

FLAGS = flags.FLAGS
flags.DEFINE_integer(
    "num_examples", 1_281_167, "Examples in the mock split (ImageNet 32x32 train: 1,281,167)."
)
flags.DEFINE_integer("batch", 256, "Global batch size.")
flags.DEFINE_integer("steps", 3, "Batches to read.")


def main(argv):
    del argv
    data = config_base.get_base_config("bp").data  # the defaults every run starts from
    data.name, data.download, data.validation_split = "imagenet32", False, 0.0
    start = time.time()
    with tfds.testing.mock_data(num_examples=FLAGS.num_examples):
        dataset = batching.load_dataset(data)
        for step in range(FLAGS.steps):
            batch = batching.get_train_batch(dataset, step, FLAGS.batch, 0)
        assert batch["image"].shape == (FLAGS.batch, 32, 32, 3), batch["image"].shape
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"{FLAGS.num_examples} examples, {FLAGS.steps} batches of {FLAGS.batch}: "
        f"peak RSS {peak_mib:.0f} MiB, {time.time() - start:.1f} s"
    )


if __name__ == "__main__":
    app.run(main)
