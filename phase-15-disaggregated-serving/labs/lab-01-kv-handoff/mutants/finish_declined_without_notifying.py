"""finish_pull does not notify the source when it declines the read: the source holds the blocks until the lease expires."""

from labkit.mutants import inherit_solution

inherit_solution(globals())

_finish = finish_pull

_correct_notify = notify_read_done


def finish_pull(dst, src, params, clock_offset=0.0, margin_s=5.0, policy="fail"):
    global notify_read_done
    declined = dst.clock() + clock_offset + margin_s >= params.expires_at
    if declined:

        def silent(engine, snapshot_id):  # BUG: "I did not read, so I have nothing to say"
            return ReadVerdict.EXPIRED

        notify_read_done = silent
    try:
        return _finish(dst, src, params, clock_offset, margin_s, policy)
    finally:
        notify_read_done = _correct_notify
