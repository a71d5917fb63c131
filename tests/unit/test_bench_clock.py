"""The load-normalised clock: runs that train the same thing and took different wall times
for the same steps read the same time; the cost of a step of what a method trains and the
method's own generation time stay."""

import pytest

from wgen.bench import clock


def run(method, seconds_per_step, generation, steps=(0, 10, 20), converged_at=10):
    return {
        "method": method,
        "generation_seconds": generation,
        "steps_to_converge": converged_at,
        "time_to_converge_s": None
        if converged_at is None
        else generation + converged_at * seconds_per_step,
        "history": [{"step": s, "train_seconds": s * seconds_per_step} for s in steps],
    }


def test_runs_of_one_method_read_their_methods_median_cost():
    runs = [
        run("lora-zero", 0.1, 0.0),
        run("lora-zero", 0.1, 0.0),
        run("lora-zero", 0.5, 0.0),  # the same work on a loaded machine
        run("wgen-1", 0.1, 2.0),
        run("wgen-1", 0.1, 4.0),
        run("wgen-1", 0.7, 3.0),
        run("scratch", 0.3, 0.0),
        run("scratch", 0.3, 0.0),
    ]
    costs = clock.normalise(runs)
    # every LoRA run's step costs the same: one median over lora-zero's and wgen-1's runs
    assert costs["lora-zero"]["seconds_per_step"] == pytest.approx(0.1)
    assert costs["wgen-1"]["seconds_per_step"] == pytest.approx(0.1)
    assert costs["scratch"]["seconds_per_step"] == pytest.approx(0.3)
    assert costs["wgen-1"]["generation_seconds"] == pytest.approx(3.0)
    assert runs[2]["time_to_converge_s"] == pytest.approx(1.0)  # 10 steps × 0.1 s
    assert runs[2]["history"][-1]["train_seconds"] == pytest.approx(2.0)
    assert runs[2]["wall"]["train_seconds"][-1] == pytest.approx(10.0)  # kept as measured
    assert runs[3]["time_to_converge_s"] == pytest.approx(4.0)  # 3 s generation + 1 s


def test_a_run_that_never_converged_stays_never():
    runs = [run("scratch", 0.3, 0.0, converged_at=None)]
    clock.normalise(runs)
    assert runs[0]["time_to_converge_s"] is None
