import pytest

from wgen.config import PRESETS, Config, ConfigError, load_config


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_resolves_and_round_trips_through_yaml(preset, tmp_path):
    config = load_config(preset)
    assert config.preset == preset
    path = config.save(tmp_path / "config.yaml")
    assert Config.load(path) == config


def test_set_overrides_coerce_to_the_field_type():
    config = load_config("tiny", ["collect.actors=3", "lora.lr=5e-4", "train.use_gpu=true"])
    assert config.collect.actors == 3
    assert config.lora.lr == pytest.approx(5e-4)
    assert config.train.use_gpu is True


def test_optional_and_list_fields_accept_none_and_commas():
    config = load_config("demo", ["collect.max_concepts=none", "lora.targets=down.0,up.1"])
    assert config.collect.max_concepts is None
    assert config.lora.targets == ["down.0", "up.1"]
    for written in ("[mlp]", '["mlp"]'):  # YAML's flow list, as the presets write lists
        assert load_config("demo", [f"pdiff.settings={written}"]).pdiff.settings == ["mlp"]
    assert load_config("demo", ["pdiff.noise_scales=[0.1, 0.3]"]).pdiff.noise_scales == [0.1, 0.3]
    with pytest.raises(ConfigError, match=r"write a,b or \[a, b\]"):
        load_config("demo", ["pdiff.settings=[mlp"])


def test_unknown_key_names_the_key_and_the_valid_ones():
    with pytest.raises(ConfigError) as err:
        load_config("demo", ["collect.actorz=2"])
    message = str(err.value)
    assert "collect.actorz" in message
    assert "actors" in message and "k_checkpoints" in message


def test_unknown_section_lists_sections():
    with pytest.raises(ConfigError, match="valid sections"):
        load_config("demo", ["colect.actors=2"])


def test_wrong_type_names_the_key():
    with pytest.raises(ConfigError, match="collect.actors: expected an integer"):
        load_config("demo", ["collect.actors=two"])
    with pytest.raises(ConfigError, match="train.use_gpu: expected true or false"):
        load_config("demo", ["train.use_gpu=maybe"])


def test_malformed_set_and_unknown_preset():
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config("demo", ["collect.actors"])
    with pytest.raises(ConfigError, match="valid presets"):
        load_config("huge")


def test_config_yaml_with_unknown_key_is_rejected(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("collect:\n  actorz: 2\n")
    with pytest.raises(ConfigError, match="collect.actorz"):
        Config.load(path)


def test_a_generator_seed_is_another_run_and_epochs_continue_the_same_one() -> None:
    from wgen.generator.fit import run_name

    base = load_config("tiny")
    assert run_name(load_config("tiny", ["train.seed=1"])) != run_name(base)
    assert run_name(load_config("tiny", ["train.epochs=99"])) == run_name(base)


def test_a_field_added_later_is_left_out_of_run_digests_while_off():
    """Run names and search fingerprints of folders made before the field existed still
    match after an upgrade, so they resume; switched on, it is another run."""
    from wgen.core.runfolder import without_later_fields_off
    from wgen.generator.fit import run_name

    off = load_config("tiny")
    assert "block_readout" not in without_later_fields_off(off.to_dict())["denoiser"]
    assert "block_readout" in off.to_dict()["denoiser"]  # the config itself is untouched
    on = load_config("tiny", ["denoiser.block_readout=8"])
    assert without_later_fields_off(on.to_dict())["denoiser"]["block_readout"] == 8
    assert run_name(on) != run_name(off)
    # how a model is trained and which epoch is exported: the same run, the same search
    for later in ("train.lr_schedule=cosine", "train.export=best"):
        assert run_name(load_config("tiny", [later])) == run_name(off)
    assert "lr_schedule" not in without_later_fields_off(off.to_dict())["train"]
    # trained on fewer concepts (a learning curve): another model
    assert run_name(load_config("tiny", ["train.max_train_concepts=3"])) != run_name(off)


def test_train_worker_resources_reach_ray_train_and_leave_the_run_unchanged():
    """Custom resources place the workers (e.g. on the nodes that declare ``trainer``); they
    do not define the model, so a run continues under another placement."""
    from wgen.core.runfolder import stage_fields
    from wgen.generator.fit import run_name, scaling_config

    pinned = load_config("tiny", ["train.worker_resources={trainer: 1}", "train.workers=2"])
    scaling = scaling_config(pinned.train)
    assert scaling.num_workers == 2
    assert scaling.resources_per_worker == {"CPU": 1.0, "trainer": 1}
    assert scaling_config(load_config("tiny").train).resources_per_worker == {"CPU": 1.0}
    assert run_name(pinned) == run_name(load_config("tiny"))
    assert "train.worker_resources" not in stage_fields(pinned, "train")


def test_the_bench_rule_is_the_bench_s_evaluation_schedule_cap_and_growing_window():
    from wgen.bench.stage import bench_monitor, bench_rule

    config = load_config("tiny", ["bench.max_steps=35", "bench.tolerance=0.03"])
    rule = bench_rule(config).collect
    assert (rule.eval_every, rule.max_steps, rule.tolerance) == (5, 35, 0.03)
    monitor = bench_monitor(config.bench)
    assert (monitor.window_steps, monitor.window_fraction) == (10, 0.5)
