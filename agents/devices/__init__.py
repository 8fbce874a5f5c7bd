"""Device collectors: one per backend (NVML, npu-smi, simulated), all fitting
`agents.devices.base.Collector`."""

from agents.devices.base import Collector, DeviceInfo, DeviceSample, Health, SupportsBusy

__all__ = ["Collector", "DeviceInfo", "DeviceSample", "Health", "SupportsBusy"]
