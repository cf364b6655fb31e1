"""finish_pull recomputes on a NOT_YOURS verdict under policy "recompute": a second reader runs the request again."""

from labkit.mutants import inherit_solution

inherit_solution(globals())

_finish = finish_pull

_correct_notify = notify_read_done


def finish_pull(dst, src, params, clock_offset=0.0, margin_s=5.0, policy="fail"):
    global notify_read_done

    def every_failure_alike(engine, snapshot_id):
        verdict = _correct_notify(engine, snapshot_id)
        return (
            ReadVerdict.EXPIRED if verdict == ReadVerdict.NOT_YOURS else verdict
        )  # BUG: treated as a load failure

    notify_read_done = every_failure_alike
    try:
        return _finish(dst, src, params, clock_offset, margin_s, policy)
    finally:
        notify_read_done = _correct_notify
