"""A resumed bench reads hyper from its cache instead of refitting it; a cache fitted on
other fields, or a damaged one, is refit (it is a cache, not an input)."""

import torch

from wgen.bench.methods import HYPER_CACHE, cached_hyper
from wgen.generator.baselines import Hyper


def fitted_hyper(seed: int) -> Hyper:
    torch.manual_seed(seed)
    model = Hyper(text_dim=8, n_values=12, hidden=16)
    torch.nn.init.normal_(model.out.weight)  # not the zero init: a refit would show
    return model


def test_the_second_call_reads_the_cache_and_other_fields_refit(tmp_path):
    fits = []

    def fit(seed=0):
        fits.append(seed)
        return fitted_hyper(seed)

    first, first_cached = cached_hyper(tmp_path, {"epochs": 60}, fit)
    again, again_cached = cached_hyper(tmp_path, {"epochs": 60}, lambda: fit(1))
    assert fits == [0] and (first_cached, again_cached) == (False, True)
    embedding = torch.randn(3, 8)
    assert torch.equal(first(embedding), again(embedding))

    other, _ = cached_hyper(tmp_path, {"epochs": 90}, lambda: fit(2))
    assert fits == [0, 2]
    assert not torch.equal(first(embedding), other(embedding))


def test_a_damaged_cache_is_refit_and_overwritten(tmp_path):
    cached_hyper(tmp_path, {"epochs": 60}, lambda: fitted_hyper(0))
    path = tmp_path / HYPER_CACHE
    path.write_bytes(path.read_bytes()[:50])
    refit, refit_cached = cached_hyper(tmp_path, {"epochs": 60}, lambda: fitted_hyper(3))
    reread, _ = cached_hyper(tmp_path, {"epochs": 60}, lambda: fitted_hyper(4))
    assert not refit_cached
    embedding = torch.randn(2, 8)
    assert torch.equal(refit(embedding), reread(embedding))
    assert torch.equal(refit(embedding), fitted_hyper(3)(embedding))


def test_no_cache_folder_fits_every_time():
    fits = []
    cached_hyper(None, {"epochs": 60}, lambda: fits.append(1) or fitted_hyper(0))
    cached_hyper(None, {"epochs": 60}, lambda: fits.append(1) or fitted_hyper(0))
    assert len(fits) == 2
