"""Checkpoints: optimizer, scheduler and RNG round-trip through safetensors + JSON only."""

import torch

from trainers.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from trainers.models import load_causal_lm


def test_round_trip_restores_optimizer_scheduler_and_rng(tiny_dir, tmp_path):
    model = load_causal_lm(str(tiny_dir))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1 / (s + 1))
    model(torch.tensor([[5, 6, 7]]), labels=torch.tensor([[5, 6, 7]])).loss.backward()
    opt.step()
    sched.step()
    for step in (1, 2, 3):
        save_checkpoint(tmp_path, {"policy": model}, opt, sched, step, {"note": "x"}, keep_last=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-00000002", "step-00000003"]
    path = latest_checkpoint(tmp_path)
    assert not list(path.rglob("*.bin")) and not list(path.rglob("*.pt"))  # nothing pickled
    expected_rand = torch.rand(3)
    opt2 = torch.optim.AdamW(load_causal_lm(str(path / "policy")).parameters(), lr=1e-3)
    sched2 = torch.optim.lr_scheduler.LambdaLR(opt2, lambda s: 1 / (s + 1))
    state = load_checkpoint(path, opt2, sched2)
    assert state["step"] == 3 and state["note"] == "x"
    assert torch.equal(torch.rand(3), expected_rand)  # RNG restored to the save point
    assert sched2.get_last_lr() == sched.get_last_lr()
    a, b = opt.state_dict(), opt2.state_dict()
    for idx in a["state"]:
        for key, val in a["state"][idx].items():
            assert torch.equal(torch.as_tensor(val), torch.as_tensor(b["state"][idx][key]))
