"""SecAgg+ through Flower's legacy path: the wire carries no per-client α, the attack has nothing to work on,
and the aggregate equals the plain average up to quantisation."""

import json

import pytest
import torch

from attacker.wire.capture import CaptureStore
from defenses.config import DefenseConfig, check_compatible
from fednas.schema import ConfigError, parse_config
from fednas.storage import load_tensors


def test_secagg_with_per_client_accounting_is_refused_before_training():
    for other in ("dp-sgd-alpha", "local-dp-update", "central-dp"):
        with pytest.raises(ConfigError, match="secagg-plus hides every client's update"):
            check_compatible(parse_config(DefenseConfig, {"defenses": f"secagg-plus,{other}"}), batchnorm=False)
    check_compatible(parse_config(DefenseConfig, {"defenses": "secagg-plus,l2-alpha"}), batchnorm=False)


def test_secagg_hides_every_client_update_from_the_eavesdropper(tmp_path, data_root, mnist_or_digits, tiny_run):
    from simulations.simulate import simulate
    from tests.conftest import TINY_RUN

    secure = simulate({"dataset": mnist_or_digits, "data-root": str(data_root), **TINY_RUN,
                       "output-dir": str(tmp_path), "defenses": "secagg-plus", "interceptor": "after-run",
                       "attack-iterations": 2, "attack-aux-samples": 200, "attack-prior": "pixel"})
    records = list(CaptureStore(secure / "captures").records())
    training = [r for r in records if "server-round" in r.broadcast_config]
    assert len(training) == 2 and len(records) == 8   # 4 SecAgg+ stages per client and round
    assert all(r.reply_blob is None and not r.reply_arrays for r in records)  # masked vectors only, no α
    summary = json.loads((secure / "reconstructions" / "wire" / "summary.json").read_text())
    assert summary["stats"]["attacked"] == 0 and summary["images_scored"] == 0
    assert summary["wire"] == {"exchanges": 8, "with_update": 0, "without_update": 8}
    # the protocol changes what the wire shows, not the model: the same seed without SecAgg+ (the shared tiny run;
    # its tap is transparent, which the interceptor tests check)
    a, _ = load_tensors(secure / "checkpoints" / "round-0001.safetensors")
    b, _ = load_tensors(tiny_run / "checkpoints" / "round-0001.safetensors")
    assert set(a) == set(b)
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert worst < 1e-4, worst  # quantisation: 2 × 8 / 2^22 per coordinate and client, plus float32 sums
    assert any(not torch.equal(a[k], b[k]) for k in a)  # ... and it did go through the quantiser
