"""The weight generator on tiny models: generation, its folder round trip, clear errors."""

from __future__ import annotations

import logging
import shutil
import warnings

import numpy as np
import pytest
import torch
from peft import PeftModel

from wgen.config import load_config
from wgen.core.runtime import torch_threads
from wgen.gan.base_model import GanBaseModel
from wgen.gan.lora import load_adapter, trainable_state_dict
from wgen.gan.training import BaseGAN, lora_generator, weight_manifest
from wgen.generator.checkpoint import ADAPTER_MARK, GeneratorFolderError, WeightGenerator
from wgen.generator.generate import run_generate
from wgen.models.denoiser import build_denoiser
from wgen.models.gan import GAN_SIZES, build_discriminator, build_generator, fingerprint
from wgen.weights.blocks import BlockLayout
from wgen.weights.codec import BlockCodec
from wgen.weights.format import WeightFormatError, flatten

TEXT_DIM = 384  # MiniLM's width: write_adapter embeds with the real packaged encoder


def tiny_base(seed: int = 0) -> BaseGAN:
    generator = build_generator("tiny", seed=seed)
    return BaseGAN(
        size="tiny",
        generator=generator.state_dict(),
        discriminator=build_discriminator("tiny", seed=seed + 1).state_dict(),
        fingerprint=fingerprint(generator, "tiny"),
    )


def tiny_generator(seed: int = 0, block_readout: int = 0) -> WeightGenerator:
    """An untrained generator with real statistics: LoRA states at three different inits.
    Its denoiser's output layer (and block readout) gets random weights (they start at
    zero), so the noise seed and the text show in what it generates, as in a trained one."""
    config = load_config("tiny", [f"denoiser.block_readout={block_readout}"])
    base = tiny_base()
    manifest = weight_manifest(base, config.lora)
    layout = BlockLayout.from_lengths(manifest.group_lengths, config.denoiser.block_size)
    rows = []
    for init_seed in range(seed, seed + 3):
        config.lora.init_seed = init_seed
        rows.append(flatten(trainable_state_dict(lora_generator(base, config.lora)), manifest))
    config.lora.init_seed = seed
    codec = BlockCodec.fit(rows, layout, center=True)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        denoiser = build_denoiser(config.denoiser, TEXT_DIM, n_blocks=layout.n_blocks)
        torch.nn.init.normal_(denoiser.conv_out.weight, std=0.3)
        if denoiser.readout is not None:
            torch.nn.init.normal_(denoiser.readout.weight, std=0.3)
    return WeightGenerator(
        config,
        denoiser,
        codec,
        manifest,
        "minilm",
        TEXT_DIM,
        GanBaseModel(base, config.lora, config.collect),
    )


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread, as generation runs (two threads on a busy 2-core CPU were 30x slower)."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def generator(one_thread) -> WeightGenerator:
    return tiny_generator()


def embedding(seed: int = 0, tokens: int = 5) -> np.ndarray:
    """Token states of one text, as the default (token) text view reads them."""
    return np.random.default_rng(seed).standard_normal((tokens, TEXT_DIM)).astype(np.float32)


def assert_same_state(a: dict, b: dict) -> None:
    assert list(a) == list(b)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)


@pytest.mark.parametrize("steps", [1, 3])
def test_one_batched_forward_per_step_covers_every_block(generator, steps):
    batches = []
    hook = generator.denoiser.register_forward_hook(
        lambda m, args, out: batches.append(args[0].shape[0])
    )
    try:
        state = generator.generate_from_embedding(embedding(), steps=steps)
    finally:
        hook.remove()
    assert batches == [generator.layout.n_blocks] * steps
    assert list(state) == generator.manifest.keys
    # the state fits the base GAN's LoRA layers
    lora_generator(generator.base.gan, generator.config.lora, state)


def test_generation_is_deterministic_per_seed(generator):
    first = generator.generate_from_embedding(embedding(), seed=3)
    assert_same_state(first, generator.generate_from_embedding(embedding(), seed=3))
    other = generator.generate_from_embedding(embedding(), seed=4)
    assert any(not torch.equal(first[k], other[k]) for k in first)


@pytest.mark.parametrize("block_readout", [0, 4])
def test_save_load_round_trip_generates_identically(tmp_path, block_readout):
    generator = tiny_generator(block_readout=block_readout)
    generator.save(tmp_path / "gen")
    loaded = WeightGenerator.load(tmp_path / "gen")
    assert loaded.fingerprint == generator.fingerprint and loaded.text_dim == TEXT_DIM
    for steps in (1, 3):
        assert_same_state(
            generator.generate_from_embedding(embedding(), steps=steps, seed=1),
            loaded.generate_from_embedding(embedding(), steps=steps, seed=1),
        )


def test_a_folder_with_missing_files_names_them(generator, tmp_path):
    folder = generator.save(tmp_path / "gen")
    (folder / "denoiser.safetensors").unlink()
    shutil.rmtree(folder / "base")
    with pytest.raises(GeneratorFolderError) as err:
        WeightGenerator.load(folder)
    message = str(err.value)
    assert "denoiser.safetensors" in message and "base/base.json" in message
    assert "block_codec.safetensors" in message, "the message lists what the folder should hold"
    with pytest.raises(GeneratorFolderError, match="no generator folder"):
        WeightGenerator.load(tmp_path / "absent")


def test_another_base_fingerprint_is_refused_naming_both(generator):
    other = tiny_base(seed=123).fingerprint
    with pytest.raises(WeightFormatError) as err:
        generator.check_base(other)
    assert other in str(err.value) and generator.fingerprint in str(err.value)
    with pytest.raises(WeightFormatError):
        WeightGenerator(
            generator.config, generator.denoiser, generator.codec, generator.manifest,
            "minilm", TEXT_DIM,
            GanBaseModel(tiny_base(seed=123), generator.config.lora, generator.config.collect),
        )  # fmt: skip


def test_a_codec_of_another_block_size_is_refused(generator):
    rows = [flatten(generator.generate_from_embedding(embedding()), generator.manifest)]
    layout = BlockLayout.from_lengths(generator.manifest.group_lengths, 7)
    with pytest.raises(ValueError, match="block codec"):
        WeightGenerator(
            generator.config, generator.denoiser, BlockCodec.fit(rows, layout, center=True),
            generator.manifest, "minilm", TEXT_DIM, generator.base,
        )  # fmt: skip


def test_write_adapter_loads_into_the_base_with_peft(generator, tmp_path):
    path, seconds = generator.write_adapter("strong sepia tone", tmp_path / "adapter", seed=2)
    assert seconds > 0
    model = load_adapter(generator.base.gan.build_generator(), path, generator.fingerprint)
    expected, _ = generator.generate("strong sepia tone", seed=2)
    assert_same_state(trainable_state_dict(model), expected)
    with pytest.raises(ValueError, match="empty"):
        generator.write_adapter("  ", tmp_path / "adapter2")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        generator.write_adapter("sepia", tmp_path / "notes")
    assert (tmp_path / "notes" / "keep.txt").exists()
    # an adapter an earlier version wrote (peft's files, no wgen mark) is replaced
    path.joinpath(ADAPTER_MARK).unlink()
    generator.write_adapter("sepia", path, seed=2)
    assert (path / ADAPTER_MARK).exists()


def test_a_generated_adapter_loads_with_plain_peft_like_wgen(generator, tmp_path, caplog):
    path, _ = generator.write_adapter("strong sepia tone", tmp_path / "adapter", seed=2)
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.WARNING):
        warnings.simplefilter("always")
        peft_model = PeftModel.from_pretrained(generator.base.gan.build_generator(), str(path))
    assert [str(w.message) for w in caught] == []
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    wgen_model = load_adapter(generator.base.gan.build_generator(), path, generator.fingerprint)
    side = GAN_SIZES["tiny"].image_size
    x = torch.rand(2, 3, side, side, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        assert torch.equal(peft_model(x), wgen_model(x))
        assert not torch.equal(peft_model(x), generator.base.gan.build_generator()(x))


def test_run_generate_gives_the_caller_its_thread_count_back(generator, tmp_path):
    folder = generator.save(tmp_path / "gen")
    assert generator.config.generate.threads == 1
    with torch_threads(2):
        result = run_generate(folder, "strong sepia tone", tmp_path / "adapter", seed=2)
        assert torch.get_num_threads() == 2
    assert (tmp_path / "adapter" / "adapter_model.safetensors").exists()
    assert result["seed"] == 2


def test_export_best_writes_the_best_probed_epochs_weights(tmp_path):
    """A Ray Train checkpoint of epoch 3 that holds epoch 2's weights as the best: "best"
    exports those (with epoch 2's metrics), "last" the checkpoint's own."""
    from ray.train import Checkpoint

    from wgen.generator.fit import TrainState, export_generator, save_checkpoint

    generator = tiny_generator()
    last = {k: v.clone() for k, v in generator.denoiser.state_dict().items()}
    best = {k: v + 0.5 if v.is_floating_point() else v.clone() for k, v in last.items()}
    history = [{"epoch": 1}, {"epoch": 2, "quality_l1": 0.1}, {"epoch": 3, "quality_l1": 0.2}]
    state = TrainState(epoch=3, history=history, best_epoch=2, best_score=0.1)
    optimizer = torch.optim.AdamW(generator.denoiser.parameters())
    save_checkpoint(tmp_path / "ckpt", generator, optimizer, state, best)
    checkpoint = Checkpoint.from_directory(str(tmp_path / "ckpt"))

    chosen = export_generator(checkpoint, tmp_path / "best", "best")
    assert chosen.info["epoch"] == 2 and chosen.info["epochs_trained"] == 3
    assert chosen.info["metrics"]["quality_l1"] == 0.1
    assert_same_state(WeightGenerator.load(tmp_path / "best").denoiser.state_dict(), best)
    kept = export_generator(checkpoint, tmp_path / "last", "last")
    assert kept.info["exported"] == "last" and kept.info["epochs_trained"] == 3
    assert_same_state(WeightGenerator.load(tmp_path / "last").denoiser.state_dict(), last)
