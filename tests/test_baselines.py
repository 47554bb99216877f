import json
import random

import pytest
import torch

from lite_cpt.arms import ARMS, build_arm
from lite_cpt.arms.baselines.method import EWC, EWC_STATE, REPLAY_MANIFEST, Replay, buffer_selection, ewc_penalty
from lite_cpt.errors import UserError
from lite_cpt.train.phase import Knobs, Phase, examples_of, trainable_parameters
from lite_cpt.train.sft import SFTHooks
from lite_cpt.models import add_lora
from lite_cpt.recipe import arm_config
from lite_cpt.recipe_model import LoraConfig, TinyModelConfig
from lite_cpt.tasks import TASK_TYPES
from lite_cpt.tiny.model import build_tiny_model, tiny_corpus

TASKS = ("clevr", "geometry", "pathvqa")


@pytest.fixture(scope="module")
def tiny():
    model, processor = build_tiny_model(TinyModelConfig(), tiny_corpus(0))
    model = add_lora(model, LoraConfig(r=4, alpha=8))
    # LoRA starts with B = 0, which leaves A without gradient; a random B stands in for a
    # trained adapter so that every LoRA parameter receives gradient.
    with torch.no_grad():
        generator = torch.Generator().manual_seed(0)
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(0.05 * torch.randn(p.shape, generator=generator))
    return model, processor


@pytest.fixture
def model(tiny):
    """The shared tiny model, with its trainable parameters restored after each test."""
    saved = {name: p.detach().clone() for name, p in trainable_parameters(tiny[0]).items()}
    yield tiny[0]
    with torch.no_grad():
        for name, p in trainable_parameters(tiny[0]).items():
            p.copy_(saved[name])


@pytest.fixture(scope="module")
def data():
    out = {}
    for name in TASKS:
        task = TASK_TYPES[f"mini_{name}"](name, seed=0)
        out[name] = examples_of(task, task.load("train", 16))
    return out


def phase(index: int, name: str, seed: int = 0) -> Phase:
    return Phase(index=index, name=name, seed=seed, epochs=1.0, knobs=Knobs(4, 256, 4),
                 on_step=lambda record: None, progress=lambda *_: None)


def make(method_cls, model, processor, data, **arm):
    config = arm_config(**{"name": method_cls.__name__.lower(), "lr": 5e-3, "batch_size": 8, **arm})
    return method_cls(config, model, processor, lambda name: data[name])


def identity(examples):
    return [(e.task.name, e.sample.id) for e in examples]


# ---------------------------------------------------------------------------------------------
# Replay


def test_arms_are_registered(tiny, data):
    config = arm_config(name="replay")
    assert isinstance(build_arm(config, tiny[0], tiny[1], lambda name: data[name]), Replay)
    assert isinstance(build_arm(arm_config(name="ewc"), tiny[0], tiny[1], lambda name: data[name]), EWC)
    assert {"replay", "ewc"} <= set(ARMS)


def test_replay_mixes_exact_fraction_from_earlier_tasks_only(tiny, data):
    method = make(Replay, *tiny, data, replay={"fraction": 0.25, "buffer_per_task": 5})
    assert method.sft_hooks(phase(1, "clevr")) == SFTHooks(), "no replay while training the first task"
    method.after_task(data["clevr"], phase(1, "clevr"))
    method.after_task(data["geometry"], phase(2, "geometry"))
    sampler = method.sft_hooks(phase(3, "pathvqa")).batch_sampler
    batch = data["pathvqa"][:16]
    mixed = sampler(random.Random(1), batch)
    assert len(mixed) == 16
    assert mixed[:12] == batch[:12], "the kept part of the batch is unchanged"
    replayed = mixed[12:]
    buffer_ids = set(identity(method.buffered_examples()))
    assert len(replayed) == 4 and all(e.task.name in ("clevr", "geometry") for e in replayed)
    assert set(identity(replayed)) <= buffer_ids and len(set(identity(replayed))) == 4
    assert method.buffer.keys() == {"clevr", "geometry"} and len(buffer_ids) == 10
    assert sampler(random.Random(1), batch) == mixed, "same rng seed, same batch"
    draws = {tuple(identity(sampler(random.Random(s), batch))) for s in range(5)}
    assert len(draws) > 1, "the draw depends on the rng"


def test_replay_buffer_is_seeded_and_rebuilt_by_load_state(tiny, data, tmp_path):
    method = make(Replay, *tiny, data, replay={"buffer_per_task": 6})
    for index, name in enumerate(TASKS[:2], 1):
        method.after_task(data[name], phase(index, name))
    method.save_state(tmp_path)
    resumed = make(Replay, *tiny, data, replay={"buffer_per_task": 6})
    resumed.load_state(tmp_path, list(TASKS[:2]))
    assert identity(resumed.buffered_examples()) == identity(method.buffered_examples())
    manifest = json.loads((tmp_path / REPLAY_MANIFEST).read_text())
    assert list(manifest["tasks"]) == ["clevr", "geometry"] and len(manifest["tasks"]["clevr"]) == 6

    other_seed = TASK_TYPES["mini_clevr"]("clevr", seed=1)
    reseeded = examples_of(other_seed, other_seed.load("train", 16))
    assert [e.sample.id for e in buffer_selection(reseeded, 6)] != manifest["tasks"]["clevr"]

    changed = make(Replay, *tiny, {**data, "clevr": data["clevr"][::-1]}, replay={"buffer_per_task": 6})
    with pytest.raises(UserError, match="differs"):
        changed.load_state(tmp_path, list(TASKS[:2]))


def test_replay_train_logs_replayed_samples(model, tiny, data):
    method = make(Replay, model, tiny[1], data, batch_size=4, max_steps_per_task=1,
                  replay={"fraction": 0.5, "buffer_per_task": 3})
    first = method.train(data["clevr"], phase(1, "clevr"))
    assert first.extra["replayed_samples"] == 0 and first.extra["replay_buffer_samples"] == 0
    method.after_task(data["clevr"], phase(1, "clevr"))
    method.arm.max_steps_per_task = 2
    second = method.train(data["geometry"], phase(2, "geometry"))
    assert second.steps == 2 and second.extra["replayed_samples"] == 2 * 2
    assert second.extra["replay_buffer_samples"] == 3 and second.extra["replay_buffer_bytes"] > 0


# ---------------------------------------------------------------------------------------------
# EWC


def test_ewc_penalty_zero_at_anchor_and_matches_hand_value(model, tiny, data):
    method = make(EWC, model, tiny[1], data, ewc={"weight": 3.0})
    params = trainable_parameters(model)
    method.anchor = {n: p.detach().float().clone() for n, p in params.items()}
    method.fisher = {n: torch.ones_like(p) for n, p in params.items()}
    assert method.penalty().item() == 0.0
    name = next(n for n in params if "lora_A" in n)
    method.fisher[name] = torch.zeros_like(params[name])
    method.fisher[name][0, 0], method.fisher[name][1, 2] = 2.0, 5.0
    with torch.no_grad():
        params[name][0, 0] += 0.1
        params[name][1, 2] -= 0.3
        params[name][2, 1] += 7.0  # zero Fisher: free to move
    expected = 3.0 / 2 * (2.0 * 0.1**2 + 5.0 * 0.3**2)
    assert method.penalty().item() == pytest.approx(expected, rel=1e-5)
    assert method.sft_hooks(phase(2, "geometry")).extra_loss == method.penalty


def test_fisher_is_nonnegative_and_covers_lora_and_state_round_trips(model, tiny, data, tmp_path):
    method = make(EWC, model, tiny[1], data, ewc={"fisher_samples": 4})
    assert method.sft_hooks(phase(1, "clevr")) == SFTHooks()
    method.after_task(data["clevr"], phase(1, "clevr"))
    assert set(method.fisher) == set(trainable_parameters(model)) and len(method.fisher) > 0
    for name, value in method.fisher.items():
        assert (value >= 0).all(), name
        assert value.sum() > 0, f"{name} receives gradient, so its Fisher is non-zero"
    assert all(p.grad is None for p in trainable_parameters(model).values())
    first = {n: f.clone() for n, f in method.fisher.items()}
    method.after_task(data["geometry"], phase(2, "geometry"))
    assert all((method.fisher[n] >= first[n]).all() for n in first), "Fisher accumulates"
    assert method.tasks_in_fisher == 2

    method.save_state(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == [EWC_STATE], "no temp file left behind"
    resumed = make(EWC, model, tiny[1], data)
    resumed.load_state(tmp_path, ["clevr", "geometry"])
    assert resumed.tasks_in_fisher == 2
    for store, loaded in ((method.fisher, resumed.fisher), (method.anchor, resumed.anchor)):
        assert set(store) == set(loaded)
        assert all(torch.equal(store[n], loaded[n]) for n in store)
    with pytest.raises(UserError, match="missing"):
        resumed.load_state(tmp_path / "elsewhere", ["clevr"])


def test_large_ewc_weight_keeps_parameters_near_anchor(model, tiny, data):
    start = {n: p.detach().clone() for n, p in trainable_parameters(model).items()}
    first_task = make(EWC, model, tiny[1], data, ewc={"fisher_samples": 4})
    first_task.after_task(data["clevr"], phase(1, "clevr"))

    def drift(weight: float) -> tuple[float, dict]:
        """Σ_i F_i (θ_i − θ*_i)² after four steps of the second task, from the same anchor."""
        with torch.no_grad():
            for n, p in trainable_parameters(model).items():
                p.copy_(start[n])
        method = make(EWC, model, tiny[1], data, batch_size=4, max_steps_per_task=4,
                      ewc={"weight": weight, "fisher_samples": 2})
        method.fisher, method.anchor = dict(first_task.fisher), dict(first_task.anchor)
        stats = method.train(data["geometry"], phase(2, "geometry"))
        assert stats.steps == 4
        distance = ewc_penalty(trainable_parameters(model), first_task.fisher, first_task.anchor, weight=2.0)
        method.after_task(data["geometry"], phase(2, "geometry"))
        return distance.item(), stats.extra

    free, _ = drift(0.0)
    held, extra = drift(1e6)
    assert free > 0 and held < 0.25 * free, (free, held)
    adapter_params = sum(p.numel() for p in trainable_parameters(model).values())
    assert extra["fisher_samples"] == 2 and extra["fisher_seconds"] > 0
    assert extra["ewc_state_bytes"] == 2 * 4 * adapter_params, "fp32 Fisher + fp32 anchor"


# ---------------------------------------------------------------------------------------------
# Resume


@pytest.mark.parametrize("method_cls, settings", [
    (Replay, {"replay": {"fraction": 0.5, "buffer_per_task": 4}}),
    (EWC, {"ewc": {"weight": 1e3, "fisher_samples": 2}}),
])
def test_resumed_method_trains_like_an_uninterrupted_one(model, tiny, data, tmp_path, method_cls, settings):
    """What the loop does on resume: restore task 1's adapter, load_state, train task 2."""

    def run_task(method, index: int) -> None:
        name = TASKS[index - 1]
        method.train(data[name], phase(index, name, seed=index))
        method.after_task(data[name], phase(index, name, seed=index))
        method.save_state(tmp_path / f"task_{index}")

    def snapshot() -> dict[str, torch.Tensor]:
        return {n: p.detach().clone() for n, p in trainable_parameters(model).items()}

    arm = {"batch_size": 4, "max_steps_per_task": 2, **settings}
    uninterrupted = make(method_cls, model, tiny[1], data, **arm)
    run_task(uninterrupted, 1)
    after_first = snapshot()
    run_task(uninterrupted, 2)
    expected = snapshot()

    with torch.no_grad():
        for n, p in trainable_parameters(model).items():
            p.copy_(after_first[n])
    resumed = make(method_cls, model, tiny[1], data, **arm)
    resumed.load_state(tmp_path / "task_1", [TASKS[0]])
    run_task(resumed, 2)
    assert not all(torch.equal(after_first[n], expected[n]) for n in expected), "task 2 trained"
    assert all(torch.equal(p, expected[n]) for n, p in trainable_parameters(model).items())


def test_replay_replaces_even_one_item_and_draws_with_replacement_from_a_small_buffer(tiny, data):
    method = make(Replay, tiny[0], tiny[1], data, replay={"fraction": 0.25, "buffer_per_task": 2})
    method.buffer = {"clevr": data["clevr"][:2]}
    batch = data["geometry"][:4]
    mixed = method.mix_in_replay(random.Random(0), batch)
    assert mixed[:3] == batch[:3] and mixed[3] in data["clevr"][:2]  # round(0.25 x 4) = 1 item
    method.arm.replay.fraction = 1.0
    mixed = method.mix_in_replay(random.Random(0), batch)
    assert len(mixed) == 4 and all(e in data["clevr"][:2] for e in mixed)  # 4 draws from 2


def test_fisher_is_the_mean_over_examples_and_a_state_without_its_task_count_still_resumes(model, tiny, data,
                                                                                               tmp_path):
    from lite_cpt.arms.baselines.method import diagonal_fisher

    first, second = data["clevr"][:1], data["clevr"][1:2]
    one, two = diagonal_fisher(model, tiny[1], first), diagonal_fisher(model, tiny[1], second)
    both = diagonal_fisher(model, tiny[1], first + second)
    assert all(torch.allclose(both[n], (one[n] + two[n]) / 2, rtol=1e-5, atol=1e-12) for n in both)
    method = make(EWC, model, tiny[1], data)
    # A state saved before the Fisher counted its tasks reads that count from the finished tasks.
    method.after_task(data["clevr"][:2], phase(1, "clevr"))
    method.save_state(tmp_path)
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(tmp_path / EWC_STATE), framework="pt") as handle:
        assert handle.metadata()["tasks_in_fisher"] == "1"
    save_file(load_file(str(tmp_path / EWC_STATE)), str(tmp_path / EWC_STATE))  # no metadata
    resumed = make(EWC, model, tiny[1], data)
    resumed.load_state(tmp_path, ["clevr", "geometry"])
    assert resumed.tasks_in_fisher == 2


def test_an_arm_declared_wrongly_is_refused_by_name():
    from lite_cpt.arms.base import ArmDeclaration

    def declared(**fields):
        return ArmDeclaration(**{"name": "mine", "kind": "sft", "phases": ("sft_step", "evaluation"),
                                 "implementation": "lite_cpt.arms.sft.method:SequentialSFT", "summary": "", **fields})

    with pytest.raises(TypeError, match="^ArmDeclaration needs a `name` to be registered as an arm method$"):
        ARMS.register(declared(name=""))
    with pytest.raises(ValueError, match=r"^arm 'mine': kind must be one of .*, got 'other'$"):
        ARMS.register(declared(kind="other"))
    with pytest.raises(ValueError, match=r"^arm 'mine': phases must be a non-empty subset of .*, got \('warmup',\)$"):
        ARMS.register(declared(phases=("warmup",)))
    with pytest.raises(ValueError, match=r"^arm 'mine': phases must be a non-empty subset of .*, got \(\)$"):
        ARMS.register(declared(phases=()))
    with pytest.raises(ValueError, match=r"^arm 'mine': implementation must be 'module:Class', got 'nowhere'$"):
        ARMS.register(declared(implementation="nowhere"))
    with pytest.raises(ValueError, match=r"^arm method 'sft' is registered twice$"):
        ARMS.register(declared(name="sft"))
    assert "mine" not in ARMS
