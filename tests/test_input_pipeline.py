"""Tests for jdtp.input_pipeline: the facade re-exports the names the rest of jdtp uses, unchanged."""

from jdtp import augmentation, batching, datasets
from jdtp import input_pipeline as ip

# Used by train.py, benchmark.py, config_base.py, main.py, experiments and tests.
PUBLIC = {
    datasets: (
        "DatasetNotFoundError",
        "DatasetInfo",
        "DATASETS",
        "get_info",
        "resolve_data_dir",
        "load_split",
        "open_split",
    ),
    batching: (
        "Dataset",
        "load_dataset",
        "steps_per_epoch",
        "train_batch_indices",
        "get_train_batch",
        "num_eval_batches",
        "eval_batches",
        "split_validation",
        "VALIDATION_SEED",
    ),
    augmentation: (
        "make_preprocess",
        "make_eval_preprocess",
        "augment_params",
        "flip_and_crop",
        "CROP_PADDING",
    ),
}


def test_facade_reexports_the_public_names():
    for module, names in PUBLIC.items():
        for name in names:
            assert getattr(ip, name) is getattr(module, name), name
            assert name in ip.__all__
    assert set(ip.__all__) <= set(dir(ip))


def test_facade_loads_a_dataset_end_to_end():
    data = ip.get_info("digits")
    from jdtp import config_base

    config = config_base.get_base_config().data
    config.name = "digits"
    ds = ip.load_dataset(config)
    assert (ds.info, ds.num_train, ds.num_eval, ds.eval_name) == (data, 1437, 360, "test")
    batch = ip.get_train_batch(ds, 3, 32, 0, 1, 2)
    x, y = ip.make_eval_preprocess(ds.info)(batch)
    assert x.shape == (16, 8, 8, 1) and y.shape == (16,)
    assert sum(b["mask"].sum() for b in ip.eval_batches(ds, 64)) == 360
