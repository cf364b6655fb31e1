"""The ITL mean is a mean of per-request means: long requests count as much as one-gap ones."""

from labkit.mutants import inherit_solution

inherit_solution(globals())

_solution_signature = signature


def signature(colocated, disaggregated):
    sig = _solution_signature(colocated, disaggregated)

    def mean_of_means(runs):
        means = [sum(r.itl_s) / len(r.itl_s) for r in runs if r.itl_s]
        return sum(means) / len(means)

    sig.itl_mean_before_s, sig.itl_mean_after_s = mean_of_means(colocated), mean_of_means(disaggregated)
    return sig
