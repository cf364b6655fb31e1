"""ITL computed including the first token: the send->first-token wait is counted as an inter-token gap."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def request_timing(sent_at, arrivals):
    if len(arrivals) == 0:
        raise ValueError("empty stream: no token arrived, so TTFT and ITL are undefined")
    if arrivals[0] < sent_at:
        raise ValueError("first token before the request was sent")
    times = [sent_at, *arrivals]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    if any(g < 0 for g in gaps):
        raise ValueError("token arrival times must not go backwards")
    return RequestTiming(ttft_s=arrivals[0] - sent_at, itl_s=gaps)
