"""The offline quickstart prints both results, also when rerun (then from the stored results)."""

from absl import flags
from helpers import tiny_config

from jdtp import quickstart


def test_quickstart_prints_both_results_on_every_run(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(
        quickstart,
        "_config",
        lambda variant: tiny_config("bp" if variant == "bp" else "dtp", num_train_steps=2),
    )
    flags.FLAGS(["quickstart", f"--workdir={tmp_path}"])
    quickstart.main([])
    first = capsys.readouterr().out
    assert "DTP (L-DRL)" in first and "BP" in first and "stored result" not in first
    quickstart.main([])
    second = capsys.readouterr().out
    assert second.count("(stored result)") == 2
    for name in ("DTP (L-DRL)", "BP"):  # the same numbers both times
        line1 = next(line for line in first.splitlines() if line.strip().startswith(name))
        line2 = next(line for line in second.splitlines() if line.strip().startswith(name))
        acc1, acc2 = (line.split("test accuracy ")[1].split()[0] for line in (line1, line2))
        assert acc1 == acc2
