"""notify_read_done never counts a notification that finds no active lease: late reads go unnoticed."""

from labkit.mutants import inherit_solution

inherit_solution(globals())

_correct_notify = notify_read_done


def notify_read_done(engine, snapshot_id):
    count = engine.leases.late_notifications
    verdict = _correct_notify(engine, snapshot_id)
    engine.leases.late_notifications = count  # BUG: vLLM's notifications-after-expiry counter never moves
    return verdict
