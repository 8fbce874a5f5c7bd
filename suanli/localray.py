"""A real local Ray cluster with one Ray node per simulated server (for `suanli up` and tests).

Each server's Ray node advertises what suanli relies on in production too:
- its devices: `num_gpus` (NVIDIA) or the `NPU` resource (Ascend), plus one `dev-<i>`
  resource per device so Ray itself refuses a second job on a device;
- `accelerator_type:<type>` = 1 and the labels `suanli.io/node=<server>` and
  `suanli.io/accelerator-type=<type>`, which runners select on;
- its CPUs and memory.
The head node has no CPUs, so no job lands on it. This module and `scheduler/launcher.py`
are the only ones that import ray.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from scheduler.launcher import NODE_LABEL, device_resource
from suanli.cluster import ClusterSpec, ServerSpec

TYPE_LABEL = "suanli.io/accelerator-type"
OBJECT_STORE_BYTES = 80 * 1024 * 1024  # jobs move no data through Ray; keep /dev/shm small


def ray_node_args(server: ServerSpec) -> dict[str, Any]:
    resources: dict[str, float] = {device_resource(i): 1.0 for i in range(server.devices)}
    resources[f"accelerator_type:{server.accelerator_type}"] = 1.0
    args: dict[str, Any] = dict(
        num_cpus=server.cpus,
        memory=server.memory_mb * 1024 * 1024,
        object_store_memory=OBJECT_STORE_BYTES,
        labels={NODE_LABEL: server.name, TYPE_LABEL: server.accelerator_type},
    )
    if server.vendor.ray_resource == "GPU":
        args["num_gpus"] = server.devices
    else:
        resources["NPU"] = float(server.devices)
        args["num_gpus"] = 0
    args["resources"] = resources
    return args


@dataclass
class LocalRay:
    cluster: Any  # ray.cluster_utils.Cluster

    @property
    def address(self) -> str:
        return str(self.cluster.address)

    def shutdown(self) -> None:
        self.cluster.shutdown()


def start_local_ray(spec: ClusterSpec) -> LocalRay:
    import logging

    from ray.cluster_utils import Cluster

    # Ray tries to identify the NPU model through Huawei's `acl` module when a node declares
    # NPUs and logs a traceback when it is missing; simulated servers have no such module.
    logging.getLogger("ray._private.accelerators.npu").setLevel(logging.CRITICAL)

    cluster = Cluster(
        initialize_head=True,
        head_node_args=dict(num_cpus=0, num_gpus=0, include_dashboard=False, object_store_memory=OBJECT_STORE_BYTES),
    )
    try:
        for server in spec.servers:
            cluster.add_node(**ray_node_args(server))
        cluster.wait_for_nodes()
    except BaseException:
        cluster.shutdown()
        raise
    return LocalRay(cluster)
