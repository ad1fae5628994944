"""Update-level DP: Flower's LocalDpMod and central DP (client clipping, server noise), and what the wire shows."""

import json
import math

import pytest
import torch
from flwr.app import ConfigRecord, Context, Message, MessageType, MetricRecord, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from app.client_app import defense_mod
from attacker.wire.capture import CaptureStore
from defenses.accounting import PrivacyLedger, epsilon
from defenses.config import DefenseConfig, account_round
from fednas.records import from_array_record, to_array_record
from fednas.schema import ConfigError, parse_config
from fednas.storage import load_tensors, read_jsonl

BROADCAST = {"alpha:normal": torch.zeros(14, 8), "theta:w": torch.zeros(40_000), "theta:b": torch.zeros(3, 3)}


def _exchange(defenses: str, clip_in_config: bool = True, **keys) -> dict[str, torch.Tensor]:
    """One train message through the defense mod, around a client that adds 0.01 to every coordinate."""
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 0
    config = ConfigRecord({"clipping_norm": 1.0} if clip_in_config else {"server-round": 1})
    msg = Message(RecordDict({"arrays": to_array_record(BROADCAST), "config": config}), dst_node_id=1,
                  message_type=MessageType.TRAIN)
    ctx = Context(run_id=1, node_id=1, node_config={}, state=RecordDict(), run_config={})

    def client(m: Message, c: Context) -> Message:
        new = {k: v + 0.01 for k, v in from_array_record(m.content["arrays"]).items()}
        return Message(RecordDict({"arrays": to_array_record(new), "metrics": MetricRecord({"num-examples": 1.0})}),
                       reply_to=m)

    out = defense_mod({"defenses": defenses, **keys})(msg, ctx, client)
    assert not out.has_error(), out.error
    return from_array_record(out.content["arrays"])


def _update(reply: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([(reply[k] - BROADCAST[k]).reshape(-1) for k in sorted(BROADCAST)])


def test_central_dp_clips_the_whole_update_and_adds_no_noise_on_the_client():
    raw = 0.01 * math.sqrt(sum(v.numel() for v in BROADCAST.values()))
    update = _update(_exchange("central-dp"))
    assert raw > 1.0 and update.norm().item() == pytest.approx(1.0, rel=1e-4)
    assert torch.allclose(update, torch.full_like(update, update[0].item()))  # scaled, not noised
    assert _update(_exchange("central-dp", clip_in_config=False)).norm().item() == pytest.approx(raw, rel=1e-4)


def test_local_dp_noise_has_the_flower_std_and_the_layout_survives():
    reply = _exchange("local-dp-update", **{"update-clip": 0.5, "ldp-epsilon": 2.0, "update-delta": 1e-5})
    assert set(reply) == set(BROADCAST)  # the packed θ's layout rides in its name, noise cannot touch it
    expected = 2 * 0.5 * math.sqrt(2 * math.log(1.25 / 1e-5)) / 2.0
    update = _update(reply)  # clipped to norm 0.5 (≈ 0.0025 per coordinate) plus the noise
    assert update.std().item() == pytest.approx(expected, rel=0.02)  # 40k coordinates: std error ~0.4%


def test_update_level_accounting_composes_per_release():
    defense = parse_config(DefenseConfig, {"defenses": "local-dp-update,central-dp", "ldp-epsilon": 4.0,
                                           "central-noise-multiplier": 2.0})
    ledger = PrivacyLedger()
    clients = [{"partition-id": 0.0, "alpha-samples": 10.0, "alpha-steps": 1.0}]
    for _ in range(3):
        account_round(ledger, defense, 1, clients)
    z = math.sqrt(2 * math.log(1.25 / 1e-5)) / 4.0
    eps = ledger.epsilons()
    assert eps["partition-0"] == pytest.approx(epsilon([(z, 1.0, 1)] * 3, 1e-5))
    assert eps["federation (client-level)"] == pytest.approx(epsilon([(2.0, 1.0, 3)], 1e-5))
    assert eps["federation (client-level)"] > epsilon([(2.0, 1.0, 2)], 1e-5)


@pytest.mark.parametrize(("values", "message"), [
    ({"update-clip": 0.0}, "update-clip"), ({"ldp-epsilon": -1.0}, "ldp-epsilon"),
    ({"update-delta": 1.0}, "update-delta"), ({"defenses": "local-dp"}, "known: dp-sgd-alpha"),
])
def test_bad_update_dp_settings_are_refused(values, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(DefenseConfig, values)


def test_central_dp_eavesdropper_sees_clipped_unnoised_updates(tmp_path, data_root, mnist_or_digits):
    from simulations.simulate import simulate

    run = simulate({"dataset": mnist_or_digits, "data-root": str(data_root), "output-dir": str(tmp_path),
                    "num-server-rounds": 1, "theta-steps": 2, "theta-batch-size": 8, "eval-samples": 16,
                    "channels": 4, "nodes": 2, "samples-per-client": 60, "interceptor": "capture",
                    "defenses": "central-dp", "update-clip": 0.05, "central-noise-multiplier": 1.0})
    captures = list(CaptureStore(run / "captures").captures())
    assert len(captures) == 2
    replies = []
    for cap in captures:
        delta = torch.cat([(cap.reply[k] - cap.broadcast[k]).reshape(-1) for k in sorted(cap.broadcast)])
        assert delta.norm().item() == pytest.approx(0.05, rel=1e-4)  # clipped exactly, nothing added
        replies.append(cap.reply)
    mean = {k: (replies[0][k] + replies[1][k]) / 2 for k in replies[0]}
    final, _ = load_tensors(run / "checkpoints" / "round-0001.safetensors")
    noise = torch.cat([(final[k] - mean[k]).reshape(-1) for k in mean])
    assert noise.std().item() == pytest.approx(1.0 * 0.05 / 2, rel=0.05)  # σC/m, added only on the server
    privacy = read_jsonl(run / "rounds.jsonl")[0]["privacy"]
    assert privacy["epsilon"]["federation (client-level)"] == pytest.approx(epsilon([(1.0, 1.0, 1)], 1e-5))
    assert json.loads((run / "summary.json").read_text())["privacy"]["max_epsilon"] > 0
