"""Text encoders τ: packaged MiniLM (offline); any sentence-transformers folder and CLIP, each
on a tiny random model built here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from wgen.generator.text import (
    CLIPTextEncoder,
    MiniLMEncoder,
    SentenceTransformerEncoder,
    TextEncoder,
    build_text_encoder,
    embed_concepts,
)


@pytest.fixture(scope="module")
def minilm() -> MiniLMEncoder:
    return MiniLMEncoder()


def test_minilm_is_384d_and_deterministic(minilm: MiniLMEncoder) -> None:
    texts = ["strong sepia tone with a soft vignette", "pixelate the image"]
    first = minilm.encode(texts)
    assert isinstance(minilm, TextEncoder)
    assert minilm.dim == 384 and first.shape == (2, 384) and first.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(first, minilm.encode(texts))


def test_minilm_similar_texts_are_closer(minilm: MiniLMEncoder) -> None:
    anchor, paraphrase, unrelated = minilm.encode(
        ["warm sepia tone", "a brownish sepia colour tone", "heavy pixelation into big squares"]
    )
    assert anchor @ paraphrase > anchor @ unrelated + 0.1


def test_build_text_encoder_minilm(minilm: MiniLMEncoder) -> None:
    assert isinstance(build_text_encoder("minilm"), MiniLMEncoder)


def test_embed_concepts_once_per_text_and_rejects_empty(minilm: MiniLMEncoder) -> None:
    table = embed_concepts(minilm, ["blur", "sepia", "blur"])
    assert list(table) == ["blur", "sepia"]
    np.testing.assert_allclose(table["blur"], minilm.encode(["blur"])[0], atol=1e-6)
    with pytest.raises(ValueError, match="concept text is empty"):
        embed_concepts(minilm, ["blur", "   "])
    with pytest.raises(ValueError, match="concept text is empty"):
        embed_concepts(minilm, [""])


@pytest.fixture(scope="module")
def tiny_sentence_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-layer BERT with mean pooling, saved as sentence-transformers saves models."""
    from sentence_transformers import SentenceTransformer, models
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder = tmp_path_factory.mktemp("tiny_sentence_model")
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "warm", "sepia", "tone", "pixel", "blur"]
    (folder / "vocab.txt").write_text("\n".join(words) + "\n")
    BertTokenizerFast(vocab_file=str(folder / "vocab.txt")).save_pretrained(folder / "bert")
    config = BertConfig(
        vocab_size=len(words),
        hidden_size=24,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
    )
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder / "bert")
    transformer = models.Transformer(str(folder / "bert"), max_seq_length=32)
    pooling = models.Pooling(config.hidden_size, pooling_mode="mean")
    saved = folder / "model"
    SentenceTransformer(modules=[transformer, pooling], device="cpu").save(str(saved))
    return saved


def test_a_local_sentence_transformers_folder_is_its_own_encoder(
    tiny_sentence_model_dir: Path,
) -> None:
    encoder = build_text_encoder(str(tiny_sentence_model_dir))
    assert type(encoder) is SentenceTransformerEncoder and isinstance(encoder, TextEncoder)
    assert encoder.name == str(tiny_sentence_model_dir) and encoder.dim == 24
    texts = ["warm sepia tone", "pixel blur", "warm sepia tone"]
    vectors = encoder.encode(texts)
    assert vectors.shape == (3, 24) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(vectors[0], vectors[2], atol=1e-6)
    assert not np.allclose(vectors[0], vectors[1])
    # Token states: [CLS] + 3 words + [SEP]; their mean is the pooled vector before norming.
    states = encoder.encode_tokens(texts[:1])[0]
    assert states.shape == (5, 24)
    mean = states.mean(axis=0)
    np.testing.assert_allclose(mean / np.linalg.norm(mean), vectors[0], atol=1e-5)


def test_a_folder_without_modules_json_is_not_a_sentence_model(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not a sentence-transformers folder"):
        SentenceTransformerEncoder(tmp_path)


# A tiny byte-level BPE vocabulary, as transformers' own CLIP tokenizer tests write it.
VOCAB = [
    "l", "o", "w", "e", "r", "s", "t", "i", "d", "n", "a", "p", "h",
    "lo", "l</w>", "w</w>", "r</w>", "t</w>", "a</w>", "e</w>", "s</w>", "n</w>", "d</w>",
    "low</w>", "er</w>", "lowest</w>", "newer</w>", "wider", "<unk>",
    "<|startoftext|>", "<|endoftext|>",
]  # fmt: skip
MERGES = [("l", "o"), ("lo", "w</w>"), ("e", "r</w>")]


@pytest.fixture(scope="module")
def tiny_clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    folder = tmp_path_factory.mktemp("tiny_clip")
    tokenizer = CLIPTokenizer(
        vocab={token: i for i, token in enumerate(VOCAB)}, merges=MERGES, unk_token="<unk>"
    )
    tokenizer.save_pretrained(folder)
    config = CLIPTextConfig(
        vocab_size=len(VOCAB),
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=32,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    CLIPTextModel(config).eval().save_pretrained(folder)
    return folder


def test_clip_encoder_from_local_folder(tiny_clip_dir: Path) -> None:
    encoder = build_text_encoder(str(tiny_clip_dir))
    assert isinstance(encoder, CLIPTextEncoder) and isinstance(encoder, TextEncoder)
    texts = ["lower sepia", "newer and wider", "low"]
    vectors = encoder.encode(texts)
    assert encoder.dim == 32 and vectors.shape == (3, 32) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # Deterministic, independent of batching, and different texts differ.
    np.testing.assert_allclose(vectors[2], encoder.encode(["low"])[0], atol=1e-5)
    assert not np.allclose(vectors[0], vectors[1])


def test_clip_missing_local_folder_names_it(tmp_path: Path) -> None:
    missing = tmp_path / "no_such_clip"
    with pytest.raises(FileNotFoundError, match="no_such_clip"):
        build_text_encoder(str(missing))


def test_clip_uncached_hub_name_offline_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="wgen-test/not-a-real-clip"):
        build_text_encoder("wgen-test/not-a-real-clip")


def test_encoder_vocabulary_probe_scores_every_reserved_phrase(
    tiny_sentence_model_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch
) -> None:
    """benchmarks/encoder_vocabulary.py: one reserved noun and adjective per primitive, each
    scored against the seen phrases by the encoder it is given."""
    import importlib.util
    import re
    import sys

    from wgen.data.concepts import PRIMITIVES

    script = Path(__file__).resolve().parents[2] / "benchmarks" / "encoder_vocabulary.py"
    spec = importlib.util.spec_from_file_location("encoder_vocabulary", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    seen, reserved = module.vocabulary()
    assert len(reserved) == 2 * len(PRIMITIVES)
    assert not {p for _, p in reserved} & {p for _, p in seen}
    monkeypatch.setattr(
        sys, "argv", ["encoder_vocabulary.py", "--encoder", str(tiny_sentence_model_dir)]
    )
    module.main()
    first = capsys.readouterr().out.splitlines()[0]
    found = re.search(r"right primitive for (\d+)/(\d+) reserved phrases", first)
    assert found and int(found[2]) == len(reserved) and 0 <= int(found[1]) <= len(reserved)
    assert "(24-d)" in first
