"""Simulated devices: deterministic, load follows `set_busy`, stable identities."""

from __future__ import annotations

import uuid

import pytest

from agents.devices.base import Collector, DeviceSample, Health
from agents.devices.simulated import SimulatedCollector, device_uuid
from scheduler.types import Vendor


class FakeClock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def make(vendor: Vendor = Vendor.NVIDIA, seed: int | None = 7, node: str = "n0", devices: int = 4,
         clock: FakeClock | None = None) -> SimulatedCollector:
    kind = "nvidia-a100-80g" if vendor is Vendor.NVIDIA else "ascend-910b"
    return SimulatedCollector(kind, vendor, devices, seed=seed, node=node, clock=clock or FakeClock())


def run_script(c: SimulatedCollector, clock: FakeClock) -> list[list[DeviceSample]]:
    out = []
    for step in range(6):
        if step == 2:
            c.set_busy({0: 11, 2: 12})
        if step == 4:
            c.set_busy({2: 12, 3: 13})
        clock.t += 5.0
        out.append(c.sample())
    return out


def test_same_seed_and_clock_give_identical_samples() -> None:
    """Two collectors with one seed, one clock sequence and one set_busy sequence agree exactly."""
    ca, cb = FakeClock(), FakeClock()
    assert run_script(make(clock=ca), ca) == run_script(make(clock=cb), cb)


def test_different_seeds_give_different_samples() -> None:
    """The seed matters: another seed gives other numbers."""
    ca, cb = FakeClock(), FakeClock()
    assert run_script(make(seed=1, clock=ca), ca) != run_script(make(seed=2, clock=cb), cb)


def test_is_a_collector() -> None:
    """The simulator fits the Collector protocol the exporter and heartbeat rely on."""
    c: Collector = make()
    assert c.vendor is Vendor.NVIDIA
    assert [d.index for d in c.inventory()] == [s.index for s in c.sample()] == [0, 1, 2, 3]


@pytest.mark.parametrize("vendor, busy_power", [(Vendor.NVIDIA, (300, 400)), (Vendor.ASCEND, (250, 310))])
def test_busy_and_idle_ranges(vendor: Vendor, busy_power: tuple[float, float]) -> None:
    """Busy devices: 85-100 % util, 60-90 % memory, near-TDP power, 60-80 C; idle: 0-2 %,
    about 0.5 GiB, 50-70 W, 30-40 C — over many samples."""
    clock = FakeClock()
    c = make(vendor, clock=clock)
    c.set_busy({0: 1, 1: 1, 2: None})  # 3 is left out: idle too
    total = c.inventory()[0].memory_total_mib
    for _ in range(300):
        clock.t += 1.0
        for s in c.sample():
            if s.index in (0, 1):
                assert 85 <= s.utilization_pct <= 100
                assert 0.6 * total <= s.memory_used_mib <= 0.9 * total
                assert busy_power[0] <= s.power_w <= busy_power[1]
                assert 60 <= s.temperature_c <= 80
            else:
                assert 0 <= s.utilization_pct <= 2
                assert 300 <= s.memory_used_mib <= 700
                assert 50 <= s.power_w <= 70
                assert 30 <= s.temperature_c <= 40
            assert s.health is Health.OK


def test_set_busy_replaces_the_allocation() -> None:
    """A device the new mapping leaves out (or maps to None) goes back to idle."""
    clock = FakeClock()
    c = make(clock=clock)
    c.set_busy({0: 5, 1: 5})
    c.set_busy({1: 5})
    assert c.busy() == {1: 5}
    s = c.sample()
    assert s[0].utilization_pct <= 2 < 85 <= s[1].utilization_pct


def test_set_busy_rejects_unknown_devices() -> None:
    """A device index the server does not have is a caller bug and raises."""
    with pytest.raises(ValueError):
        make(devices=2).set_busy({5: 1})


def test_energy_is_power_times_elapsed_time() -> None:
    """Energy grows by power x elapsed seconds x 1000 mJ per sample, and never falls,
    not even when the clock steps back."""
    clock = FakeClock()
    c = make(clock=clock)
    c.set_busy({0: 1})
    before = c.sample()
    clock.t += 10.0
    after = c.sample()
    for b, a in zip(before, after, strict=True):
        assert a.energy_mj - b.energy_mj == pytest.approx(a.power_w * 10.0 * 1000.0, abs=2)
    assert after[0].energy_mj > after[1].energy_mj  # the busy one drew more
    clock.t -= 100.0
    again = c.sample()
    assert all(x.energy_mj >= a.energy_mj for x, a in zip(again, after, strict=True))


def test_uuids_are_stable_per_node_and_index() -> None:
    """UUIDs depend only on (node, index): same across seeds and instances, distinct across
    nodes and indices; NVIDIA's look like NVML's `GPU-<uuid>`."""
    a = [d.uuid for d in make(seed=1, node="a100-0").inventory()]
    b = [d.uuid for d in make(seed=99, node="a100-0").inventory()]
    other = [d.uuid for d in make(node="a100-1").inventory()]
    assert a == b
    assert len(set(a)) == 4 and not set(a) & set(other)
    assert all(u.startswith("GPU-") and uuid.UUID(u[4:]) for u in a)
    npu = [d.uuid for d in make(Vendor.ASCEND, node="910b-0").inventory()]
    assert npu == [device_uuid(Vendor.ASCEND, "910b-0", i) for i in range(4)]
    assert npu == [d.uuid for d in make(Vendor.ASCEND, seed=3, node="910b-0").inventory()]


def test_injected_fault_shows_in_samples() -> None:
    """set_health makes a device unhealthy with its code (XID on NVIDIA, error code on Ascend)."""
    g = make()
    g.set_health(1, "Critical", code=79)
    s = g.sample()[1]
    assert (s.health, s.healthy, s.xid_last, s.error_code) == (Health.CRITICAL, False, 79, None)
    n = make(Vendor.ASCEND)
    n.set_health(0, Health.WARNING)
    s = n.sample()[0]
    assert (s.healthy, s.xid_last, s.error_code) == (True, None, 0)
