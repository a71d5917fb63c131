"""Guided distillation on tiny real denoisers: the w input, stage 1 and one progressive round,
guided generation and a w-student's folder round trip."""

from __future__ import annotations

import copy
from functools import partial

import numpy as np
import pytest
import torch

from tests.models.test_weightgen import embedding, tiny_generator
from wgen.config import DenoiserConfig
from wgen.diffusion import sample_ddim
from wgen.distill.fit import Round, round_loss, student_denoiser
from wgen.distill.targets import draw_w, progressive_loss, w_student_loss
from wgen.generator.checkpoint import WeightGenerator
from wgen.generator.diffusion import block_cond, denoiser_schedule, guided_output
from wgen.models.denoiser import build_denoiser

TEXT_DIM, BLOCK, N_BLOCKS = 8, 32, 4


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def denoiser_config(timesteps: int = 1000) -> DenoiserConfig:
    return DenoiserConfig(size="tiny", block_size=BLOCK, index_dim=8, train_timesteps=timesteps)


def teacher(seed: int = 0, extra_cond: bool = False) -> torch.nn.Module:
    """A tiny denoiser whose output layer is random (it starts at zero), so text, null text,
    t and w all show in what it predicts, as in a trained one."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = build_denoiser(denoiser_config(), TEXT_DIM, extra_cond=extra_cond)
        torch.nn.init.normal_(model.conv_out.weight, std=0.3)
        torch.nn.init.normal_(model.conv_out.bias, std=0.3)
        if extra_cond:
            torch.nn.init.normal_(model.extra_mlp.net[-1].weight, std=0.3)
    return model.eval()


def batch(seed: int, size: int = 16):
    gen = torch.Generator().manual_seed(seed)
    x0 = torch.randn(size, 1, BLOCK, generator=gen)
    n = torch.randint(0, N_BLOCKS, (size,), generator=gen)
    text = torch.randn(1, 3, TEXT_DIM, generator=gen)  # one concept's token states, shared
    return x0, torch.ones_like(x0, dtype=torch.bool), n, text


def train(loss_fn, student, steps: int = 60, lr: float = 3e-3) -> list[float]:
    optimizer = torch.optim.Adam([p for p in student.parameters() if p.requires_grad], lr=lr)
    gen, losses = torch.Generator().manual_seed(1), []
    student.train()
    for step in range(steps):
        loss = loss_fn(student, *batch(step % 4), gen)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def test_the_w_embedding_changes_the_output():
    model = teacher(extra_cond=True)
    x0, _, n, text = batch(0)
    t = torch.full((len(n),), 500)
    out = {w: model(x0, t, n, text, extra_cond=torch.full((len(n),), w)) for w in (0.0, 2.0)}
    assert (out[0.0] - out[2.0]).abs().mean() > 1e-2


def test_a_new_student_is_its_teacher_at_every_w():
    guided = teacher()
    student = student_denoiser_of(guided)
    x0, _, n, text = batch(0)
    t = torch.full((len(n),), 300)
    for w in (0.0, 3.0):
        got = student(x0, t, n, text, extra_cond=torch.full((len(n),), w))
        torch.testing.assert_close(got, guided(x0, t, n, text))


def student_denoiser_of(model: torch.nn.Module) -> torch.nn.Module:
    """`wgen.distill.fit.student_denoiser` on a generator-like holder of ``model``."""

    class Holder:
        denoiser, text_dim = model, TEXT_DIM
        layout = type("Layout", (), {"n_blocks": N_BLOCKS})

    return student_denoiser(Holder, _config(), Round("w", 4, progressive=False))


def _config():
    from wgen.config import Config

    return Config(denoiser=denoiser_config())


def w_loss(w_min: float, w_max: float, guided, schedule):
    def loss(student, x0, mask, n, text, gen):
        w = draw_w(len(n), w_min, w_max, gen)
        student_output = partial(student, **block_cond(n, text, w))
        teacher_output = guided_output(guided, n, text, w, guidance_input=False)
        return w_student_loss(student_output, teacher_output, schedule, x0, mask, gen, 500, 0.5)

    return loss


def test_a_w_student_trained_at_w_0_matches_the_unguided_teacher():
    schedule = denoiser_schedule(denoiser_config())
    guided = teacher()
    student = student_denoiser_of(guided)
    losses = train(w_loss(0.0, 0.0, guided, schedule), student, steps=10)
    assert max(losses) < 1e-10, "at w = 0 the target is the teacher's own conditional x̂"
    student.eval()
    x0, _, n, text = batch(7)
    t = torch.full((len(n),), 400)
    with torch.no_grad():
        got = student(x0, t, n, text, extra_cond=torch.zeros(len(n)))
        torch.testing.assert_close(got, guided(x0, t, n, text), rtol=0, atol=1e-5)


def test_stage_1_learns_the_guided_output_in_one_pass():
    schedule = denoiser_schedule(denoiser_config())
    guided = teacher()
    student = student_denoiser_of(guided)
    x0, _, n, text = batch(9)
    t = torch.full((len(n),), 500)
    alpha, sigma = schedule.alpha_sigma(t, x0)
    x_t = alpha * x0 + sigma * torch.randn(x0.shape, generator=torch.Generator().manual_seed(2))
    w = torch.full((len(n),), 3.0)

    def gap() -> float:
        with torch.no_grad():
            target = guided_output(guided, n, text, torch.full((len(n),), 3.0), False)(x_t, t)
            return float((student(x_t, t, n, text, extra_cond=w) - target).abs().mean())

    before = gap()
    losses = train(w_loss(0.0, 4.0, guided, schedule), student, steps=80)
    student.eval()
    assert np.mean(losses[-10:]) < np.mean(losses[:10])
    assert gap() < 0.8 * before, before


def test_one_progressive_round_brings_one_step_closer_to_the_teachers_two():
    schedule = denoiser_schedule(denoiser_config())
    w_teacher = teacher(seed=3, extra_cond=True)
    student = copy.deepcopy(w_teacher)
    student.null_text.requires_grad_(False)
    _, _, n, text = batch(11, size=N_BLOCKS)
    n = torch.arange(N_BLOCKS)
    w = torch.full((N_BLOCKS,), 1.5)
    shape = (N_BLOCKS, 1, BLOCK)

    def gap() -> float:
        student.eval()
        gaps = []
        for seed in range(4):
            cond = block_cond(n, text, w)
            two = sample_ddim(
                schedule, w_teacher, 2, shape, torch.Generator().manual_seed(seed), cond=cond
            )
            one = sample_ddim(
                schedule, student, 1, shape, torch.Generator().manual_seed(seed), cond=cond
            )
            gaps.append(float((one - two).abs().mean()))
        return float(np.mean(gaps))

    def loss(model, x0, mask, n, text, gen):
        cond = block_cond(n, text, draw_w(len(n), 0.0, 3.0, gen))
        student_output, teacher_output = partial(model, **cond), partial(w_teacher, **cond)
        return progressive_loss(student_output, teacher_output, schedule, 1, x0, mask, gen)

    before = gap()
    train(loss, student, steps=80)
    after = gap()
    assert after < 0.9 * before, (before, after)


@pytest.mark.parametrize(
    ("progressive", "pinned"), [(False, 0.04085296392440796), (True, 0.23508396744728088)]
)
def test_round_loss_matches_the_loss_before_the_core_split(progressive, pinned):
    """`distill.fit.round_loss` on a tiny generator teacher (guided) with a student whose w
    matters: the values the code gave before the diffusion core was split out (commit
    b9e861d), reproduced bit for bit; the tolerance only leaves room for other BLAS builds."""
    source = tiny_generator()
    with torch.random.fork_rng():
        torch.manual_seed(0)
        torch.nn.init.normal_(source.denoiser.null_text, std=1.0)
        torch.manual_seed(1)
        round_ = Round("r", 2, progressive)
        student = student_denoiser(source, source.config, round_)
        torch.nn.init.normal_(student.extra_mlp.net[-1].weight, std=0.3)
    layout, gen = source.layout, torch.Generator().manual_seed(2)
    batch = {
        "x": torch.randn(10, layout.block_size, generator=gen),
        "mask": torch.ones(10, layout.block_size, dtype=torch.bool),
        "n": torch.randint(0, layout.n_blocks, (10,), generator=gen),
    }
    batch["mask"][:, -2:] = False
    text = torch.randn(10, 3, source.text_dim, generator=gen)
    schedule = denoiser_schedule(source.config.denoiser)
    with torch.no_grad():
        loss = round_loss(
            round_, student, source, schedule, batch, text, source.config,
            torch.Generator().manual_seed(3),
        )  # fmt: skip
    assert loss.item() == pytest.approx(pinned, rel=1e-5)


def test_a_w_student_folder_loads_and_generates_with_w_as_its_input(tmp_path):
    source = tiny_generator()
    holder = source.denoiser
    student = student_denoiser(source, source.config, Round("w", 2, progressive=False))
    torch.nn.init.normal_(student.extra_mlp.net[-1].weight, std=0.3)
    made = WeightGenerator(
        source.config, student, source.codec, source.manifest, "minilm", source.text_dim,
        source.base,
    )  # fmt: skip
    assert made.guidance_input and holder is source.denoiser
    loaded = WeightGenerator.load(made.save(tmp_path / "student"))
    assert loaded.guidance_input
    calls = []
    hook = loaded.denoiser.register_forward_hook(lambda m, a, out: calls.append(a[0].shape[0]))
    try:
        at = {w: loaded.generate_from_embedding(embedding(), 1, 0, w) for w in (0.0, 2.0)}
    finally:
        hook.remove()
    assert calls == [loaded.layout.n_blocks] * 2, "one pass of N blocks per step, no null half"
    assert any(not torch.equal(at[0.0][k], at[2.0][k]) for k in at[0.0])


def test_guided_generation_runs_both_halves_in_one_forward():
    generator = tiny_generator()
    calls = []
    hook = generator.denoiser.register_forward_hook(lambda m, a, out: calls.append(a[0].shape[0]))
    try:
        plain = generator.generate_from_embedding(embedding(), 1, 0, 0.0)
        guided = generator.generate_from_embedding(embedding(), 1, 0, 2.0)
    finally:
        hook.remove()
    assert calls == [generator.layout.n_blocks, 2 * generator.layout.n_blocks]
    assert any(not torch.equal(plain[k], guided[k]) for k in plain)
    with pytest.raises(ValueError, match="guidance"):
        generator.generate_from_embedding(embedding(), 1, 0, -1.0)


def bench_baselines(generator: WeightGenerator, out, bench_guidance: float):
    """The least of `Baselines` that the generated methods read: the run folder, the config
    (distill.bench_guidance) and the checkpoints novelty is measured against."""
    from wgen.bench.methods import Baselines
    from wgen.generator.baselines import TrainingSet

    config = copy.deepcopy(generator.config)
    config.distill.bench_guidance = bench_guidance
    total = sum(generator.manifest.group_lengths)
    return Baselines(
        config=config,
        manifest=generator.manifest,
        data=TrainingSet(["c0"], np.zeros((1, total), np.float32), [np.zeros((1, 4))]),
        programs={},
        checkpoints=np.zeros((1, total), np.float32),
        checkpoint_concepts=["c0"],
        encoder="minilm",
        cache_dir=out,
        out=out,
    )


def test_bench_methods_guided_and_distilled(tmp_path):
    from wgen.bench.methods import METHODS, initial_weights
    from wgen.core.errors import InputFileError

    teacher = tiny_generator()
    baselines = bench_baselines(teacher, tmp_path, bench_guidance=2.0)
    assert {"wgen-cfg", "wgen-distilled-1", "wgen-distilled-4"} <= set(METHODS)
    plain = initial_weights("wgen-1", 0, "sepia tone", None, baselines, teacher)
    guided = initial_weights("wgen-cfg", 0, "sepia tone", None, baselines, teacher)
    assert any(not torch.equal(plain.state[k], guided.state[k]) for k in plain.state)
    with pytest.raises(InputFileError, match="wgen distill"):
        initial_weights("wgen-distilled-1", 0, "sepia tone", None, baselines, teacher)
    student = student_denoiser(teacher, teacher.config, Round("w", 4, progressive=False))
    WeightGenerator(
        teacher.config, student, teacher.codec, teacher.manifest, "minilm", teacher.text_dim,
        teacher.base,
    ).save(tmp_path / "distill" / "w")  # fmt: skip
    for method, steps in (("wgen-distilled-4", 4), ("wgen-distilled-1", 1)):
        init = initial_weights(method, 0, "sepia tone", None, baselines, teacher)
        # a new w-student is its teacher at every w: the unguided teacher's LoRA
        expected = teacher.generate("sepia tone", steps, 0)[0]
        for key in expected:
            torch.testing.assert_close(init.state[key], expected[key])
