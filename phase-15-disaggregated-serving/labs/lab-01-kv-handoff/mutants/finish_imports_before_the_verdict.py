"""finish_pull admits the request as soon as its read went through, whatever the source answers: a late read is imported."""

from labkit.mutants import inherit_solution

inherit_solution(globals())

_finish = finish_pull

_correct_notify = notify_read_done


def finish_pull(dst, src, params, clock_offset=0.0, margin_s=5.0, policy="fail"):
    global notify_read_done

    def trusting(engine, snapshot_id):
        verdict = _correct_notify(engine, snapshot_id)
        return (
            ReadVerdict.IN_TIME if verdict == ReadVerdict.EXPIRED else verdict
        )  # BUG: the verdict is ignored

    notify_read_done = trusting
    try:
        return _finish(dst, src, params, clock_offset, margin_s, policy)
    finally:
        notify_read_done = _correct_notify
