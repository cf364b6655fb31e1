"""kv_transfer_extra goes in first and the spec's core keys overwrite it: a raw key the operator wrote is silently dropped."""

import copy

from labkit.mutants import inherit_solution

inherit_solution(globals())


def kv_transfer_config(side):
    cfg = copy.deepcopy(side.kv_transfer_extra)
    cfg.update({
        "kv_connector": side.connector,
        "kv_role": side.kv_role,
        "kv_buffer_device": side.kv_buffer_device,
        "kv_load_failure_policy": side.kv_load_failure_policy,
    })  # fmt: skip
    if side.kv_connector_extra_config:
        cfg["kv_connector_extra_config"] = copy.deepcopy(side.kv_connector_extra_config)
    if side.kv_connector_module_path:
        cfg["kv_connector_module_path"] = side.kv_connector_module_path
    return cfg
