"""The checks of ``data.*`` before Ray starts (`wgen.core.stages`): counts, the editor and its
model folder, the photos.
"""

from __future__ import annotations

import functools

from wgen.config import Config, ConfigError, DataConfig, at_least, need, positive
from wgen.data.concepts import make_concepts
from wgen.data.editors import EDITORS
from wgen.data.images import builtin_photos, load_photos


def validate(config: Config) -> None:
    """The concept → image-pair stage: counts, editor and its model folder, the photos."""
    data = config.data
    at_least(data, "seed", 0)
    at_least(data, "image_size", 8, "side of the square crops, pixels")
    at_least(data, "n_train_concepts", 1)
    at_least(data, "pairs_per_concept", 1)
    at_least(data, "crops_per_photo", 1)
    at_least(data, "editor_actors", 1, "Ray actors editing images side by side")
    positive(data, "editor_cpus", "logical CPUs per editor actor; fractions are fine")
    at_least(data, "editor_gpus", 0)
    for name in ("editor_batch_size", "editor_max_batch", "editor_steps", "rows_per_shard"):
        at_least(data, name, 1)
    need(data.editor in EDITORS, "data.editor", data.editor, f"valid editors: {', '.join(EDITORS)}")
    if data.editor == "instruct-pix2pix":
        from wgen.data.editors.instruct_pix2pix import check_model_dir

        need(
            bool(data.editor_model_dir),
            "data.editor_model_dir",
            data.editor_model_dir,
            "data.editor=instruct-pix2pix needs a local diffusers InstructPix2Pix folder "
            "(nothing is downloaded at run time)",
        )
        try:
            check_model_dir(data.editor_model_dir)
        except FileNotFoundError as err:
            raise ConfigError(f"data.editor_model_dir: {err}") from None
    try:
        make_concepts(data)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    n_crops = data.crops_per_photo * _count_photos(data)
    need(
        data.pairs_per_concept <= n_crops,
        "data.pairs_per_concept",
        data.pairs_per_concept,
        f"more than the {n_crops} crops in the pool; raise data.crops_per_photo",
    )


def _count_photos(data: DataConfig) -> int:
    if not data.images_dir:
        return _count_builtin_photos()
    try:
        return len(load_photos(data))
    except ValueError as err:
        raise ConfigError(f"data.images_dir: {err}") from None


@functools.cache
def _count_builtin_photos() -> int:
    """The photographs shipped in scikit-image / scikit-learn do not change within a process."""
    count = len(builtin_photos())
    if not count:
        raise ConfigError(
            "data.images_dir: no built-in photographs found in scikit-image / scikit-learn; "
            "set it to a folder of JPEG or PNG photos"
        )
    return count
