"""The bench record: which earlier runs a re-run may keep."""

from __future__ import annotations

from wgen.bench.stage import bench_differences, bench_fields, generator_field
from wgen.config import load_config
from wgen.core.runfolder import fingerprint


def record(out, config, generator_dir):
    fields = bench_fields(out, config, generator_dir)
    return {"fingerprint": fingerprint(fields), "fields": fields}


def test_a_generator_inside_the_run_folder_is_named_relative_to_it(tmp_path):
    assert generator_field(tmp_path, tmp_path / "generator") == "generator"
    assert generator_field(tmp_path, tmp_path.parent / "gen") == str(tmp_path.parent / "gen")
    assert generator_field(tmp_path, None) is None


def test_another_hosts_staging_copy_continues_the_same_bench(tmp_path):
    config = load_config("tiny")
    host_a, host_b = tmp_path / "a" / "run", tmp_path / "b" / "run"
    made_on_a = record(host_a, config, host_a / "generator")
    assert (
        bench_differences(host_b, made_on_a, bench_fields(host_b, config, host_b / "generator"))
        == []
    )


def test_a_record_with_the_absolute_path_of_its_own_generator_still_matches(tmp_path):
    config = load_config("tiny")
    old = record(tmp_path, config, tmp_path / "generator")
    old["fields"]["generator"] = str(tmp_path / "generator")  # as records were written before
    assert (
        bench_differences(tmp_path, old, bench_fields(tmp_path, config, tmp_path / "generator"))
        == []
    )


def test_another_generator_or_rule_is_another_bench(tmp_path):
    config = load_config("tiny")
    old = record(tmp_path, config, tmp_path / "generator")
    elsewhere = bench_fields(tmp_path, config, tmp_path.parent / "other")
    assert any(d.startswith("generator:") for d in bench_differences(tmp_path, old, elsewhere))
    stricter = bench_fields(
        tmp_path, load_config("tiny", ["bench.window_steps=20"]), tmp_path / "generator"
    )
    assert bench_differences(tmp_path, old, stricter) == ["bench.window_steps: 10 → 20"]


def test_a_bench_that_ran_no_generator_goes_on_with_one(tmp_path):
    config = load_config("tiny")
    without = record(tmp_path, config, None)  # scratch and lora-zero only
    with_generator = bench_fields(tmp_path, config, tmp_path / "generator")
    assert bench_differences(tmp_path, without, with_generator) == []
    # ... but a bench that ran one generator is not continued with another
    ran_one = record(tmp_path, config, tmp_path / "generator")
    assert bench_differences(tmp_path, ran_one, bench_fields(tmp_path, config, None))
