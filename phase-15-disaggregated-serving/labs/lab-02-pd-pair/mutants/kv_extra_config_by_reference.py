"""kv_connector_extra_config and the extra keys are put in by reference: changing the config changes the spec."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def kv_transfer_config(side):
    cfg = {
        "kv_connector": side.connector,
        "kv_role": side.kv_role,
        "kv_buffer_device": side.kv_buffer_device,
        "kv_load_failure_policy": side.kv_load_failure_policy,
    }
    if side.kv_connector_extra_config:
        cfg["kv_connector_extra_config"] = side.kv_connector_extra_config
    if side.kv_connector_module_path:
        cfg["kv_connector_module_path"] = side.kv_connector_module_path
    cfg.update(side.kv_transfer_extra)
    return cfg
