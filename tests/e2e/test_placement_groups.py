"""Placement groups that a killed actor left reserved are released, and nothing else is:
what keeps a Tune search going after ASHA stops trials (`wgen.core.runtime`)."""

from __future__ import annotations

import time

import pytest

from wgen.core.runtime import releasing_orphaned_placement_groups, remove_orphaned_placement_groups

pytestmark = [pytest.mark.ray, pytest.mark.timeout(120)]


def states(ray, ids: list[str]) -> list[str]:
    from ray.util.placement_group import placement_group_table

    table = placement_group_table()
    return [table[i]["state"] for i in ids]


def test_only_the_groups_of_dead_actors_are_released(ray_local):
    ray = ray_local
    from ray.util.placement_group import placement_group, remove_placement_group

    @ray.remote(num_cpus=0)
    class Controller:  # as Ray Train's controller reserves its worker group
        def reserve(self) -> str:
            group = placement_group([{"CPU": 0.5}])
            ray.get(group.ready())
            return group.id.hex()

    drivers = placement_group([{"CPU": 0.5}])  # as Tune reserves each trial's
    ray.get(drivers.ready())
    killed, alive = Controller.remote(), Controller.remote()
    ids = [drivers.id.hex(), ray.get(killed.reserve.remote()), ray.get(alive.reserve.remote())]
    try:
        assert remove_orphaned_placement_groups() == 0  # every creator still alive
        ray.kill(killed)
        deadline = time.monotonic() + 30
        with releasing_orphaned_placement_groups(every_s=0.5):
            while states(ray, ids)[1] != "REMOVED" and time.monotonic() < deadline:
                time.sleep(0.5)
        assert states(ray, ids) == ["CREATED", "REMOVED", "CREATED"]
    finally:
        ray.kill(alive)
        remove_placement_group(drivers)
        remove_orphaned_placement_groups()
